"""Tiling coverage and cleanliness against CLAM's ``create_patches_fp.py`` on the same slide.

CLAM runs from a checkout of its own repository with its own Python environment, both given by
path (nothing of CLAM's code is in this repository); without them the comparison is skipped with
the reason and only histosynth's rows are printed. Both tile the same slide at level 0 with the
same patch size and grid step; histosynth runs once per keep rule / padding / grid origin / tissue
mask choice (each row pins its mask settings, so a row keeps its meaning when the defaults change):
the old mask (8 um/px, median 7, holes to 5000 um^2 filled), the new defaults (8 um/px, no median,
holes to 2000 um^2) and a fine mask (4 um/px, median 3, holes to 2000 um^2).

Each tool's patches are judged by one neutral test that is neither tool's mask: a pixel of the
slide (read at ``--judge-mpp``) is tissue when it is coloured (HSV saturation >= 0.08) or dark
(value < 200), and not black (value > 20). Reported per row: patches kept, share of the neutral
tissue lying under a kept patch, share of near-empty patches (< 10 % neutral tissue, padding
counted as empty), mean neutral-tissue share per patch, patches reaching past the slide's edge,
wall time of the whole command (a fresh process each, imports included) as a
ratio against CLAM's, measured in the same run.

    .venv/bin/python bench/bench_clam.py --clam-dir <CLAM checkout> --clam-python <CLAM's venv>/bin/python \\
        [--slide ../shared/data/wsi/cmu-1-small-region.svs] [--preset bwh_biopsy.csv] [--patch-size 256] \
        [--pictures results/bench/clam_pictures]

``--pictures`` writes, per histosynth row, the slide beside a map of the neutral tissue covered by
CLAM only (red), by histosynth only (blue) and by neither (yellow): where the coverage differs.

``--preset`` is one of CLAM's own preset files (``presets/*.csv`` in its checkout); its default
parameters (a_t = 100 reference patches) find no contour on a slide as small as CMU-1's region,
``bwh_biopsy.csv`` does.
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

import h5py
import numpy as np
import openslide

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_SLIDE = REPO.parent / "shared" / "data" / "wsi" / "cmu-1-small-region.svs"
NEAR_EMPTY = 0.10
# the tissue masks compared, pinned so a row means the same when the schema's defaults change
OLD_MASK = {"mask_mpp": 8.0, "median_kernel": 7, "max_hole_um2": 5000.0}  # before: a 56 um median erases thin strands
NEW_MASK = {"mask_mpp": 8.0, "median_kernel": 1, "max_hole_um2": 2000.0}  # the defaults now
FINE_MASK = {"mask_mpp": 4.0, "median_kernel": 3, "max_hole_um2": 2000.0}  # 4x the pixels, a 12 um median
VARIANTS = {  # row name -> tiling overrides
    "histosynth fraction>=0.5, no padding, old mask": {
        "keep_rule": "fraction",
        "min_tissue_fraction": 0.5,
        "pad_edges": False,
        "tissue": OLD_MASK,
    },
    "histosynth fraction>=0.5, padded, old mask": {
        "keep_rule": "fraction",
        "min_tissue_fraction": 0.5,
        "pad_edges": True,
        "tissue": OLD_MASK,
    },
    "histosynth fraction>=0.25, padded, old mask": {
        "keep_rule": "fraction",
        "min_tissue_fraction": 0.25,
        "pad_edges": True,
        "tissue": OLD_MASK,
    },
    "histosynth four_points, padded, old mask": {
        "keep_rule": "four_points",
        "pad_edges": True,
        "tissue": OLD_MASK,
    },
    "histosynth four_points, padded, old mask, tissue grid": {
        "keep_rule": "four_points",
        "pad_edges": True,
        "grid_origin": "tissue",
        "tissue": OLD_MASK,
    },
    "histosynth fraction>=0.5, padded, new mask": {
        "keep_rule": "fraction",
        "min_tissue_fraction": 0.5,
        "pad_edges": True,
        "tissue": NEW_MASK,
    },
    "histosynth fraction>=0.5, padded, new mask, tissue grid": {
        "keep_rule": "fraction",
        "min_tissue_fraction": 0.5,
        "pad_edges": True,
        "grid_origin": "tissue",
        "tissue": NEW_MASK,
    },
    "histosynth four_points, padded, new mask": {
        "keep_rule": "four_points",
        "pad_edges": True,
        "tissue": NEW_MASK,
    },
    "histosynth four_points, padded, new mask, tissue grid": {
        "keep_rule": "four_points",
        "pad_edges": True,
        "grid_origin": "tissue",
        "tissue": NEW_MASK,
    },
    "histosynth fraction>=0.5, padded, fine mask": {
        "keep_rule": "fraction",
        "min_tissue_fraction": 0.5,
        "pad_edges": True,
        "tissue": FINE_MASK,
    },
    "histosynth four_points, padded, fine mask": {
        "keep_rule": "four_points",
        "pad_edges": True,
        "tissue": FINE_MASK,
    },
    "histosynth four_points, padded, fine mask, tissue grid": {
        "keep_rule": "four_points",
        "pad_edges": True,
        "grid_origin": "tissue",
        "tissue": FINE_MASK,
    },
}

TILE_ONE = """
import json, sys
from histosynth.config import default_config
from histosynth.tiling import TilingParams, tile_slide
slide, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
params = TilingParams.from_config(default_config(tiling=overrides)["tiling"])
tile_slide(slide, "bench", "bench", out, out + ".png", params, sample_label="tissue", threads=2, progress=False)
"""


def neutral_tissue(
    slide: openslide.OpenSlide, judge_mpp: float, base_mpp: float
) -> tuple[np.ndarray, float, np.ndarray]:
    """The neutral tissue mask, its downsample from level 0, and the RGB image it was judged on."""
    w, h = slide.dimensions
    ds = max(judge_mpp / base_mpp, 1.0)
    img = np.asarray(slide.get_thumbnail((int(w / ds), int(h / ds))).convert("RGB")).astype(np.int16)
    mx, mn = img.max(-1), img.min(-1)
    sat = (mx - mn) / np.maximum(mx, 1)
    return ((sat >= 0.08) | (mx < 200)) & (mx > 20), w / img.shape[1], img.astype(np.uint8)


def covered_by(coords: np.ndarray, footprint: int, shape: tuple[int, int], ds: float) -> np.ndarray:
    """Pixels of the judge's image under any of the patches."""
    covered = np.zeros(shape, bool)
    f = footprint / ds
    for x, y in coords:
        x0, y0 = int(round(x / ds)), int(round(y / ds))
        covered[y0 : int(round(y0 + f)), x0 : int(round(x0 + f))] = True
    return covered


