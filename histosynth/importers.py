"""``import_patches``: existing patch datasets -> the patch-file contract.

Formats:
- ``medmnist``: a MedMNIST ``.npz`` (``{part}_images`` (N,H,W[,3]) uint8, ``{part}_labels`` (N,1)),
  importing whichever of train/val/test it holds.
- ``pcam``: PatchCamelyon HDF5 pairs ``*_x.h5`` (dataset ``x``) + ``*_y.h5`` (dataset ``y``), given as
  a folder holding the pairs or as one ``*_x.h5``.
- ``folder``: class sub-folders of images, or a CSV with columns ``path,label[,case_id]``
  (paths relative to the CSV).

Images are resized to ``tiling.patch_size`` and streamed in batches, never loaded whole (except
``.npz``, which numpy cannot read partially). Patches without a slide get coords (-1, -1) and one
case per image, so the splitter treats them as independent unless a CSV gives ``case_id``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .errors import InputError
from .patchfile import NO_COORD, PatchBatch, PatchFileSpec, PatchWriter, magnification_for_mpp
from .qc import PatchQC

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
MEDMNIST_PARTS = ("train", "val", "test")
PCAM_PARTS = ("train", "valid", "test")
PCAM_LABEL_NAMES = ["no_tumor", "tumor"]


@dataclass
class Part:
    """One part of a dataset: how many images, and a reader of batches (images, labels, case ids)."""

    name: str
    n: int
    batches: callable  # (batch_size) -> Iterator[(imgs, labels, case_ids)]


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """(H,W[,C]) uint8 -> (size,size,3) uint8 (greyscale replicated, alpha dropped)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise InputError(f"images must be uint8, got {img.dtype}")
    if img.ndim == 2 or img.shape[-1] == 1:
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=-1)
    img = img[..., :3]
    if img.shape[:2] == (size, size):
        return np.ascontiguousarray(img)
    # shrinking averages (LANCZOS); enlarging small MedMNIST images interpolates (BICUBIC)
    method = Image.Resampling.LANCZOS if img.shape[0] > size else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(img).resize((size, size), method))


def _labels_json(path: Path) -> list[str] | None:
    f = path.parent / "labels.json"
    if not f.is_file():
        return None
    d = json.loads(f.read_text())
    return [str(d[k]) for k in sorted(d, key=int)] if isinstance(d, dict) else [str(x) for x in d]


def medmnist_parts(path: Path, name: str, parts: list[str] | None, limit: int | None) -> tuple[list[Part], int]:
    try:
        npz = np.load(path)
    except (OSError, ValueError) as e:
        raise InputError(f"patch dataset {name!r}: {path} is not a readable .npz file ({e})") from e
    present = [p for p in MEDMNIST_PARTS if f"{p}_images" in npz.files]
    if not present:
        raise InputError(f"patch dataset {name!r}: {path} holds no images; expected arrays like "
                         f"'train_images'/'train_labels', found {npz.files}")
    wanted = present if parts is None else [p for p in parts if p in present]
    if parts is not None and set(parts) - set(present):
        raise InputError(f"patch dataset {name!r}: parts {sorted(set(parts) - set(present))} not in {path} (has {present})")
    out, n_classes = [], 0
    for part in wanted:
        imgs = npz[f"{part}_images"]
        if f"{part}_labels" not in npz.files:
            raise InputError(f"patch dataset {name!r}: {path} has '{part}_images' but no '{part}_labels'")
        labels = np.asarray(npz[f"{part}_labels"]).reshape(len(imgs), -1)[:, 0].astype(np.int64)
        if labels.size:
            n_classes = max(n_classes, int(labels.max()) + 1)
        n = len(imgs) if limit is None else min(limit, len(imgs))

        def batches(bs, imgs=imgs, labels=labels, part=part, n=n):
            for s in range(0, n, bs):
                e = min(s + bs, n)
                yield imgs[s:e], labels[s:e], [f"{name}:{part}:{i}" for i in range(s, e)]

        out.append(Part(part, n, batches))
    return out, n_classes


def pcam_parts(path: Path, name: str, parts: list[str] | None, limit: int | None) -> tuple[list[Part], int]:
    if path.is_dir():
        xs = sorted(path.glob("*_x.h5"))
    elif path.name.endswith("_x.h5"):
        xs = [path]
    else:
        raise InputError(f"patch dataset {name!r}: pcam path {path} must be a folder of *_x.h5/*_y.h5 pairs or one *_x.h5 file")
    if not xs:
        raise InputError(f"patch dataset {name!r}: no *_x.h5 files in {path}")
    out = []
    for xf in xs:
        part = xf.name[: -len("_x.h5")].split("_")[-1]  # camelyonpatch_level_2_split_train_x.h5 -> train
        if parts is not None and part not in parts:
            continue
        yf = xf.with_name(xf.name[: -len("_x.h5")] + "_y.h5")
        if not yf.is_file():
            raise InputError(f"patch dataset {name!r}: {xf} has no matching labels file {yf.name}")
        with h5py.File(xf, "r") as hx, h5py.File(yf, "r") as hy:
            if "x" not in hx or "y" not in hy:
                raise InputError(f"patch dataset {name!r}: expected dataset 'x' in {xf.name} and 'y' in {yf.name}")
            n_x, n_y = len(hx["x"]), len(hy["y"])
        if n_x != n_y:
            raise InputError(f"patch dataset {name!r}: {xf.name} has {n_x} images but {yf.name} has {n_y} labels")
        n = n_x if limit is None else min(limit, n_x)

        def batches(bs, xf=xf, yf=yf, part=part, n=n):
            with h5py.File(xf, "r") as hx, h5py.File(yf, "r") as hy:
                for s in range(0, n, bs):
                    e = min(s + bs, n)
                    yield hx["x"][s:e], hy["y"][s:e].reshape(e - s, -1)[:, 0].astype(np.int64), [f"{name}:{part}:{i}" for i in range(s, e)]

        out.append(Part(part, n, batches))
    return out, 2


