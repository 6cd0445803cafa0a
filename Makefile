# Two commands for a fresh clone:  `make demo`  and  `make test`.
# Both create .venv (pinned versions from pyproject.toml + constraints.txt) when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# pip extras of the dev install; slurm is needed by tests/workflow/test_slurm.py (drop it on a workstation: EXTRAS=dev)
EXTRAS ?= dev,slurm
BIN := $(VENV)/bin
STAMP := $(VENV)/.histosynth-installed

.PHONY: demo test test-fast test-presets lint format venv clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $@

# The whole workflow on config/config.yaml, offline (no model hub, no ../shared data).
# One thread per job: the demo's models are tiny, so a second torch thread makes a training + sampling
# job 1.26x faster while two one-thread jobs side by side do 2.24x the work (bench/bench_threads.py);
# the rules' `threads: 4` are for real models on a GPU node.
JOB_THREADS ?= 1
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores $(CORES) --max-threads $(JOB_THREADS) --printshellcmds --show-failed-logs
	@echo "demo finished. The report: $(abspath results/html_report/index.html)"
	@echo "open it in a browser, e.g.  xdg-open results/html_report/index.html  (one self-contained file: copy it anywhere)"

# Every tier (tests/README.md), after formatting and lint checks; the three paper presets' whole
# DAGs on stand-in data (tens of minutes on 2 cores) run with `make test-presets`.
test: lint
	HF_HUB_OFFLINE=1 PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -m "not presets"

test-presets: $(STAMP)
	HF_HUB_OFFLINE=1 PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -m presets

# The unit tier only: no snakemake run, no diffusion training, no SLURM, no ../shared data.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -m "$(FAST)"
FAST := not slow and not workflow and not slurm and not shared_data

# Checks only; `make format` rewrites the files.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile rules/
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile rules/

clean-results:
	rm -rf results resources/demo .snakemake
