"""All benchmarks in one table (and one JSON): each figure a ratio against a baseline measured in
the same run where there is one.

    .venv/bin/python bench/run_all.py [--e2e]

Rows: tiling (the whole tile_slide vs a bare read_region loop, the decode limit), embedding images/s, LoRA steps/s
with vs without the latent cache, sampling images/s per scheduler, jobs per hour with 1 or 2 threads per
job (bench_threads.py), the Fréchet-distance + KID
time on embedding features, and with --e2e the whole demo's wall time from a fresh working
directory and the time of the no-op rerun that follows it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))


def run_json(script: str, *args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run(
            [sys.executable, str(BENCH / script), "--json", str(out), *args], check=True, capture_output=True, text=True
        )
        return json.loads(out.read_text())


def embedding_rate() -> float:
    from histosynth.embed import embed_patches
    from histosynth.models.embedder import prepare_embedder
    from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        n = 512
        with PatchWriter(d / "p.h5", PatchFileSpec(64, ["a"], {})) as w:
            w.append(
                PatchBatch(
                    np.random.default_rng(0).integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
                    np.zeros((n, 2)),
                    np.zeros(n),
                    ["s"] * n,
                    ["c"] * n,
                    np.ones(n),
                )
            )
        prepare_embedder("tiny", d / "e", image_size=64)
        t = time.perf_counter()
        embed_patches(d / "p.h5", d / "e", d / "o.h5", "cls", 64, 2, progress=False)
        return n / (time.perf_counter() - t)


def fd_time() -> tuple[float, float]:
    from histosynth.evaluation.metrics import frechet, kid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2048, 768)), rng.normal(size=(2048, 768))
    t = time.perf_counter()
    frechet(a, b)
    t_fd = time.perf_counter() - t
    t = time.perf_counter()
    kid(a, b)
    return t_fd, time.perf_counter() - t


def e2e() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        shutil.copytree(REPO / "config", wd / "config")
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(wd),
            "--cores",
            str(os.cpu_count() or 2),
            "--max-threads",  # as `make demo` (Makefile: JOB_THREADS)
            "1",
        ]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        full = time.perf_counter() - t
        t = time.perf_counter()
        r = subprocess.run(cmd, check=True, capture_output=True, text=True)
        noop = time.perf_counter() - t
        assert "Nothing to be done" in r.stdout + r.stderr
        return full, noop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--e2e", action="store_true", help="also time the whole demo and a no-op rerun (several minutes)")
    ap.add_argument("--json", default="results/bench/all.json")
    a = ap.parse_args(argv)
    rows = []
    tiling = run_json("bench_tiling.py")
    base = tiling["patches_per_s"]
    names = list(base)
    for k in names:
        rows.append(("tiling", k, base[k], "patches/s", base[k] / base[names[0]]))
    rows.append(("embedding", "tiny ViT, 64 px, 2 workers", embedding_rate(), "images/s", None))
    diff = run_json("bench_diffusion.py")
    nc, lc = diff["lora_steps_per_s"]["no_cache"], diff["lora_steps_per_s"]["latent_cache"]
    rows += [("LoRA", "no cache", nc, "steps/s", 1.0), ("LoRA", "latent cache", lc, "steps/s", lc / nc)]
    s = diff["sampling_images_per_s"]
    rows += [("sampling", name, r, "images/s", r / s["ddim"]) for name, r in s.items()]
    threads = run_json("bench_threads.py")
    one = threads["1 job x 1 thread"]["jobs_per_hour"]
    rows += [
        ("threads", f"{name}: training + sampling jobs", threads[name]["jobs_per_hour"], "jobs/h", r / one)
        for name, r in (
            (n, threads[n]["jobs_per_hour"]) for n in ("1 job x 1 thread", "1 job x 2 threads", "2 jobs x 1 thread")
        )
    ]
    t_fd, t_kid = fd_time()
    rows += [
        ("metrics", "Fréchet distance, 2048 x 768 features", t_fd, "s", None),
        ("metrics", "KID, same features", t_kid, "s", None),
    ]
    if a.e2e:
        full, noop = e2e()
        rows += [
            ("workflow", "demo from scratch (make demo)", full, "s", None),
            ("workflow", "no-op rerun", noop, "s", None),
        ]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {diff['device']}"
    print(f"histosynth benchmarks on {machine}")
    print(f"{'stage':10s} {'what':44s} {'value':>10s} {'unit':>9s} {'ratio':>7s}")
    for stage, what, value, unit, ratio in rows:
        print(f"{stage:10s} {what[:44]:44s} {value:10.2f} {unit:>9s} {'' if ratio is None else f'{ratio:6.2f}x':>7s}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(
        json.dumps(
            {"machine": machine, "rows": [dict(zip(("stage", "what", "value", "unit", "ratio"), r)) for r in rows]},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
