"""Small stand-in data in each preset's own format, at the paths the preset names.

``python -m histosynth.standin {osorio,lora_pathmnist,pathldm} [DIR]`` writes, under ``DIR`` (default
``.``), what the preset reads: PCam's ``*_x.h5`` / ``*_y.h5`` / ``*_meta.csv`` for ``osorio``,
MedMNIST's ``pathmnist_224.npz`` for ``lora_pathmnist``, TCGA-like slides, a slide sheet,
pathology reports and per-patch tumour / TIL scores for ``pathldm``. With ``config/smoke.yaml``
this runs a preset's whole DAG in minutes on a CPU (mechanics only: the images are crops of
scikit-image's IHC sample, not real data). The preset test uses it the same way.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image
from skimage import data

from .demo import DEMO_MPP, demo_slide_image, write_pyramidal_tiff

PRESETS = ("osorio", "lora_pathmnist", "pathldm")


def _patches(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Crops of the IHC sample, tinted by class so a classifier has something to learn."""
    rng = np.random.default_rng(seed)
    src = data.immunohistochemistry()
    out = np.empty((len(labels), size, size, 3), np.uint8)
    for i, lab in enumerate(labels):
        y, x = rng.integers(0, src.shape[0] - 128, size=2)
        crop = np.asarray(
            Image.fromarray(src[y : y + 128, x : x + 128]).resize((size, size), Image.Resampling.BILINEAR)
        )
        tint = np.roll(np.array([24, -12, -12]), int(lab)) * (1 + int(lab) // 3)
        out[i] = np.clip(crop.astype(np.int16) + tint, 0, 255)
    return out


def pcam(root: Path, per_part: dict[str, int] | None = None, slides_per_part: int = 2) -> Path:
    """``data/pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` + ``_meta.csv``, shaped as PCam
    ships them: x (N, 96, 96, 3) uint8, y (N, 1, 1, 1) uint8, meta with a ``wsi`` column (one lymph-node
    slide per group; no slide in two parts)."""
    out = root / "data" / "pcam"
    out.mkdir(parents=True, exist_ok=True)
    per_part = per_part or {"train": 16, "valid": 8, "test": 8}
    for k, (part, n) in enumerate(per_part.items()):
        y = np.arange(n) % 2
        stem = out / f"camelyonpatch_level_2_split_{part}"
        with h5py.File(f"{stem}_x.h5", "w") as f:
            f.create_dataset("x", data=_patches(y, 96, seed=k))
        with h5py.File(f"{stem}_y.h5", "w") as f:
            f.create_dataset("y", data=y.astype(np.uint8).reshape(n, 1, 1, 1))
        wsi = [f"{part}_node_{i % slides_per_part}" for i in range(n)]
        pd.DataFrame(
            {
                "coord_y": np.arange(n) * 96,
                "coord_x": 0,
                "tumor_patch": y.astype(bool),
                "center_tumor_patch": y.astype(bool),
                "wsi": wsi,
            }
        ).to_csv(f"{stem}_meta.csv")
    return out


def pathmnist(root: Path, per_class: dict[str, int] | None = None, n_classes: int = 9) -> Path:
    """``data/pathmnist_224.npz`` as MedMNIST+ ships it: ``{part}_images`` (N, 224, 224, 3) uint8 and
    ``{part}_labels`` (N, 1) for train / val / test."""
    out = root / "data" / "pathmnist_224.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    per_class = per_class or {"train": 2, "val": 1, "test": 1}
    arrays = {}
    for k, (part, n) in enumerate(per_class.items()):
        labels = np.repeat(np.arange(n_classes), n)
        arrays[f"{part}_images"] = _patches(labels, 224, seed=10 + k)
        arrays[f"{part}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez_compressed(out, **arrays)
    return out


REPORTS = {
    "TCGA-A1-0001": "FINAL DIAGNOSIS: Left breast, mastectomy: Invasive ductal carcinoma, Nottingham grade 3. "
    "ER negative, PR negative, HER2 negative. Tumor size 2.5 cm. Lymph nodes 0/12 positive.",
    "TCGA-A1-0002": "FINAL DIAGNOSIS: Right breast, lumpectomy: Invasive lobular carcinoma, grade 2. "
    "ER positive, PR positive, HER2 negative. Tumor size 1.2 cm. Lymph nodes 1/3 positive.",
    "TCGA-A1-0003": "FINAL DIAGNOSIS: Breast, excision: Invasive ductal carcinoma, grade 1. ER positive. "
    "Tumor size 0.8 cm.",
    "TCGA-A1-0004": "FINAL DIAGNOSIS: Invasive ductal carcinoma, grade 2. HER2 positive. Lymph nodes 2/10 positive.",
    "TCGA-A1-0005": "FINAL DIAGNOSIS: Invasive lobular carcinoma, grade 2. ER positive, PR negative.",
    "TCGA-A1-0006": "FINAL DIAGNOSIS: Invasive ductal carcinoma, grade 3. Tumor size 3.1 cm. LVI present.",
}


def tcga_brca(root: Path, size: int = 3072) -> Path:
    """``data/tcga_brca/``: one slide per TCGA case (pyramidal TIFFs at 0.5 um/px), ``slides.tsv``
    without a label column (PathLDM's slides have none), ``reports.csv`` (bcr_patient_barcode, text) and
    ``patch_scores.tsv``: per-patch tumour / TIL probabilities (slide_id, x, y in level-0 pixels of the
    patch's top-left corner, tumor, til), as wsinfer writes them per slide."""
    out = root / "data" / "tcga_brca"
    out.mkdir(parents=True, exist_ok=True)
    rows, scores = [], []
    rng = np.random.default_rng(0)
    for i, case in enumerate(REPORTS):
        slide = f"{case}-01Z-00-DX1"
        path = out / f"{slide}.tiff"
        write_pyramidal_tiff(path, demo_slide_image(i, size), DEMO_MPP)
        rows.append((slide, os.path.relpath(path, root), case))
        step = int(round(1.0 / DEMO_MPP * 64))  # a 64 um grid covers any patch size the tests tile at
        for y in range(0, size, step):
            for x in range(0, size, step):
                scores.append((slide, x, y, round(float(rng.uniform()), 3), round(float(rng.uniform()), 3)))
    pd.DataFrame(rows, columns=["slide_id", "slide_path", "case_id"]).to_csv(out / "slides.tsv", sep="\t", index=False)
    pd.DataFrame({"bcr_patient_barcode": list(REPORTS), "text": list(REPORTS.values())}).to_csv(
        out / "reports.csv", index=False
    )
    pd.DataFrame(scores, columns=["slide_id", "x", "y", "tumor", "til"]).to_csv(
        out / "patch_scores.tsv", sep="\t", index=False
    )
    return out


WRITERS = {"osorio": pcam, "lora_pathmnist": pathmnist, "pathldm": tcga_brca}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("preset", choices=PRESETS)
    ap.add_argument("root", nargs="?", default=".", type=Path, help="the working directory the preset runs in")
    args = ap.parse_args(argv)
    print(WRITERS[args.preset](args.root))


if __name__ == "__main__":
    main()
