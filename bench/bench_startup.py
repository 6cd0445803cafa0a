"""Start-up against work of small per-slide jobs, on a cohort of small slides, with and without job grouping.

Builds a cohort of ``--slides`` demo slides (the workflow's own ``make_demo_slide``: 2048 px, offline)
in ``--workdir``, then tiles them (``tile_slide``) once per variant and prints, per variant, the jobs'
wall and CPU seconds against the work inside them. "Work" is what each job's script spends in its
``main()``; the rest of a job (interpreter, snakemake's script preamble, imports, teardown, and on a
cluster the ``snakemake`` started for the job on the node) is start-up. Each job's log carries the
split (``workflow_scripts/_common.py``, "job timing:").

Variants:
  local    ``--cores 2``: one Python process per job; ``group:`` is inactive in local execution.
  cluster  the cluster-generic executor with a submit command that runs the job script here
           (a stand-in for sbatch: each job is its own ``snakemake`` process, as on a SLURM node).
  grouped  the same, with ``profiles/slurm``'s ``groups:`` and ``group-components:``.

The cluster variants need ``snakemake-executor-plugin-cluster-generic`` importable (e.g.
``pip install --target DIR snakemake-executor-plugin-cluster-generic`` and ``PYTHONPATH=DIR``);
they are skipped with a reason when it is absent.

``--slides-per-job 1 10 25`` runs every variant with each ``tiling.slides_per_job``: above 1 a job
(rule ``tile_slides_<n>``) tiles that many slides in one process.

    .venv/bin/python bench/bench_startup.py --workdir /tmp/cohort [--slides 50] [--mpp 0.5] [--variants local cluster grouped] [--slides-per-job 1 10]

Wall times on a shared machine vary with its load; the CPU seconds are the comparable figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TIMING = re.compile(
    r"job timing: start-up (?P<sw>[\d.]+|unknown) s wall (?P<sc>[\d.]+) s CPU;"
    r" work (?P<ww>[\d.]+) s wall (?P<wc>[\d.]+) s CPU"
)


def parse_timing(line: str) -> tuple[float, float, float, float]:
    """(start-up wall, start-up CPU, work wall, work CPU) from a job log's "job timing:" line."""
    m = TIMING.search(line)
    if not m:
        raise ValueError(f"no job timing in: {line!r}")
    sw = float("nan") if m["sw"] == "unknown" else float(m["sw"])
    return sw, float(m["sc"]), float(m["ww"]), float(m["wc"])


def make_cohort(workdir: Path, slides: int, mpp: float | None, slides_per_job: int = 1) -> list[str]:
    """A slide sheet of ``slides`` demo slides (made by the workflow's make_demo_slide) and the demo config
    reading it (tiling at ``mpp`` when given, ``slides_per_job`` slides per tiling job), in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config"
    if not config.exists():
        config.symlink_to(REPO / "config")  # the demo config's relative paths resolve as in the repository
    ids = [f"demo_{i:02d}" for i in range(1, slides + 1)]
    rows = ["slide_id\tslide_path\tcase_id\tlabel"] + [f"{s}\tresources/demo/{s}.tiff\tcase_{s}\t" for s in ids]
    (workdir / "cohort.tsv").write_text("\n".join(rows) + "\n")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["slides"] = "cohort.tsv"
    if mpp is not None:
        cfg["tiling"]["mpp"] = mpp
    cfg["tiling"]["slides_per_job"] = slides_per_job
    (workdir / "cohort.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ids


def slurm_profile_groups() -> list[str]:
    """``profiles/slurm``'s grouping, as command-line options: the bench measures what the profile sets."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    return ["--groups", *profile["groups"], "--group-components", *profile["group-components"]]


def snakemake_cmd(workdir: Path, targets: list[str], variant: str, times_file: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,  # first: the options below take several values each
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "cohort.yaml"),  # absolute: snakemake resolves it against the calling directory
        "--quiet",
        "progress",
    ]
    if variant == "local":
        return cmd + ["--cores", "2"]
    # a stand-in for sbatch: run the job script in the background under /usr/bin/time, print a job id
    submit = (
        f'bash -c \'/usr/bin/time -a -o {shlex.quote(str(times_file))} -f "%e %U %S" bash "$0"'
        " >/dev/null 2>&1 & echo $!'"
    )
    cmd += ["--executor", "cluster-generic", "--cluster-generic-submit-cmd", submit, "--jobs", "2"]
    cmd += ["--latency-wait", "5", "--max-status-checks-per-second", "10"]
    if variant == "grouped":
        cmd += slurm_profile_groups()
    return cmd


