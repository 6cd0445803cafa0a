"""Image features for the generative metrics, and what makes two image sets comparable.

Three extractors (``evaluation.feature_extractor``):

- ``inception``: clean-fid's own machinery — its torchscript Inception-v3 wrapper (``InceptionV3W``)
  and its "clean" PIL-bicubic resizer to 299 px — loaded from a local weights file, never
  downloaded at run time. Only this one gives an "FID".
- ``backbone``: a DINO-style ViT (``evaluation.backbone``; ``embedding`` reuses the embedding
  section's backbone), as FD-DINO.
- ``classifier``: the penultimate layer (512-d) of the workflow's independent ResNet-18 judge
  (``train_judge``), a domain-trained Fréchet distance. The judge, not the filter's classifier, so
  the filtered set is not measured by the network that selected it.

Like for like: before any extractor, synthetic images are resized to the real patches' pixel
size (``harmonise``): both sets then cover the same field of view at the same µm/px, so the
extractor's own resize treats them alike. A synthetic image cannot gain field of view, so where it
covers less tissue than a real patch at the same µm/px (PathLDM's 256 px ``train.crop`` of 448 px
tiles), the real patches are centre-cropped to the synthetic field first (``reference_crop``).
Reference features of the real split are cached in ``results/eval/reference/{extractor}_{field}.h5``
(``field``: ``whole`` or the crop's px, ``reference_field``) with the pixel size, µm/px, crop and
labels they came from.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from ..progress import progress_bar

from ..atomic import atomic_path
from ..device import pick_device
from ..errors import InputError
from ..patchfile import PatchFile
from .metric_files import read_classifier_metrics

log = logging.getLogger(__name__)
INCEPTION_FILE = "inception-2015-12-05.pt"
EXTRACTORS = ("inception", "backbone", "classifier")
RANDOM_NOTE = "random network: mechanics only"
FOV_TOLERANCE = 0.05  # relative difference of field of view (µm) tolerated between real and synthetic
REFERENCE_FILE = "results/eval/reference/{kind}_{field}.h5"
WHOLE = "whole"


def reference_field(train: dict) -> str:
    """The field of view the synthetic images of an experiment cover (its ``train`` settings), as the
    reference file's ``{field}``: ``whole`` (the whole patch, at any resolution) or ``<crop>px``."""
    return f"{train['crop']}px" if train.get("crop") else WHOLE


def field_px(field: str) -> int | None:
    """``reference_field``'s name back to px (None: the whole patch)."""
    if field == WHOLE:
        return None
    if not (field.endswith("px") and field[:-2].isdigit()):
        raise InputError(f"reference field {field!r}: expected {WHOLE!r} or '<N>px'")
    return int(field[:-2])


def inception_extractor(weights: str, device: str):
    """clean-fid's Inception-v3 (clean mode) from a local file; a clear error when it is absent."""
    import torch
    from cleanfid.fid import build_resizer
    from cleanfid.inception_torchscript import InceptionV3W

    p = Path(weights) if weights else None
    if p is None or not p.is_file():
        raise InputError(
            f"FID needs clean-fid's Inception weights ({INCEPTION_FILE}), not found at {weights!r} "
            "(config evaluation.inception_weights). Download https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/"
            f"pretrained/metrics/{INCEPTION_FILE} once and point evaluation.inception_weights at it, or set "
            "evaluation.feature_extractor: backbone (a DINO-style backbone) or classifier (the workflow's ResNet-18) "
            "to report a Fréchet distance on other features instead."
        )
    if p.name == INCEPTION_FILE:
        model = InceptionV3W(str(p.parent), download=False, resize_inside=False)
    else:  # InceptionV3W looks for this exact name inside a folder: link it from a folder removed once loaded
        with tempfile.TemporaryDirectory(prefix="histosynth-inception-") as folder:
            (Path(folder) / INCEPTION_FILE).symlink_to(p.resolve())
            model = InceptionV3W(folder, download=False, resize_inside=False)
    model = model.to(device).eval()
    resize = build_resizer("clean")

    def extract(imgs: np.ndarray) -> np.ndarray:
        batch = torch.stack(
            [torch.from_numpy(np.asarray(resize(im), dtype=np.float32)).permute(2, 0, 1) for im in imgs]
        )
        with torch.inference_mode():
            return model(batch.to(device)).float().cpu().numpy()

    info = {
        "kind": "inception",
        "name": f"Inception-v3 (clean-fid, clean mode, {INCEPTION_FILE})",
        "random_network": False,
    }
    return extract, info