def folder_parts(path: Path, name: str, limit: int | None) -> tuple[list[Part], list[str]]:
    if path.is_file() and path.suffix.lower() in {".csv", ".tsv"}:
        df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str)
        missing = {"path", "label"} - set(df.columns)
        if missing:
            raise InputError(f"patch dataset {name!r}: {path} lacks column(s) {sorted(missing)}; has {list(df.columns)}")
        files = [path.parent / p for p in df["path"]]
        classes = sorted(df["label"].unique())
        labels = [classes.index(x) for x in df["label"]]
        cases = list(df["case_id"]) if "case_id" in df.columns else None
    elif path.is_dir():
        classes = sorted(d.name for d in path.iterdir() if d.is_dir())
        if not classes:
            raise InputError(f"patch dataset {name!r}: folder {path} has no class sub-folders")
        files, labels = [], []
        for ci, c in enumerate(classes):
            fs = sorted(f for f in (path / c).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            files += fs
            labels += [ci] * len(fs)
        cases = None
    else:
        raise InputError(f"patch dataset {name!r}: folder path {path} must be a directory of class folders or a CSV")
    if not files:
        raise InputError(f"patch dataset {name!r}: no images found under {path}")
    n = len(files) if limit is None else min(limit, len(files))
    cases = cases or [f"{name}:{f.stem}" for f in files]

    def read(f: Path) -> np.ndarray:
        try:
            with Image.open(f) as im:
                return np.asarray(im.convert("RGB"))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
            raise InputError(f"patch dataset {name!r}: cannot read image {f}: {e}") from e

    def batches(bs):
        for s in range(0, n, bs):
            e = min(s + bs, n)
            yield [read(f) for f in files[s:e]], np.asarray(labels[s:e], np.int64), cases[s:e]

    return [Part("all", n, batches)], classes


def import_patches(dataset: dict, out_h5: str | os.PathLike, patch_size: int, batch_size: int = 256, progress: bool = True,
                   qc: dict | None = None) -> int:
    """Import one ``patch_datasets`` entry into ``out_h5``; returns the number of patches."""
    name, fmt, path = dataset["name"], dataset["format"], Path(dataset["path"])
    if not path.exists():
        raise InputError(f"patch dataset {name!r}: path {path} does not exist")
    limit, parts_wanted = dataset.get("limit"), dataset.get("parts")
    default_names = None
    if fmt == "medmnist":
        parts, n_classes = medmnist_parts(path, name, parts_wanted, limit)
        default_names = _labels_json(path) or [f"class_{i}" for i in range(n_classes)]
    elif fmt == "pcam":
        parts, _ = pcam_parts(path, name, parts_wanted, limit)
        default_names = _labels_json(path if path.is_file() else path / "x") or PCAM_LABEL_NAMES
    elif fmt == "folder":
        parts, default_names = folder_parts(path, name, limit)
    else:
        raise InputError(f"patch dataset {name!r}: unknown format {fmt!r}")
    label_names = dataset.get("label_names") or default_names
    mpp = dataset.get("mpp") or float("nan")
    total = sum(p.n for p in parts)
    spec = PatchFileSpec(
        patch_size=patch_size,
        label_names=label_names,
        coords_attrs=dict(patch_size=patch_size, patch_level=-1, downsample=np.array([1.0, 1.0]), name=name,
                          mpp=float("nan"), magnification=float("nan")),
        root_attrs=dict(source=fmt, dataset=name, source_path=str(path), source_mpp=mpp,
                        parts=",".join(p.name for p in parts)),
    )
    stored_mpps: set[float] = set()
    patch_qc = PatchQC(qc, source=f"patch dataset {name!r}")  # optional blur filter / stain normalisation (histosynth.qc)
    with PatchWriter(out_h5, spec) as writer:
        bar = tqdm(total=total, desc=f"import {name}", unit="patch", disable=not progress, mininterval=2)
        for part in parts:
            for imgs, labels, cases in part.batches(batch_size):
                if len(labels) and (labels.max() >= len(label_names) or labels.min() < 0):
                    raise InputError(f"patch dataset {name!r}: label {int(labels.max())} outside label_names {label_names}")
                arr = np.stack([resize_image(im, patch_size) for im in imgs])
                # resizing changes the pixel size: record it per patch when the source's is known
                stored = np.array([mpp * np.asarray(im).shape[0] / patch_size for im in imgs], np.float32)
                stored_mpps.update(np.unique(stored[np.isfinite(stored)]).tolist())
                writer.append(patch_qc.apply(PatchBatch(arr, np.full((len(arr), 2), NO_COORD), labels,
                                                        [f"{name}:{part.name}"] * len(arr), cases, stored)))
                bar.update(len(arr))
        bar.close()
        patch_qc.finish(writer)
        uniform = stored_mpps.pop() if len(stored_mpps) == 1 else float("nan")
        writer.set_coords_attrs(mpp=uniform, magnification=magnification_for_mpp(uniform))
    log.info("patch dataset %s: imported %d patches (%s) from %s, %d classes", name, writer.n,
             ", ".join(f"{p.name}={p.n}" for p in parts), path, len(label_names))
    return writer.n