def job_totals(workdir: Path, rule: str, variant: str, times_file: Path) -> tuple[int, float, float]:
    """(jobs or submissions, wall s, CPU s) of the jobs: benchmark files locally, /usr/bin/time per submission otherwise."""
    if variant == "local":
        rows = [
            f.read_text().splitlines()[1].split("\t") for f in (workdir / "results/benchmarks" / rule).glob("*.tsv")
        ]
        return len(rows), sum(float(r[0]) for r in rows), sum(float(r[9]) for r in rows)
    rows = [line.split() for line in times_file.read_text().splitlines() if re.fullmatch(r"[\d.]+ [\d.]+ [\d.]+", line)]
    return len(rows), sum(float(r[0]) for r in rows), sum(float(r[1]) + float(r[2]) for r in rows)


def work_totals(workdir: Path, rule: str) -> tuple[int, float, float, float, float]:
    """(jobs, start-up wall, start-up CPU, work wall, work CPU) summed over the rule's job logs."""
    parsed = []
    for log in (workdir / "results/logs" / rule).glob("*.log"):
        lines = [x for x in log.read_text().splitlines() if "job timing:" in x]
        if lines:
            parsed.append(parse_timing(lines[-1]))
    return (len(parsed), *(sum(p[i] for p in parsed) for i in range(4)))


def run_variant(workdir: Path, ids: list[str], variant: str, rule: str) -> dict:
    outputs = {"tile_slide": "results/slide_patches/{}.h5", "make_demo_slide": "resources/demo/{}.tiff"}[rule]
    for stale in [
        *(workdir / outputs.format(s) for s in ids),
        workdir / "results/benchmarks" / rule,
        workdir / "results/logs" / rule,
    ]:
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    if rule == "tile_slide":
        for s in ids:
            (workdir / f"results/slide_patches/{s}.thumbnail.png").unlink(missing_ok=True)
    times_file = workdir / f"times_{variant}_{rule}.txt"
    times_file.unlink(missing_ok=True)
    targets = [outputs.format(s) for s in ids]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run(snakemake_cmd(workdir, targets, variant, times_file), check=True, env=env)
    elapsed = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    main_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    submissions, job_wall, job_cpu = job_totals(workdir, rule, variant, times_file)
    jobs, su_wall, su_cpu, work_wall, work_cpu = work_totals(workdir, rule)
    return {
        "variant": variant,
        "rule": rule,
        "jobs": jobs,
        "submissions": submissions,
        "elapsed_s": round(elapsed, 1),
        # locally the jobs are children of this snakemake; on the stand-in cluster they are not
        "snakemake_cpu_s": round(main_cpu if variant != "local" else main_cpu - job_cpu, 1),
        "job_wall_s": round(job_wall, 1),
        "job_cpu_s": round(job_cpu, 1),
        "script_startup_cpu_s": round(su_cpu, 1),
        "work_wall_s": round(work_wall, 1),
        "work_cpu_s": round(work_cpu, 1),
        "startup_share_wall": round(1 - work_wall / job_wall, 3) if job_wall else None,
        "startup_share_cpu": round(1 - work_cpu / job_cpu, 3) if job_cpu else None,
        "load_average": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--slides", type=int, default=50)
    ap.add_argument("--mpp", type=float, help="tiling.mpp (the demo's 1.0 when not given; 0.5 reads 4x the patches)")
    ap.add_argument("--variants", nargs="+", default=["local", "cluster", "grouped"])
    ap.add_argument(
        "--slides-per-job",
        type=int,
        nargs="+",
        default=[1],
        help="tiling.slides_per_job values to run each variant with",
    )
    ap.add_argument("--rules", nargs="+", default=["tile_slide"], choices=["make_demo_slide", "tile_slide"])
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    workdir = args.workdir.resolve()
    ids = make_cohort(workdir, args.slides, args.mpp)
    has_generic = importlib.util.find_spec("snakemake_executor_plugin_cluster_generic") is not None
    # the slides themselves, once, locally (when make_demo_slide is not one of the measured rules)
    if "make_demo_slide" not in args.rules:
        subprocess.run(
            snakemake_cmd(workdir, [f"resources/demo/{s}.tiff" for s in ids], "local", workdir / "unused"),
            check=True,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
    rows = []
    for rule in args.rules:
        for per_job in args.slides_per_job if rule == "tile_slide" else [1]:
            make_cohort(workdir, args.slides, args.mpp, per_job)
            for variant in args.variants:
                if variant != "local" and not has_generic:
                    print(
                        f"skipped {variant}: snakemake-executor-plugin-cluster-generic is not importable",
                        file=sys.stderr,
                    )
                    continue
                rows.append({**run_variant(workdir, ids, variant, rule), "slides_per_job": per_job})
                print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'rule':<16} {'variant':<8} {'slides/job':>10} {'jobs':>4} {'subm.':>5} {'job CPU':>8} {'work CPU':>8} "
        f"{'start-up share (CPU)':>21} {'(wall)':>7}"
    )
    for r in rows:
        print(
            f"{r['rule']:<16} {r['variant']:<8} {r['slides_per_job']:>10} {r['jobs']:>4} {r['submissions']:>5} {r['job_cpu_s']:>8} "
            f"{r['work_cpu_s']:>8} {r['startup_share_cpu']:>21.1%} {r['startup_share_wall']:>7.1%}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