def backbone_extractor(model_dir, pooling: str, device: str):
    import torch

    from ..models.embedder import load_embedder

    emb = load_embedder(model_dir, pooling, device)
    source = emb.meta["backbone"]

    def extract(imgs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return emb.forward(emb.preprocess(list(imgs)).to(device)).float().cpu().numpy()

    info = {
        "kind": "backbone",
        "name": f"{source} ({pooling} token)" if pooling == "cls" else f"{source} (mean of patch tokens)",
        "random_network": source == "tiny",
    }
    return extract, info


def classifier_extractor(model_dir, device: str):
    """Penultimate (global-average-pooled) layer of a ResNet-18 saved by ``train_classifier``.

    It extracts the images it is given, resized to the network's input, and never applies the judge's
    ``field_px`` crop (as the filter and agreement do): ``file_features`` has already brought both sets to one
    field of view (``reference_crop``, ``harmonise``), so the reference of a ``whole`` field stays whole."""
    import torch

    from ..classifier import load_classifier, to_tensor

    net, ccfg = load_classifier(model_dir, device)
    net.fc = torch.nn.Identity()
    size = ccfg["image_size"]

    def extract(imgs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(to_tensor(imgs, size).to(ccfg["device"])).float().cpu().numpy()

    meta = _classifier_meta(model_dir)
    info = {
        "kind": "classifier",
        "name": f"ResNet-18 penultimate layer (512-d) of the independent judge, {size} px input"
        + (f", trained on {ccfg['field_px']} px fields of view" if ccfg["field_px"] else "")
        + (f", {meta}" if meta else ""),
        "random_network": False,
    }
    return extract, info


def _classifier_meta(model_dir) -> str:
    p = Path(model_dir).parent / "metrics.json"
    if not p.is_file():
        return ""
    m = read_classifier_metrics(p)
    return f"trained on {m.get('n_train')} real patches, weights {m.get('weights')}"


def make_extractor(kind: str, cfg: dict, model_dir, pooling: str):
    """``(extract, info)``: ``extract(uint8 (B,S,S,3)) -> (B, D)`` and a description for the metric JSON."""
    device = pick_device(cfg["device"])
    if kind == "inception":
        return inception_extractor(cfg["inception_weights"], device)
    if kind == "backbone":
        return backbone_extractor(model_dir, pooling, device)
    if kind == "classifier":
        return classifier_extractor(model_dir, device)
    raise InputError(f"evaluation.feature_extractor: unknown extractor {kind!r} (one of {', '.join(EXTRACTORS)})")


def harmonise(imgs: np.ndarray, size: int) -> np.ndarray:
    """Resize patches to ``size`` px (same field of view); antialiased Lanczos, as PIL downsamples."""
    if imgs.shape[1] == size:
        return imgs
    return (
        np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS)) for im in imgs])
        if len(imgs)
        else np.zeros((0, size, size, 3), np.uint8)
    )


