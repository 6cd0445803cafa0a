"""A real `snakemake` killed mid-job, then recovered with exactly the README's "Faults" commands."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from histosynth.demo import make_demo_slide
from histosynth.patchfile import check_patch_file

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 300  # generous: nothing here asserts how long anything takes
TARGET = "results/slide_patches/s1.h5"


def readme_recovery_commands() -> list[list[str]]:
    """The shell block under "After a kill" in the README's Faults section."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Faults\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README has no '## Faults' section"
    block = re.search(r"\*\*After a kill\*\*.*?```bash\n(.*?)```", section.group(1), re.S)
    assert block, "README's Faults section has no command block after 'After a kill'"
    cmds = [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]
    assert (
        [c[0] for c in cmds] == ["snakemake", "snakemake"] and "--unlock" in cmds[0] and "--rerun-incomplete" in cmds[1]
    )
    return cmds


@pytest.fixture()
def workdir(tmp_path):
    # ~16k patches of 16 px: the job runs long enough to be killed while it writes
    make_demo_slide(tmp_path / "s1.tiff", variant=1, size=2048)
    (tmp_path / "slides.tsv").write_text("slide_id\tslide_path\tcase_id\tlabel\ns1\ts1.tiff\tc1\t\n")
    cfg = {
        "slides": "slides.tsv",
        "tiling": {"patch_size": 16, "mpp": 0.5, "min_tissue_fraction": 0.0, "tissue": {"max_saturation": 12}},
    }
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def snakemake_cmd(wd: Path, args: list[str]) -> list[str]:
    """``snakemake <args>`` as a user would type it in ``wd``, with the target before --configfile."""
    args = list(args)
    at = args.index("--configfile") if "--configfile" in args else len(args)
    if "--unlock" not in args:
        args.insert(at, TARGET)
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args]


def start_and_wait_for_partial(wd: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        snakemake_cmd(wd, ["--cores", "2", "--configfile", "my.yaml"]),
        cwd=wd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    tiles = wd / "results" / "slide_patches"
    deadline = time.monotonic() + WAIT_S
    while not list(tiles.glob(".s1.h5.*.partial")):
        assert proc.poll() is None, "snakemake ended before its job wrote anything"
        assert time.monotonic() < deadline, "the tiling job never started writing"
        time.sleep(0.05)
    return proc, list(tiles.glob(".s1.h5.*.partial"))[0]


def recover_with_readme_commands(wd: Path) -> None:
    for cmd in readme_recovery_commands():
        res = subprocess.run(snakemake_cmd(wd, cmd[1:]), cwd=wd, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{shlex.join(cmd)} failed:\n{res.stderr[-3000:]}"
    assert check_patch_file(wd / TARGET) == 128 * 128
    assert not list(wd.rglob("*.partial"))


def test_killed_snakemake_stops_its_job_and_readme_commands_recover(workdir):
    proc, partial = start_and_wait_for_partial(workdir)
    job_pid = int(partial.name.split(".")[-2])
    try:
        proc.send_signal(signal.SIGKILL)  # only snakemake: its job is left orphaned
        proc.wait(timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while partial.exists() or _running(job_pid):
            assert time.monotonic() < deadline, "the orphaned job kept running after snakemake was killed"
            time.sleep(0.1)
    finally:
        _kill_group(proc)
    assert not (workdir / TARGET).exists()
    log = (workdir / "results/logs/tile_slide/s1.log").read_text()
    assert "the snakemake that started this job has stopped" in log and "temporary files removed" in log
    recover_with_readme_commands(workdir)


def test_partial_left_by_sigkill_is_removed_by_the_rerun(workdir):
    proc, partial = start_and_wait_for_partial(workdir)
    _kill_group(proc)  # snakemake and its job at once, as an OOM killer or a power cut would
    proc.wait(timeout=WAIT_S)
    assert partial.exists()  # nothing could clean up
    recover_with_readme_commands(workdir)
    assert not partial.exists()


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