def judge(coords: np.ndarray, footprint: int, tissue: np.ndarray, ds: float, size: tuple[int, int]) -> dict:
    covered = covered_by(coords, footprint, tissue.shape, ds)
    f = footprint / ds
    fractions = []
    for x, y in coords:
        x0, y0 = int(round(x / ds)), int(round(y / ds))
        # outside the slide counts as empty
        fractions.append(tissue[y0 : int(round(y0 + f)), x0 : int(round(x0 + f))].sum() / max(f * f, 1))
    fractions = np.array(fractions)
    return {
        "patches": int(len(coords)),
        "tissue_covered": float((covered & tissue).sum() / max(tissue.sum(), 1)),
        "near_empty_share": float((fractions < NEAR_EMPTY).mean()) if len(fractions) else 0.0,
        "mean_tissue_fraction": float(fractions.mean()) if len(fractions) else 0.0,
        # patches reaching past the slide: histosynth paints that part glass-coloured; read
        # with OpenSlide + convert("RGB") as CLAM's feature extraction does, it is black
        "past_edge": int(((coords[:, 0] + footprint > size[0]) | (coords[:, 1] + footprint > size[1])).sum()),
    }


def difference_picture(path: Path, thumb: np.ndarray, tissue: np.ndarray, clam: np.ndarray, ours: np.ndarray) -> None:
    """The slide beside a map of its neutral tissue: covered by both (grey), by CLAM only (red),
    by histosynth only (blue), by neither (yellow)."""
    from PIL import Image

    out = (thumb * 0.4).astype(np.uint8)
    out[tissue] = (170, 170, 170)
    out[tissue & clam & ~ours] = (230, 0, 0)
    out[tissue & ours & ~clam] = (0, 0, 230)
    out[tissue & ~ours & ~clam] = (255, 200, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([thumb, out], axis=1)).save(path)


def run_clam(clam_dir: Path, clam_python: str, slide: Path, preset: str, patch_size: int, work: Path):
    src = work / "clam_src"
    src.mkdir()
    (src / slide.name).symlink_to(slide.resolve())
    cmd = [
        clam_python,
        "create_patches_fp.py",
        "--source",
        str(src),
        "--save_dir",
        str(work / "clam"),
        "--patch_size",
        str(patch_size),
        "--step_size",
        str(patch_size),
        "--seg",
        "--patch",
        "--preset",
        preset,
    ]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=clam_dir, capture_output=True, text=True, timeout=1800)
    sec = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"CLAM failed ({r.returncode}): {r.stderr[-2000:]}")
    out = work / "clam" / "patches" / f"{slide.stem}.h5"
    if not out.exists():  # CLAM writes no file when it finds no contour
        return np.zeros((0, 2), np.int64), sec
    with h5py.File(out, "r") as h:
        return h["coords"][:], sec


