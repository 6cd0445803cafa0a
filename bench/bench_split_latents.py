"""Disk and time of the split and the latent caches, copying (before) against referencing (now).

Split: ``--slides`` tile files of ``--patches`` patches each (``--size`` px, smooth random
texture so gzip sees realistic, not constant, pixels; one case per file, so whole files go to one
split) split 70/15/15 by the real ``split_patches``, once with every row copied (``MIN_VIEW_RUN``
raised above every run: the old behaviour) and once as now (virtual datasets over the tile files).

Latents: the tiny offline base model on the training split at the patch size with flips, for
``--experiments`` experiments with different prompts: before, ``cache_latents`` per experiment
(VAE + text encoder each time); now ``cache_image_latents`` once plus ``cache_prompt_latents`` per
experiment. Wall time on a loaded machine varies; CPU seconds of this process are given beside it.

    .venv/bin/python bench/bench_split_latents.py [--slides 20] [--patches 500] [--size 64] [--experiments 3]

(``--experiments 0`` measures the split only.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from histosynth import split as split_mod  # noqa: E402
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter  # noqa: E402


def make_tiles(folder: Path, slides: int, patches: int, size: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    spec = PatchFileSpec(
        size,
        ["a", "b"],
        dict(patch_size=size, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=0.5, magnification=20.0),
    )
    files = []
    for i in range(slides):
        f = folder / f"slide{i}.h5"
        with PatchWriter(f, spec) as w:
            for s in range(0, patches, 250):
                m = min(250, patches - s)
                coarse = rng.integers(60, 230, (m, size // 8, size // 8, 3), dtype=np.uint8)
                imgs = np.repeat(np.repeat(coarse, 8, 1), 8, 2) + rng.integers(
                    0, 12, (m, size, size, 3), dtype=np.uint8
                )
                w.append(
                    PatchBatch(imgs, np.zeros((m, 2)), [i % 2] * m, [f"s{i}"] * m, [f"case{i}"] * m, np.full(m, 0.5))
                )
        files.append(f)
    return files


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def report(rows: list, row: dict) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)  # each figure as soon as it is measured


def size_of(paths) -> int:
    return sum(Path(p).stat().st_size for p in paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=20)
    ap.add_argument("--patches", type=int, default=500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--experiments", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tiles").mkdir()
        tiles = make_tiles(tmp / "tiles", args.slides, args.patches, args.size)
        tile_bytes = size_of(tiles)
        for name, min_run in (("copy every row (before)", 1 << 62), ("virtual datasets (now)", split_mod.MIN_VIEW_RUN)):
            out = tmp / name.split()[0]
            out.mkdir()
            outs = {s: out / f"{s}.h5" for s in split_mod.SPLITS}
            split_mod.MIN_VIEW_RUN = min_run
            _, wall, cpu = timed(lambda: split_mod.split_patches(tiles, outs, out / "m.tsv", None, 0.15, 0.15, 0))
            report(
                rows,
                dict(
                    step="split",
                    variant=name,
                    patches=args.slides * args.patches,
                    wall_s=round(wall, 2),
                    cpu_s=round(cpu, 2),
                    disk_mib=round(size_of(outs.values()) / 2**20, 2),
                    vs_tiles=round(size_of(outs.values()) / tile_bytes, 4),
                ),
            )
        train = tmp / "virtual" / "train.h5"
        if not args.experiments:  # --experiments 0: the split only
            print(pd.DataFrame(rows).to_string(index=False))
            return

        from histosynth.diffusion.latents import cache_image_latents, cache_latents, cache_prompt_latents
        from histosynth.models.base_model import prepare_base_model

        base = prepare_base_model("tiny", tmp / "base")
        n = len(pd.read_csv(tmp / "virtual" / "m.tsv", sep="\t").query("split == 'train'"))
        prompts = []
        for e in range(args.experiments):
            p = tmp / f"prompts{e}.tsv"
            pd.DataFrame({"index": range(n), "prompt": [f"experiment {e}, class {i % 2}" for i in range(n)]}).to_csv(
                p, sep="\t", index=False
            )
            prompts.append(p)
        before = [tmp / "before" / f"lat{e}.h5" for e in range(args.experiments)]
        _, wall, cpu = timed(
            lambda: [cache_latents(train, p, base, o, args.size, True, progress=False) for p, o in zip(prompts, before)]
        )
        report(
            rows,
            dict(
                step=f"latents x{args.experiments} experiments",
                variant="cache_latents per experiment (before)",
                patches=n,
                wall_s=round(wall, 2),
                cpu_s=round(cpu, 2),
                disk_mib=round(size_of(before) / 2**20, 2),
            ),
        )
        img = tmp / "now" / "images" / "train.h5"
        now = [tmp / "now" / f"lat{e}.h5" for e in range(args.experiments)]

        def shared():
            cache_image_latents(train, base, img, args.size, True, progress=False)
            for p, o in zip(prompts, now):
                cache_prompt_latents(img, p, base, o)

        _, wall, cpu = timed(shared)
        report(
            rows,
            dict(
                step=f"latents x{args.experiments} experiments",
                variant="image latents once + prompts (now)",
                patches=n,
                wall_s=round(wall, 2),
                cpu_s=round(cpu, 2),
                disk_mib=round(size_of([img, *now]) / 2**20, 2),
            ),
        )
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
