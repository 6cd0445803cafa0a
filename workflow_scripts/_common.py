"""Shared glue for workflow scripts: make the package importable, log to the rule's log file,
turn every failure into one clear line (the traceback goes to the rule's log), remove temporary
files on SIGTERM, and stop when the snakemake that started the job is gone."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # works without `pip install`, e.g. in a conda env
    sys.path.insert(0, str(REPO_ROOT))

from histosynth.atomic import install_signal_cleanup, watch_parents  # noqa: E402
from histosynth.errors import InputError  # noqa: E402
from histosynth.progress import set_console  # noqa: E402

# at import, before the script's heavy imports (torch, diffusers: seconds), so that a snakemake
# killed during them is noticed too
install_signal_cleanup()
watch_parents()


def run(snakemake, main) -> None:
    """Call ``main(snakemake)`` with stderr and logging going to ``snakemake.log[0]``."""
    console = sys.stderr
    log_file = open(snakemake.log[0], "w", buffering=1) if snakemake.log else console
    sys.stderr = log_file  # progress bars and warnings end up in the log too
    if log_file is not console:
        set_console(console)  # ...and long steps print a one-line summary on the console now and then
    logging.basicConfig(
        stream=log_file, level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log = logging.getLogger(f"histosynth.rule.{snakemake.rule}")
    # BLAS / torch threads follow the rule's `threads`, so parallel jobs do not oversubscribe cores
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(max(1, snakemake.threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, snakemake.threads))
    where = f"histosynth: rule {snakemake.rule}{_wildcards(snakemake)}"
    stopped_by_signal = None
    started = _since_process_start(), time.process_time(), time.monotonic()  # what the interpreter and the imports cost
    try:
        main(snakemake)
        log.info("%s", _timing_line(started))
    except InputError as e:
        log.error("%s", e)
        _report_failure(f"{where}: {e}", snakemake, console)
        sys.exit(1)
    except Exception as e:
        # a bug or an unforeseen fault: the traceback goes to the log, the console gets one line
        log.error("unexpected failure:\n%s", traceback.format_exc())
        _report_failure(f"{where}: unexpected {type(e).__name__}: {_first_line(e)}", snakemake, console, "traceback")
        if log_file is console:
            traceback.print_exc(file=console)
        sys.exit(1)
    except SystemExit as e:
        if e.code not in (0, None, 1):
            log.error("stopped (exit status %s); temporary files removed", e.code)
        if not (isinstance(e.code, int) and e.code > 128):
            raise
        stopped_by_signal = e.code  # 128 + signal number, from histosynth.atomic's handler
    finally:
        sys.stderr = console
        if log_file is not console:
            log_file.close()
    if stopped_by_signal is not None:
        # the stack has unwound (files closed, temporaries removed): skip the interpreter's teardown of
        # torch, diffusers & co., seconds of CPU that kept a cancelled job alive for minutes on a busy machine
        sys.stdout.flush()
        console.flush()
        os._exit(stopped_by_signal)


TIMING_PREFIX = "job timing:"  # read back by bench/bench_startup.py


def _since_process_start() -> float | None:
    """Wall seconds since this process was created (None where psutil cannot tell)."""
    try:
        import psutil  # a snakemake dependency; only its create_time is needed

        return time.time() - psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - timing is informational: never fail a job over it
        return None


def _timing_line(started) -> str:
    """One log line: the job's start-up (interpreter, snakemake's preamble, imports) against its work."""
    startup_wall, startup_cpu, t0 = started
    work_wall = time.monotonic() - t0
    work_cpu = time.process_time() - startup_cpu
    wall = "unknown" if startup_wall is None else f"{startup_wall:.3f}"
    return (
        f"{TIMING_PREFIX} start-up {wall} s wall {startup_cpu:.3f} s CPU;"
        f" work {work_wall:.3f} s wall {work_cpu:.3f} s CPU"
    )


FAILURES = Path(".snakemake") / "histosynth-failures.txt"  # read back by the Snakefile's onerror


def _report_failure(line: str, snakemake, console, what: str = "details") -> None:
    """Our one line on the console now, and kept for the Snakefile's ``onerror`` to repeat last,
    after snakemake's own error block, together with the log to open."""
    if snakemake.log:
        line += f" ({what} in {snakemake.log[0]})"
    print(line, file=console)
    try:
        with open(FAILURES, "a") as f:
            f.write(line + "\n")
    except OSError:  # no .snakemake folder here (a script run by hand): the console line is enough
        pass


def _wildcards(snakemake) -> str:
    wc = dict(snakemake.wildcards.items())
    return f" ({', '.join(f'{k}={v}' for k, v in wc.items())})" if wc else ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines() or [""])[0][:500]