def run_ours(slide: Path, overrides: dict, work: Path, name: str):
    out = work / f"{abs(hash(name))}.h5"  # names are unique within a run
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", TILE_ONE, str(slide), str(out), json.dumps(overrides)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=1800,
    )
    sec = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"tile_slide failed ({r.returncode}) for {name}: {r.stderr[-2000:]}")
    with h5py.File(out, "r") as h:
        return h["coords"][:], int(h["coords"].attrs["footprint_level0"]), sec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", default=str(DEFAULT_SLIDE))
    ap.add_argument(
        "--clam-dir", default=os.environ.get("CLAM_DIR"), help="checkout of github.com/mahmoodlab/CLAM (env CLAM_DIR)"
    )
    ap.add_argument(
        "--clam-python", default=os.environ.get("CLAM_PYTHON"), help="python of CLAM's environment (env CLAM_PYTHON)"
    )
    ap.add_argument("--preset", default="bwh_biopsy.csv")
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--judge-mpp", type=float, default=2.0)
    ap.add_argument("--json", default="results/bench/clam.json")
    ap.add_argument(
        "--pictures",
        help="folder for one PNG per histosynth row: where its covered tissue differs from CLAM's (needs CLAM)",
    )
    a = ap.parse_args(argv)
    slide_path = Path(a.slide)
    if not slide_path.exists():
        print(f"skipped: slide {slide_path} not found (../shared/data is not here)")
        return
    slide = openslide.OpenSlide(str(slide_path))
    base_mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
    tissue, ds, thumb = neutral_tissue(slide, a.judge_mpp, base_mpp)
    rows, skipped, clam_cover = {}, None, None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clam_ok = (
            a.clam_dir
            and (Path(a.clam_dir) / "create_patches_fp.py").is_file()
            and a.clam_python
            and shutil.which(a.clam_python)
        )
        if clam_ok:
            coords, sec = run_clam(Path(a.clam_dir), a.clam_python, slide_path, a.preset, a.patch_size, work)
            clam_cover = covered_by(coords, a.patch_size, tissue.shape, ds)
            rows[f"CLAM create_patches_fp ({a.preset}, four_pt, padding)"] = {
                **judge(coords, a.patch_size, tissue, ds, slide.dimensions),
                "seconds": sec,
            }
        else:
            skipped = (
                "CLAM not compared: give --clam-dir (a checkout of mahmoodlab/CLAM with create_patches_fp.py) and "
                f"--clam-python (its environment's python); got {a.clam_dir!r}, {a.clam_python!r}"
            )
        for name, over in VARIANTS.items():
            # same grid as CLAM: level 0 (mpp = the scan's), patch_size px, no overlap
            coords, footprint, sec = run_ours(
                slide_path, {"patch_size": a.patch_size, "mpp": base_mpp, **over}, work, name
            )
            rows[name] = {**judge(coords, footprint, tissue, ds, slide.dimensions), "seconds": sec}
            if a.pictures and clam_cover is not None:
                slug = "".join(c if c.isalnum() else "_" for c in name.removeprefix("histosynth "))
                ours = covered_by(coords, footprint, tissue.shape, ds)
                difference_picture(Path(a.pictures) / f"{slug}.png", thumb, tissue, clam_cover, ours)
    ref = next(iter(rows.values()))
    print(
        f"slide {slide_path.name}: {slide.dimensions[0]}x{slide.dimensions[1]} px at {base_mpp} um/px; {a.patch_size} px "
        f"patches at level 0; neutral tissue {tissue.mean():.1%} of the slide; {os.cpu_count()} CPUs"
    )
    if skipped:
        print(skipped)
    print(
        f"{'tiler':66s} {'patches':>7s} {'tissue covered':>14s} {'near-empty':>10s} {'mean tissue':>11s} "
        f"{'past edge':>9s} {'wall s':>7s} {'vs first':>8s}"
    )
    for name, r in rows.items():
        print(
            f"{name:66s} {r['patches']:7d} {r['tissue_covered']:14.1%} {r['near_empty_share']:10.1%} "
            f"{r['mean_tissue_fraction']:11.1%} {r['past_edge']:9d} {r['seconds']:7.1f} {r['seconds'] / ref['seconds']:7.2f}x"
        )
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(
        json.dumps(
            {
                "slide": str(slide_path),
                "patch_size": a.patch_size,
                "preset": a.preset,
                "skipped": skipped,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
