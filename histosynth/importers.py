"""``import_patches``: existing patch datasets -> the patch-file contract.

Formats:
- ``medmnist``: a MedMNIST ``.npz`` (``{part}_images`` (N,H,W[,3]), ``{part}_labels`` (N,) or (N,1)).
- ``pcam``: PatchCamelyon per split ``*_{part}_x.h5`` (dataset ``x``) + ``*_{part}_y.h5`` (dataset ``y``)
  [+ ``*_{part}_meta.csv`` with the ``wsi`` column], given as a folder or as one ``*_x.h5``.
- ``folder``: images under a folder, or a CSV (``path,label[,case_id]``, paths relative to the CSV);
  the class from a sub-folder, a file-name regex or the CSV, the case likewise (``label_from``,
  ``case_from``).

Leakage: medmnist and pcam keep their official train/val/test parts by default (stored per patch in
the ``official_split`` column, which ``split_patches`` honours); ``split: resplit`` pools them and
lets the splitter group them by slide (pcam's ``wsi``) or case. Every patch carries the case it
comes from, so no case can end up in two splits.

Images are streamed in batches, never loaded whole (except ``.npz``, which numpy cannot read
partially). 16-bit images are scaled by their dtype's range; float images are refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from .progress import progress_bar

from .errors import InputError
from .qc import PatchQC
from .patchfile import NO_COORD, PatchBatch, PatchFileSpec, PatchWriter, magnification_for_mpp

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
MEDMNIST_PARTS = {"train": "train", "val": "val", "test": "test"}  # part name -> split
PCAM_PARTS = {"train": "train", "valid": "val", "test": "test"}
PCAM_LABEL_NAMES = ["no_tumor", "tumor"]
DEFAULT_LABEL_PATTERN = r"^([^-_]+)[-_]"  # <CLASS>-<id>.tif
DEFAULT_CASE_PATTERN = r"(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})"  # TCGA patient barcode
TCGA_LIKE = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.I)
FOV_TOLERANCE = 0.05  # an image up to 5 % smaller than a patch's field of view is used whole


@dataclass
class Part:
    """Rows of one part of a dataset and how to read their pixels."""

    name: str
    split: str  # the official split ("train"/"val"/"test"), or "" = split by the splitter
    rows: np.ndarray  # source row indices to import (increasing)
    labels: np.ndarray  # label index per source row (all rows)
    cases: np.ndarray  # case id per source row
    slides: np.ndarray  # slide id per source row
    read: Callable[[np.ndarray], list]  # increasing source rows -> images


def to_uint8(img: np.ndarray, what: str) -> np.ndarray:
    """8-bit pixels, scaling wider integer types by their range (65535 -> 255); floats are refused."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    if img.dtype.kind in "ui":
        if img.dtype.kind == "i" and img.size and img.min() < 0:
            raise InputError(f"{what}: negative pixel values ({img.dtype}); expected unsigned 8- or 16-bit images")
        top = np.iinfo(img.dtype).max
        return np.round(img.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    raise InputError(
        f"{what}: {img.dtype} pixels; expected 8- or 16-bit integer images (convert float images to uint8 0-255 first)"
    )


def read_image(f: Path, what: str) -> np.ndarray:
    """(H,W[,C]) uint8 of one image file, 16-bit files scaled (not clipped) to 8 bits."""
    try:
        if f.suffix.lower() in {".tif", ".tiff"}:
            import tifffile

            arr = tifffile.imread(f)
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)  # planar RGB
        else:
            with Image.open(f) as im:
                if im.mode.startswith("I"):  # 16-bit greyscale PNG: "I;16" or "I" (int32 holding 0..65535)
                    arr = np.asarray(im)
                    if arr.dtype == np.int32 and arr.size and arr.max() <= 65535 and arr.min() >= 0:
                        arr = arr.astype(np.uint16)
                elif im.mode == "F":
                    arr = np.asarray(im)
                else:
                    arr = np.asarray(im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{what}: cannot read image {f}: {e}") from e
    return to_uint8(arr, f"{what}: {f}")


def resize_image(img: np.ndarray, size: int, crop_px: float | None = None) -> np.ndarray:
    """(H,W[,C]) uint8 -> (size,size,3) uint8 (greyscale replicated, alpha dropped).

    ``crop_px``: first take the centred square of this many source pixels (the field of view of a
    patch at the target pixel size), so the result has the slide patches' um per pixel.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise InputError(f"images must be uint8, got {img.dtype}")
    if img.ndim == 2 or img.shape[-1] == 1:
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=-1)
    img = img[..., :3]
    if crop_px is not None:
        c = int(round(min(crop_px, *img.shape[:2])))
        y0, x0 = (img.shape[0] - c) // 2, (img.shape[1] - c) // 2
        img = img[y0 : y0 + c, x0 : x0 + c]
    if img.shape[:2] == (size, size):
        return np.ascontiguousarray(img)
    # shrinking averages (LANCZOS); enlarging small MedMNIST images interpolates (BICUBIC)
    method = Image.Resampling.LANCZOS if img.shape[0] > size else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), method))


def stratified_sample(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Increasing row indices of a seeded sample of ``limit`` rows keeping the class proportions."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    from sklearn.model_selection import train_test_split

    try:
        rows, _ = train_test_split(np.arange(n), train_size=limit, stratify=labels, random_state=seed)
    except ValueError as e:  # a class with one image, or fewer rows than classes
        log.warning("limit %d: cannot stratify by class (%s); sampling at random", limit, e)
        rows = np.random.default_rng(seed).choice(n, limit, replace=False)
    return np.sort(rows)


def _labels_json(path: Path) -> list[str] | None:
    f = path.parent / "labels.json"
    if not f.is_file():
        return None
    d = json.loads(f.read_text())
    return [str(d[k]) for k in sorted(d, key=int)] if isinstance(d, dict) else [str(x) for x in d]


def _check_complete(
    name: str, source: Path, present: list[str], official: dict, parts: list[str] | None, split: str
) -> list[str]:
    """Which parts to import; an official split must have all its parts (or the user names a subset)."""
    if parts is not None:
        missing = sorted(set(parts) - set(present))
        if missing:
            raise InputError(f"patch dataset {name!r}: parts {missing} not in {source} (it has {present})")
        return [p for p in official if p in parts]
    if split == "official":
        missing = [p for p in official if p not in present]
        if missing:
            raise InputError(
                f"patch dataset {name!r}: incomplete official split in {source}: it has {present} but not "
                f"{missing}; add the missing files, name the parts to import (parts: {present}), "
                "or pool them (split: resplit)"
            )
    return [p for p in official if p in present]


def medmnist_parts(path: Path, name: str, ds: dict) -> tuple[list[Part], int]:
    try:
        npz = np.load(path)
    except (OSError, ValueError) as e:
        raise InputError(f"patch dataset {name!r}: {path} is not a readable .npz file ({e})") from e
    present = [p for p in MEDMNIST_PARTS if f"{p}_images" in npz.files]
    if not present:
        raise InputError(
            f"patch dataset {name!r}: {path} holds no images; expected arrays like "
            f"'train_images'/'train_labels', found {npz.files}"
        )
    official = ds.get("split", "official") == "official"
    if not official:
        log.warning(
            "patch dataset %s: MedMNIST has no slide or patient ids, so pooled patches are split per image; "
            "patches of one slide may land in two splits (split: official avoids this)",
            name,
        )
    out, n_classes = [], 0
    for part in _check_complete(name, path, present, MEDMNIST_PARTS, ds.get("parts"), ds.get("split", "official")):
        if f"{part}_labels" not in npz.files:
            raise InputError(f"patch dataset {name!r}: {path} has '{part}_images' but no '{part}_labels'")
        imgs, labels = npz[f"{part}_images"], np.asarray(npz[f"{part}_labels"])
        if imgs.dtype.kind not in "uib":
            raise InputError(
                f"patch dataset {name!r}: {path} '{part}_images' holds {imgs.dtype} pixels; "
                "expected 8- or 16-bit integer images (convert to uint8 0-255)"
            )
        if imgs.ndim not in (3, 4):
            raise InputError(
                f"patch dataset {name!r}: {path} '{part}_images' has shape {imgs.shape}, expected (N,H,W[,C])"
            )
        if labels.ndim == 0 or labels.shape[0] != len(imgs) or labels.size != len(imgs):
            raise InputError(
                f"patch dataset {name!r}: {path} '{part}_labels' has shape {labels.shape} but "
                f"'{part}_images' holds {len(imgs)} images; expected one label per image ({len(imgs)},) "
                "or (N,1) (multi-label arrays are not supported)"
            )
        labels = labels.reshape(-1)
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise InputError(f"patch dataset {name!r}: {path} '{part}_labels' holds non-integer values")
        labels = labels.astype(np.int64)
        if labels.size:
            n_classes = max(n_classes, int(labels.max()) + 1)
        ids = np.array([f"{name}:{part}:{i}" for i in range(len(imgs))], dtype=object)
        out.append(
            Part(
                part,
                MEDMNIST_PARTS[part] if official else "",
                stratified_sample(labels, ds.get("limit"), ds.get("seed", 0)),
                # without slide ids a pooled image is its own slide; an official part is one "slide"
                labels,
                ids,
                np.full(len(imgs), f"{name}:{part}", dtype=object) if official else ids,
                lambda rows, imgs=imgs: imgs[rows],
            )
        )
    return out, n_classes


def _pcam_files(path: Path, name: str) -> dict[str, dict[str, Path]]:
    """part -> {"x", "y", "meta"} files; a half pair is an error."""
    if path.is_dir():
        files = sorted(path.glob("*_x.h5")) + sorted(path.glob("*_y.h5")) + sorted(path.glob("*_meta.csv"))
    elif path.name.endswith("_x.h5"):
        stem = path.name[: -len("_x.h5")]
        files = [path] + [
            f for f in (path.with_name(stem + "_y.h5"), path.with_name(stem + "_meta.csv")) if f.is_file()
        ]
    else:
        raise InputError(
            f"patch dataset {name!r}: pcam path {path} must be a folder of *_x.h5/*_y.h5 pairs or one *_x.h5 file"
        )
    out: dict[str, dict[str, Path]] = {}
    for f in files:
        stem, kind = f.stem.rsplit("_", 1)  # camelyonpatch_level_2_split_train_x -> (..._train, x)
        out.setdefault(stem.split("_")[-1], {})[kind] = f
    for part, fs in out.items():
        for need, has in (("y", "x"), ("x", "y")):
            if has in fs and need not in fs:
                want = fs[has].name[: -len(f"_{has}.h5")] + f"_{need}.h5"
                raise InputError(
                    f"patch dataset {name!r}: {fs[has].name} has no matching file {want} in {fs[has].parent}"
                )
    if not any("x" in v for v in out.values()):
        raise InputError(f"patch dataset {name!r}: no *_x.h5 files in {path}")
    return {p: fs for p, fs in out.items() if "x" in fs}


def pcam_parts(path: Path, name: str, ds: dict) -> list[Part]:
    files = _pcam_files(path, name)
    unknown = sorted(set(files) - set(PCAM_PARTS))
    if unknown:
        raise InputError(f"patch dataset {name!r}: PCam part(s) {unknown} in {path}; expected {list(PCAM_PARTS)}")
    split = ds.get("split", "official")
    parts = ds.get("parts")
    if parts is None and not path.is_dir():
        parts = list(files)  # one *_x.h5 named: that part only
    wanted = _check_complete(name, path, list(files), PCAM_PARTS, parts, split)
    with_meta = [p for p in wanted if "meta" in files[p]]
    if split == "resplit" and len(with_meta) < len(wanted):
        missing = [p for p in wanted if p not in with_meta]
        raise InputError(
            f"patch dataset {name!r}: split: resplit groups PCam patches by slide, from the 'wsi' column of "
            f"*_meta.csv, but {path} has none for part(s) {missing}"
        )
    out = []
    for part in wanted:
        xf, yf = files[part]["x"], files[part]["y"]
        with h5py.File(xf, "r") as hx, h5py.File(yf, "r") as hy:
            if "x" not in hx or "y" not in hy:
                raise InputError(f"patch dataset {name!r}: expected dataset 'x' in {xf.name} and 'y' in {yf.name}")
            n, labels = len(hx["x"]), hy["y"][:]
        if len(labels) != n:
            raise InputError(f"patch dataset {name!r}: {xf.name} has {n} images but {yf.name} has {len(labels)} labels")
        labels = labels.reshape(n, -1)[:, 0].astype(np.int64)
        if part in with_meta:
            meta = pd.read_csv(files[part]["meta"])
            if "wsi" not in meta.columns or len(meta) != n:
                raise InputError(
                    f"patch dataset {name!r}: {files[part]['meta'].name} must have a 'wsi' column and "
                    f"{n} rows (one per patch of {xf.name}); it has {len(meta)} rows, columns {list(meta.columns)}"
                )
            slides = np.array([f"{name}:{w}" for w in meta["wsi"].astype(str)], dtype=object)
            cases = slides  # PCam: one slide per lymph node; the slide is the group
        else:  # official split without meta: each patch its own case, the part its "slide"
            slides = np.full(n, f"{name}:{part}", dtype=object)
            cases = np.array([f"{name}:{part}:{i}" for i in range(n)], dtype=object)

        def read(rows, xf=xf):
            with h5py.File(xf, "r") as hx:
                return hx["x"][rows]

        out.append(
            Part(
                part,
                PCAM_PARTS[part] if split == "official" else "",
                stratified_sample(labels, ds.get("limit"), ds.get("seed", 0)),
                labels,
                cases,
                slides,
                read,
            )
        )
    return out


class _Skips(Counter):
    """Files an importer leaves out, counted by reason (logged, never silent)."""

    def log(self, name: str) -> None:
        for reason, n in sorted(self.items()):
            log.warning("patch dataset %s: skipped %d file(s): %s", name, n, reason)


def _match(pattern: re.Pattern, text: str) -> str | None:
    m = pattern.search(text)
    if not m:
        return None
    value = next((g for g in m.groups() if g), None) if m.groups() else m.group(0)
    return value or None


def folder_parts(path: Path, name: str, ds: dict) -> tuple[list[Part], list[str]]:
    is_csv = path.is_file() and path.suffix.lower() in {".csv", ".tsv"}
    if not is_csv and not path.is_dir():
        raise InputError(f"patch dataset {name!r}: folder path {path} must be a directory of images or a CSV")
    label_from = ds.get("label_from") or ("csv" if is_csv else "subfolder")
    case_from = ds.get("case_from")
    skip_unmatched = ds.get("skip_unmatched", False)
    skips = _Skips()
    table = None
    if is_csv:
        table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False)
        need = {"path"} | ({"label"} if label_from == "csv" else set()) | ({"case_id"} if case_from == "csv" else set())
        if need - set(table.columns):
            raise InputError(
                f"patch dataset {name!r}: {path} lacks column(s) {sorted(need - set(table.columns))}; "
                f"has {list(table.columns)}"
            )
        if case_from is None:
            case_from = "csv" if "case_id" in table.columns else "none"
        root = path.parent
        files = [root / p for p in table["path"]]
    else:
        if "csv" in (label_from, case_from):
            raise InputError(
                f"patch dataset {name!r}: label_from/case_from 'csv' needs path to be a CSV, {path} is a folder"
            )
        case_from = case_from or "none"
        root = path
        files = []
        for f in sorted(path.rglob("*")):
            if f.is_dir():
                continue
            rel = f.relative_to(root)
            if any(p.startswith(".") for p in rel.parts):
                skips["hidden file"] += 1
            elif f.suffix.lower() not in IMAGE_SUFFIXES:
                skips[f"not an image ({f.suffix or 'no suffix'})"] += 1
            elif label_from == "subfolder" and len(rel.parts) < 2:
                skips["not inside a class sub-folder"] += 1
            else:
                files.append(f)
    if case_from == "none" and ds.get("case_from") is None:
        log.warning(
            "patch dataset %s: no case ids (case_from not set), so every image is its own group; images of "
            "one patient may land in two splits. Set case_from (subfolder, filename or csv)",
            name,
        )
    patterns = {
        "label": re.compile(ds.get("label_pattern") or DEFAULT_LABEL_PATTERN) if label_from == "filename" else None,
        "case": re.compile(ds.get("case_pattern") or DEFAULT_CASE_PATTERN) if case_from == "filename" else None,
    }
    columns = {
        w: table[c].tolist()
        for w, c in (("label", "label"), ("case", "case_id"))
        if table is not None and c in table.columns
    }
    keep, labels, cases = [], [], []
    unmatched: dict[str, list[Path]] = {"label": [], "case": []}
    for i, f in enumerate(files):
        rel = f.relative_to(root) if f.is_relative_to(root) else Path(f.name)
        value = {}
        for what, source in (("label", label_from), ("case", case_from)):
            if source == "csv":
                value[what] = columns[what][i].strip() or None
            elif source == "subfolder":
                if what == "label":  # the top folder: <class>/.../<image>
                    value[what] = rel.parts[0] if len(rel.parts) >= 2 else None
                else:  # the folder holding the image, below the class folder if there is one
                    value[what] = rel.parent.name if len(rel.parts) >= (3 if label_from == "subfolder" else 2) else None
            elif source == "filename":
                value[what] = _match(patterns[what], f.name)
            else:
                value[what] = f"{name}:{rel.as_posix()}"
        bad = [w for w in ("label", "case") if value[w] is None]
        for w in bad:
            unmatched[w].append(f)
        if bad:
            continue
        keep.append(f)
        labels.append(value["label"])
        cases.append(value["case"])
    for what, source in (("label", label_from), ("case", case_from)):
        miss = unmatched[what]
        if not miss:
            continue
        how = {
            "filename": f"{what}_pattern '{patterns[what].pattern}' captures nothing in",
            "subfolder": f"{what}_from: subfolder finds no {what} folder for"
            if what == "case"
            else "no class folder for",
            "csv": f"empty {'label' if what == 'label' else 'case_id'} column for",
        }[source]
        if len(miss) == len(files):
            raise InputError(
                f"patch dataset {name!r}: {how} any of the {len(files)} files under {path} "
                f"(e.g. {miss[0].name})"
                + ("; case_from: subfolder needs <class>/<case>/<image> folders" if source == "subfolder" else "")
            )
        if not skip_unmatched:
            raise InputError(
                f"patch dataset {name!r}: {how} {len(miss)} file(s), e.g. {miss[0]}; fix the files or the "
                "pattern, or set skip_unmatched: true to skip them"
            )
        skips[f"{how} the file" if source == "filename" else how] += len(miss)
    skips.log(name)
    if not keep:
        skipped = "; ".join(f"{n} {reason}" for reason, n in sorted(skips.items()))
        hint = (
            "; put each class's images in its own sub-folder (path/<class>/...) or set label_from: filename with "
            "a label_pattern"
            if skips.get("not inside a class sub-folder")
            else ""
        )
        raise InputError(
            f"patch dataset {name!r}: no images found under {path} with a recognisable label"
            + (f" (skipped: {skipped}){hint}" if skipped else "")
        )
    classes = sorted(set(labels))
    label_names = ds.get("label_names")
    if label_names:
        unknown = sorted(set(classes) - set(label_names))
        if unknown:
            raise InputError(f"patch dataset {name!r}: classes {unknown} are not in its label_names {label_names}")
        classes = list(label_names)
    _warn_slide_like_classes(name, labels)
    idx = {c: i for i, c in enumerate(classes)}
    lab = np.array([idx[x] for x in labels], np.int64)
    # real case ids stay as given, so a patient's slides and patches share one split
    cases_arr = np.array(cases, dtype=object)
    slides = cases_arr  # a folder names no slides: the case (or the image) stands for it

    def read(rows):
        return [read_image(keep[r], f"patch dataset {name!r}") for r in rows]

    return [
        Part("all", "", stratified_sample(lab, ds.get("limit"), ds.get("seed", 0)), lab, cases_arr, slides, read)
    ], classes


def _warn_slide_like_classes(name: str, labels: list[str]) -> None:
    """Class folders named like slides or patients usually mean a wrong label_from."""
    counts = Counter(labels)
    tcga = [c for c in counts if TCGA_LIKE.match(c)]
    few = len(counts) >= 10 and float(np.median(list(counts.values()))) <= 3
    if tcga or few:
        log.warning(
            "patch dataset %s: its %d classes look like slide or case ids (%s; e.g. %s), not tissue classes; "
            "set label_from / label_pattern, and case_from for the ids",
            name,
            len(counts),
            "TCGA barcodes" if tcga else f"median {np.median(list(counts.values())):.0f} files per class",
            ", ".join(sorted(counts)[:3]),
        )


def resamples(dataset: dict) -> bool:
    """Whether a dataset's patches are resampled to ``tiling.mpp``."""
    r = dataset.get("resample")
    if r and not dataset.get("mpp"):
        raise InputError(f"patch dataset {dataset['name']!r}: resample: true needs the source's mpp (um per pixel)")
    return bool(dataset.get("mpp")) if r is None else bool(r)


def import_patches(
    dataset: dict,
    out_h5: str | os.PathLike,
    patch_size: int,
    batch_size: int = 256,
    progress: bool = True,
    target_mpp: float | None = None,
    qc: dict | None = None,
) -> int:
    """Import one ``patch_datasets`` entry into ``out_h5``; returns the number of patches.

    ``target_mpp`` (``tiling.mpp``) is needed when the dataset resamples (see :func:`resamples`);
    ``qc`` is the ``qc:`` section (optional blur filter / stain normalisation, :mod:`histosynth.qc`).
    """
    name, fmt, path = dataset["name"], dataset["format"], Path(dataset["path"])
    if not path.exists():
        raise InputError(f"patch dataset {name!r}: path {path} does not exist")
    resample = resamples(dataset)
    if resample and not target_mpp:
        raise InputError(f"patch dataset {name!r}: resampling needs the target tiling.mpp")
    if fmt == "medmnist":
        parts, n_classes = medmnist_parts(path, name, dataset)
        default_names = _labels_json(path) or [f"class_{i}" for i in range(n_classes)]
    elif fmt == "pcam":
        parts = pcam_parts(path, name, dataset)
        default_names = _labels_json(path if path.is_file() else path / "x") or PCAM_LABEL_NAMES
    elif fmt == "folder":
        parts, default_names = folder_parts(path, name, dataset)
    else:
        raise InputError(f"patch dataset {name!r}: unknown format {fmt!r}")
    label_names = dataset.get("label_names") or default_names
    mpp = dataset.get("mpp") or float("nan")
    total = sum(len(p.rows) for p in parts)
    spec = PatchFileSpec(
        patch_size=patch_size,
        label_names=label_names,
        coords_attrs=dict(
            patch_size=patch_size,
            patch_level=-1,
            downsample=np.array([1.0, 1.0]),
            name=name,
            mpp=float("nan"),
            magnification=float("nan"),
        ),
        root_attrs=dict(
            source=fmt,
            dataset=name,
            source_path=str(path),
            source_mpp=mpp,
            split_mode="official" if any(p.split for p in parts) else "resplit",
            parts=",".join(p.name for p in parts),
        ),
        extra={"official_split": "str"},
    )
    stored_mpps: Counter = Counter()
    patch_qc = PatchQC(qc, source=f"patch dataset {name!r}")
    with PatchWriter(out_h5, spec) as writer:
        bar = progress_bar(total=total, desc=f"import {name}", unit="patch", disable=not progress, mininterval=2)
        for part in parts:
            for s in range(0, len(part.rows), batch_size):
                rows = part.rows[s : s + batch_size]
                labels = part.labels[rows]
                if len(labels) and (labels.max() >= len(label_names) or labels.min() < 0):
                    raise InputError(
                        f"patch dataset {name!r}: label {int(labels.max())} outside label_names {label_names}"
                    )
                imgs = [to_uint8(im, f"patch dataset {name!r} part {part.name}") for im in part.read(rows)]
                arr, stored = _to_patches(imgs, name, patch_size, mpp, target_mpp if resample else None)
                stored_mpps.update(np.round(stored[np.isfinite(stored)], 4).tolist())
                writer.append(
                    patch_qc.apply(
                        PatchBatch(
                            arr,
                            np.full((len(arr), 2), NO_COORD),
                            labels,
                            part.slides[rows],
                            part.cases[rows],
                            stored,
                            extra={"official_split": [part.split] * len(arr)},
                        )
                    )
                )
                bar.update(len(arr))
        bar.close()
        patch_qc.finish(writer)
        uniform = next(iter(stored_mpps)) if len(stored_mpps) == 1 else float("nan")
        writer.set_coords_attrs(mpp=uniform, magnification=magnification_for_mpp(uniform))
    log.info(
        "patch dataset %s: imported %d patches (%s) from %s, %d classes, %s split%s",
        name,
        writer.n,
        ", ".join(f"{p.name}={len(p.rows)}" for p in parts),
        path,
        len(label_names),
        "official" if any(p.split for p in parts) else "pooled",
        f", resampled to {target_mpp} um/px" if resample else "",
    )
    return writer.n


def _to_patches(
    imgs: list, name: str, patch_size: int, mpp: float, target_mpp: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Resized patches and their um per pixel (NaN when the source's is unknown)."""
    if target_mpp is None:
        # resizing changes the pixel size: record it per patch when the source's is known
        stored = np.array([mpp * np.asarray(im).shape[0] / patch_size for im in imgs], np.float32)
        return np.stack([resize_image(im, patch_size) for im in imgs]), stored
    fov_px = patch_size * target_mpp / mpp  # source pixels covering one slide patch
    for im in imgs:
        side = min(np.asarray(im).shape[:2])
        if side < fov_px * (1 - FOV_TOLERANCE):
            raise InputError(
                f"patch dataset {name!r}: its images are {side} px at {mpp} um/px ({side * mpp:.0f} um), "
                f"smaller than a slide patch's field of view ({patch_size} px at tiling.mpp {target_mpp} = "
                f"{patch_size * target_mpp:.0f} um); lower tiling.mpp or tiling.patch_size, or set resample: false"
            )
    return np.stack([resize_image(im, patch_size, crop_px=fov_px) for im in imgs]), np.full(
        len(imgs), target_mpp, np.float32
    )
