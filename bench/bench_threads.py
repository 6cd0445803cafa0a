"""Threads per job on a small machine: one job with 1 or 2 torch threads vs two 1-thread jobs side by side.

The workflow's GPU rules book 4 threads (``threads:`` in rules/*.smk), which snakemake caps at
``--cores``; on a 2-core machine every training, sampling and classifier job then runs alone with 2
threads. This bench asks whether that second thread pays: it prepares the demo's data once (a demo
slide, tiled; the tiny base; label prompts; the latent cache), then runs the same work in fresh
processes, as snakemake jobs are run:

  1 job x 1 thread     the baseline
  1 job x 2 threads    what ``--cores 2`` gives one job today
  2 jobs x 1 thread    what ``--max-threads 1`` lets snakemake run side by side (``make demo``)

Each job trains the tiny base's LoRA for ``--steps`` steps (the train_diffusion recipe: latent cache,
min-SNR, batch 8) and samples ``--images`` images (DDIM, 20 steps, CFG 7.5, as sample_synthetic).
The table gives work per second of wall time over all jobs of a variant, as a ratio to the baseline.

    .venv/bin/python bench/bench_threads.py [--steps 60] [--images 16] [--json results/bench/threads.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {"1 job x 1 thread": (1, 1), "1 job x 2 threads": (1, 2), "2 jobs x 1 thread": (2, 1)}


def prepare(d: Path, size: int) -> None:
    """The demo's data in ``d``: one tiled demo slide, the tiny base, label prompts, the latent cache."""
    from bench_diffusion import demo_tiling, prepare_training_data  # this folder is on sys.path

    from histosynth.config import default_config

    prepare_training_data(d, default_config(tiling=demo_tiling(size)), "tiny", size, "cpu")


def worker(d: Path, job: int, steps: int, images: int, size: int, out: Path) -> None:
    """One job: LoRA training then sampling, timed separately; torch's threads come from OMP_NUM_THREADS."""
    import torch

    from histosynth.config import default_config
    from histosynth.diffusion.sample import generate, load_pipeline
    from histosynth.diffusion.train import fine_tune

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # as workflow_scripts/_common.py does
    cfg = default_config(
        train={"max_steps": steps, "batch_size": 8, "checkpoint_every": 10**6, "validation_every": 10**6}
    )
    w = d / f"job{job}"
    w.mkdir()
    t0 = time.perf_counter()
    fine_tune(
        d / "lat.h5", d / "base", w / "lora", w / "l.tsv", w / "l.png", w / "v", w / "c", cfg["train"], progress=False
    )
    train_s = time.perf_counter() - t0
    pipe = load_pipeline(d / "base", w / "lora", "ddim", "cpu")
    scfg = default_config(sampling={"steps": 20})["sampling"]
    t0 = time.perf_counter()
    generate(pipe, ["Histology image of DAB-positive tissue"] * images, list(range(images)), scfg, size)
    sample_s = time.perf_counter() - t0
    out.write_text(json.dumps({"train_s": train_s, "sample_s": sample_s}))


def run_variant(d: Path, jobs: int, threads: int, a) -> dict:
    """Start ``jobs`` worker processes at once with ``threads`` threads each; wall time of the whole variant."""
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    outs, procs = [], []
    t0 = time.perf_counter()
    for j in range(jobs):
        out = d / f"result{j}.json"
        outs.append(out)
        cmd = [sys.executable, __file__, "--worker", str(d), "--job", str(j), "--steps", str(a.steps)]
        cmd += ["--images", str(a.images), "--size", str(a.size), "--out", str(out)]
        procs.append(subprocess.Popen(cmd, env=env))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a worker failed (exit {p.returncode})")
    wall = time.perf_counter() - t0
    res = [json.loads(o.read_text()) for o in outs]
    for j in range(jobs):  # the next variant starts from the same empty job folders
        shutil.rmtree(d / f"job{j}")
        outs[j].unlink()
    return {
        "jobs": jobs,
        "threads": threads,
        "wall_s": wall,
        # work per second over all jobs: steps of training, images of sampling
        "train_steps_per_s": jobs * a.steps / max(r["train_s"] for r in res),
        "sample_images_per_s": jobs * a.images / max(r["sample_s"] for r in res),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--json", default="results/bench/threads.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--job", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(Path(a.worker), a.job, a.steps, a.images, a.size, Path(a.out))
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        prepare(d, a.size)
        rows = {name: run_variant(d, jobs, threads, a) for name, (jobs, threads) in VARIANTS.items()}
    base = rows["1 job x 1 thread"]
    print(f"tiny base, {a.size} px, batch 8: {a.steps} LoRA steps + {a.images} images (DDIM 20 steps) per job")
    print(
        f"{'variant':22s} {'wall s':>7s} {'jobs/h':>7s} {'ratio':>6s} {'train steps/s':>14s} {'ratio':>6s} {'images/s':>9s} {'ratio':>6s}"
    )
    for name, r in rows.items():
        r["jobs_per_hour"] = 3600 * r["jobs"] / r["wall_s"]  # whole jobs, process start-up included
        jr, tr, sr = r["jobs_per_hour"], r["train_steps_per_s"], r["sample_images_per_s"]
        print(
            f"{name:22s} {r['wall_s']:7.1f} {jr:7.1f} {jr / (3600 / base['wall_s']):5.2f}x "
            f"{tr:14.2f} {tr / base['train_steps_per_s']:5.2f}x {sr:9.2f} {sr / base['sample_images_per_s']:5.2f}x"
        )
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(
        json.dumps({"cpus": os.cpu_count(), "steps": a.steps, "images": a.images, **rows}, indent=2)
    )


if __name__ == "__main__":
    main()
