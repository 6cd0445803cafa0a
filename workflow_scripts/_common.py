"""Shared glue for workflow scripts: make the package importable, log to the rule's log file,
and turn input errors into one clear line instead of a traceback."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # works without `pip install`, e.g. in a conda env
    sys.path.insert(0, str(REPO_ROOT))

from histosynth.errors import InputError  # noqa: E402


def run(snakemake, main) -> None:
    """Call ``main(snakemake)`` with stderr and logging going to ``snakemake.log[0]``."""
    console = sys.stderr
    log_file = open(snakemake.log[0], "w", buffering=1) if snakemake.log else console
    sys.stderr = log_file  # progress bars and warnings end up in the log too
    logging.basicConfig(stream=log_file, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger(f"histosynth.rule.{snakemake.rule}")
    # BLAS / torch threads follow the rule's `threads`, so parallel jobs do not oversubscribe cores
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(max(1, snakemake.threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, snakemake.threads))
    try:
        main(snakemake)
    except InputError as e:
        log.error("%s", e)
        print(f"histosynth: rule {snakemake.rule}: {e}", file=console)
        sys.exit(1)
    except Exception:
        log.error("unexpected failure:\n%s", traceback.format_exc())
        raise
    finally:
        sys.stderr = console
        if log_file is not console:
            log_file.close()
