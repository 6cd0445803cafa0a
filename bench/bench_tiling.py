"""Tiling throughput against the decode limit: the whole ``tile_slide`` vs a bare OpenSlide loop.

The baseline is the decode limit: one thread calling ``read_region`` at the level ``tile_slide``
reads, over exactly the patches ``tile_slide`` kept, and converting each to RGB - no tissue test,
no labels, no writing. ``tile_slide`` rows are the complete job (thumbnail and tissue mask, grid,
reading, labels, HDF5 writing, QC preview), with labels from the slide sheet and with DAB labels,
at several thread counts. Wall-clock figures are ratios against the baseline measured in the same run
(best of ``--repeats`` rounds, each round running the baseline and every variant in turn). CPU seconds (all threads) per patch are printed too: on a
shared machine they show the work done, whatever the load. Output sizes are printed next to the
slide's own size.

    .venv/bin/python bench/bench_tiling.py [--slide PATH] [--mpp 1.0] [--patch-size 256] [--threads 1 2]

Without --slide it builds (once, cached under --cache) a 16384 x 16384 px, 0.5 um/px JPEG pyramid
from the project's demo slide (a 4096 px demo image repeated 4 x 4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import openslide

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from histosynth.config import default_config  # noqa: E402
from histosynth.demo import DEMO_MPP, demo_slide_image, write_pyramidal_tiff  # noqa: E402
from histosynth.tiling import TilingParams, tile_slide  # noqa: E402


def big_demo_slide(path: Path, size: int = 16384) -> Path:
    if not path.exists():
        tile = demo_slide_image(0, 4096)
        reps = -(-size // 4096)
        write_pyramidal_tiff(path, np.tile(tile, (reps, reps, 1))[:size, :size], DEMO_MPP, n_levels=5)
    return path


def bare_loop(path, coords, level, read_size) -> int:
    """The decode limit: read_region at the level tile_slide reads, nothing else."""
    s = openslide.OpenSlide(str(path))
    for x, y in coords:
        np.asarray(s.read_region((int(x), int(y)), level, (read_size, read_size)).convert("RGB"))
    s.close()
    return len(coords)


def timed(fn):
    """(wall seconds, CPU seconds of this process over all its threads)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "histosynth-bench-16k.tiff"))
    ap.add_argument("--mpp", type=float, default=1.0)
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--labels", nargs="+", default=["sample", "dab"], choices=["sample", "dab"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="extra tiling config, e.g. --set min_tissue_fraction=0.25 (repeatable)",
    )
    ap.add_argument("--json", default="results/bench/tiling.json")
    a = ap.parse_args(argv)
    slide_path = Path(a.slide) if a.slide else big_demo_slide(Path(a.cache))
    overrides = {"patch_size": a.patch_size, "mpp": a.mpp}
    for kv in a.set:
        k, v = kv.split("=", 1)
        overrides[k] = json.loads(v)
    jobs, sizes = {}, {}
    tmpdir = tempfile.TemporaryDirectory()
    tmp = Path(tmpdir.name)
    for method in a.labels:
        cfg = default_config(tiling={**overrides, "labels": {"method": method}})["tiling"]
        for threads in a.threads:
            out = tmp / f"{method}{threads}.h5"

            def job(cfg=cfg, out=out, threads=threads, method=method):
                return tile_slide(
                    slide_path,
                    "bench",
                    "bench",
                    out,
                    tmp / "t.png",
                    TilingParams.from_config(cfg),
                    sample_label="tumour" if method == "sample" else None,
                    threads=threads,
                    progress=False,
                )

            jobs[f"tile_slide, {method} labels, {threads} thread(s)"] = (job, out, method)
    first = next(iter(jobs.values()))
    res = first[0]()  # the kept patches: the baseline reads exactly these
    with h5py.File(first[1], "r") as h:
        coords = h["coords"][:]
    plan, n = res.plan, len(coords)
    base_name = "bare read_region loop (decode limit, 1 thread)"
    # rounds interleave the baseline with every variant, so load from other processes hits all alike
    best = {base_name: float("inf"), **{k: float("inf") for k in jobs}}
    cpu = dict.fromkeys(best, float("inf"))
    for _ in range(a.repeats):
        for name, fn in (
            (base_name, lambda: bare_loop(slide_path, coords, plan.level, plan.read_size)),
            *((k, v[0]) for k, v in jobs.items()),
        ):
            wall, c = timed(fn)
            best[name], cpu[name] = min(best[name], wall), min(cpu[name], c)
        for name, (job, out, method) in jobs.items():
            sizes[method] = out.stat().st_size
    tmpdir.cleanup()
    rates = {k: n / v for k, v in best.items()}
    base_rate = rates[base_name]
    s = openslide.OpenSlide(str(slide_path))
    print(
        f"slide {slide_path.name}: {s.dimensions[0]}x{s.dimensions[1]} px, {slide_path.stat().st_size / 2**20:.0f} MiB; "
        f"{n} patches of {a.patch_size} px at {a.mpp} um/px read at level {plan.level} ({plan.read_size} px); "
        f"{os.cpu_count()} CPUs; overrides {overrides}"
    )
    print(f"{'method':52s} {'patches/s':>10s} {'of limit':>9s} {'CPU ms/patch':>13s} {'CPU vs limit':>13s}")
    for name, rate in rates.items():
        print(
            f"{name:52s} {rate:10.1f} {100 * rate / base_rate:8.0f}% {1000 * cpu[name] / n:13.1f} "
            f"{cpu[name] / cpu[base_name]:12.2f}x"
        )
    for method, size in sizes.items():
        print(f"patch file ({method}): {size / 2**20:.1f} MiB, {size / n / 1024:.1f} KiB/patch")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(
        json.dumps(
            {
                "slide": str(slide_path),
                "patches": n,
                "patch_size": a.patch_size,
                "mpp": a.mpp,
                "level": plan.level,
                "cpus": os.cpu_count(),
                "overrides": overrides,
                "patches_per_s": rates,
                "cpu_seconds": cpu,
                "fraction_of_decode_limit": {k: v / base_rate for k, v in rates.items()},
                "patch_file_bytes": sizes,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
