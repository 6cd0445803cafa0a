"""Tiling throughput: tile_slide's reader vs a naive single-threaded read_region loop.

Both read the same patch coordinates from the same slide and produce the same output size.
The naive loop reads level 0 at full size and resizes each patch (what a script without MPP-aware
level choice does); ours reads from the best pyramid level with a thread pool. Printed as ratios
against the naive loop, measured in the same run.

    .venv/bin/python bench/bench_tiling.py [--slide PATH] [--mpp 1.0] [--patch-size 128] [--threads 2]

Without --slide it builds a 4096x4096 demo pyramid (0.5 um/px, 4 levels) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from histosynth.config import default_config  # noqa: E402
from histosynth.demo import make_demo_slide  # noqa: E402
from histosynth.tiling import TilingParams  # noqa: E402
from histosynth.wsi import PatchReader, grid_coords, plan_read, slide_mpp  # noqa: E402


def naive(path, coords, footprint, size):
    s = openslide.OpenSlide(str(path))
    out = []
    for x, y in coords:
        im = s.read_region((int(x), int(y)), 0, (footprint, footprint)).convert("RGB")
        out.append(np.asarray(im.resize((size, size), Image.Resampling.LANCZOS)))
    return len(out)


def ours(path, plan, coords, size, threads, batch):
    reader = PatchReader(path, "bench", plan, size, threads)
    return sum(len(b) for _, b in reader.iter_batches(coords, batch))


def timed(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide")
    ap.add_argument("--mpp", type=float, default=1.0)
    ap.add_argument("--patch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--max-patches", type=int, default=200)
    ap.add_argument("--json", default="results/bench/tiling.json")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        slide_path = Path(a.slide) if a.slide else make_demo_slide(Path(tmp) / "bench.tiff", 0, size=4096)
        s = openslide.OpenSlide(str(slide_path))
        base, _ = slide_mpp(s, "bench", None)
        tp = TilingParams.from_config(default_config(tiling={"patch_size": a.patch_size, "mpp": a.mpp})["tiling"])
        plan = plan_read(s, base, tp.mpp, tp.patch_size, tp.step)
        coords = grid_coords(*s.dimensions, plan.footprint, plan.step)[: a.max_patches]
        rows = {
            "naive read_region loop (level 0, 1 thread)": timed(lambda: naive(slide_path, coords, plan.footprint, a.patch_size)),
            "tile_slide reader, 1 thread": timed(lambda: ours(slide_path, plan, coords, a.patch_size, 1, tp.batch_size)),
            f"tile_slide reader, {a.threads} threads": timed(lambda: ours(slide_path, plan, coords, a.patch_size, a.threads, tp.batch_size)),
        }
    base_rate = next(iter(rows.values()))
    print(f"slide {slide_path.name if a.slide else 'demo 4096x4096 @0.5um/px'}: {len(coords)} patches of {a.patch_size} px at "
          f"{a.mpp} um/px; level {plan.level} (downsample {plan.level_downsample:g}), {os.cpu_count()} CPUs")
    print(f"{'method':48s} {'patches/s':>10s} {'ratio':>7s}")
    for name, rate in rows.items():
        print(f"{name:48s} {rate:10.1f} {rate / base_rate:6.2f}x")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"patches": len(coords), "patch_size": a.patch_size, "mpp": a.mpp, "level": plan.level,
                                        "cpus": os.cpu_count(), "patches_per_s": rows,
                                        "ratio_vs_naive": {k: v / base_rate for k, v in rows.items()}}, indent=2))


if __name__ == "__main__":
    main()