def centre_crop(imgs: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` px of each patch (the same µm/px, a smaller field of view)."""
    y = (imgs.shape[1] - size) // 2
    x = (imgs.shape[2] - size) // 2
    return imgs[:, y : y + size, x : x + size]


def random_crop(imgs: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` px window of each patch at its own random offset (PathLDM's training crops, in pixels)."""
    ys = rng.integers(0, imgs.shape[1] - size + 1, len(imgs))
    xs = rng.integers(0, imgs.shape[2] - size + 1, len(imgs))
    return (
        np.stack([im[y : y + size, x : x + size] for im, y, x in zip(imgs, ys, xs)])
        if len(imgs)
        else imgs[:, :size, :size]
    )


def field_crop(px: int, field: int | None) -> int | None:
    """The crop (px) that cuts ``px`` px patches to a synthetic field of ``field`` px at the same µm/px; None
    where the field is the whole patch, or within ``FOV_TOLERANCE`` of it (the patch is used whole)."""
    if not field or field >= px * (1 - FOV_TOLERANCE):
        return None
    return int(field)


def file_features(
    extract,
    patch_h5,
    batch: int = 64,
    limit: int | None = None,
    seed: int = 0,
    size: int | None = None,
    crop: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a patch file (at most ``limit`` patches, chosen at random but fixed),
    each patch first centre-cropped to ``crop`` px, then resized to ``size`` px, when given."""
    with PatchFile(patch_h5) as pf:
        idx = np.arange(len(pf))
        if limit and len(idx) > limit:
            idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
        batches = progress_bar(
            pf.iter_batches(batch, idx),
            total=-(-len(idx) // batch),
            desc=f"features {Path(patch_h5).name}",
            unit="batch",
            mininterval=5,
        )
        feats = []
        for _, imgs in batches:
            imgs = centre_crop(imgs, crop) if crop else imgs
            feats.append(extract(harmonise(imgs, size) if size else imgs))
        labels = pf.labels[idx]
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), labels


def pixel_geometry(patch_h5) -> dict:
    """Pixel size and µm/px of a patch file (the median where patches differ, with the range)."""
    with PatchFile(patch_h5) as pf:
        mpp = pf.mpp[np.isfinite(pf.mpp)]
        size = pf.patch_size
    geo = {"px": int(size), "mpp": float(np.median(mpp)) if len(mpp) else None}
    if len(mpp) and mpp.max() > mpp.min() * 1.01:
        geo["mpp_range"] = [float(mpp.min()), float(mpp.max())]
    if len(mpp) < len(pf.mpp):
        geo["mpp_unknown"] = int(len(pf.mpp) - len(mpp))
    return geo


def write_features(path, feats: np.ndarray, labels: np.ndarray, attrs: dict) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h:
        h["features"] = feats.astype(np.float32)
        h["labels"] = labels
        h.attrs.update({k: json.dumps(v) if isinstance(v, dict) else v for k, v in attrs.items()})


def read_features(path) -> tuple[np.ndarray, np.ndarray, dict]:
    with h5py.File(path, "r") as h:
        attrs = dict(h.attrs)
    for k in ("extractor", "geometry"):
        if k in attrs:
            attrs[k] = json.loads(attrs[k])
    with h5py.File(path, "r") as h:
        return h["features"][:], h["labels"][:], attrs


def reference_crop(geo: dict, field: int | None) -> tuple[dict, int | None]:
    """The reference geometry once real patches are cut to a synthetic field of ``field`` px (at their own
    µm/px), and the crop in px; no crop where the field is the whole patch or within ``FOV_TOLERANCE``."""
    px = geo["px"]
    if field_crop(px, field) is None:
        return geo, None
    # the centre, not a seeded random window: the tiling grid is arbitrary with respect to the tissue, so the
    # central window is as typical as any, is the window training validates on, and needs no seed or draw order
    return {
        **geo,
        "px": int(field),
        "cropped_from_px": int(px),
        "crop": f"real patches centre-cropped from {px} to {field} px (the synthetic field of view, same µm/px)",
    }, int(field)


def reference_features(
    patch_h5, out_h5, kind: str, cfg: dict, model_dir, pooling: str, split: str, field: int | None = None
) -> int:
    """Features of the real reference split at its own pixel size, with its geometry and labels; centre-cropped
    to ``field`` px first when the synthetic images cover that smaller field (``reference_crop``)."""
    extract, info = make_extractor(kind, cfg, model_dir, pooling)
    geo, crop = reference_crop(pixel_geometry(patch_h5), field)
    feats, labels = file_features(extract, patch_h5, limit=cfg["max_reference"], seed=cfg["seed"], crop=crop)
    with PatchFile(patch_h5) as pf:
        names, n_available = pf.label_names, len(pf)
    write_features(
        out_h5,
        feats,
        labels,
        {
            "extractor": info,
            "kind": kind,
            "split": split,
            "n": len(feats),
            "n_available": n_available,
            "geometry": geo,
            "label_names": names,
            "source": str(patch_h5),
        },
    )
    log.info(
        "reference features: %d of %d %s patches, %s, dim %d%s",
        len(feats),
        n_available,
        split,
        info["name"],
        feats.shape[1] if len(feats) else 0,
        f"; {geo['crop']}" if crop else "",
    )
    return len(feats)
