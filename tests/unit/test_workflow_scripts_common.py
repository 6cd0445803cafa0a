"""``workflow_scripts/_common.py``: a failed job's one line on the console and in the failures file the
Snakefile's ``onerror`` repeats."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 120  # generous: the machine may be busy; a passing test never waits this long


COMMON = textwrap.dedent("""
    import sys
    from types import SimpleNamespace
    sys.path.insert(0, {scripts!r})
    from _common import run
    from histosynth.errors import InputError

    def main(sm):
        if {kind!r} == "input":
            raise InputError("slide 's1': file not found: x.svs")
        raise RuntimeError("first line\\nsecond line")

    wc = SimpleNamespace(items=lambda: [("slide", "s1")])
    run(SimpleNamespace(log=[{log!r}], rule="tile_slide", threads=1, wildcards=wc), main)
""")


@pytest.mark.parametrize(
    "kind, line",
    [
        ("input", "histosynth: rule tile_slide (slide=s1): slide 's1': file not found: x.svs (details in {log})"),
        ("bug", "histosynth: rule tile_slide (slide=s1): unexpected RuntimeError: first line (traceback in {log})"),
    ],
)
def test_a_failed_job_prints_one_line(tmp_path, kind, line):
    """One line on the console, and the same line kept for the Snakefile's onerror to repeat last."""
    log = tmp_path / "job.log"
    (tmp_path / ".snakemake").mkdir()
    code = COMMON.format(scripts=str(REPO / "workflow_scripts"), kind=kind, log=str(log))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip() == line.format(log=log)
    assert (tmp_path / ".snakemake" / "histosynth-failures.txt").read_text() == line.format(log=log) + "\n"
    if kind == "bug":
        assert "Traceback (most recent call last)" in log.read_text()


def test_a_finished_job_logs_its_start_up_against_its_work(tmp_path):
    """bench/bench_startup.py reads this line: the start-up (interpreter, imports) and the work, wall and CPU."""
    log = tmp_path / "job.log"
    code = COMMON.replace("    if {kind!r}", "    return\n    if {kind!r}").format(
        scripts=str(REPO / "workflow_scripts"), kind="none", log=str(log)
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    line = [x for x in log.read_text().splitlines() if "job timing:" in x]
    assert len(line) == 1
    sys.path.insert(0, str(REPO / "bench"))
    from bench_startup import parse_timing

    startup_wall, startup_cpu, work_wall, work_cpu = parse_timing(line[0])
    assert startup_wall > 0 and startup_cpu > 0 and work_wall >= 0 and work_cpu >= 0
