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
extractor's own resize treats them alike. Reference features of the real split are cached in
``results/eval/reference/{extractor}.h5`` with the pixel size, µm/px and labels they came from.
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
    """Penultimate (global-average-pooled) layer of a ResNet-18 saved by ``train_classifier``."""
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


def file_features(
    extract, patch_h5, batch: int = 64, limit: int | None = None, seed: int = 0, size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a patch file (at most ``limit`` patches, chosen at random but fixed),
    each patch first resized to ``size`` px when given."""
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
        feats = [extract(harmonise(imgs, size) if size else imgs) for _, imgs in batches]
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


def reference_features(patch_h5, out_h5, kind: str, cfg: dict, model_dir, pooling: str, split: str) -> int:
    """Features of the real reference split at its own pixel size, with its geometry and labels."""
    extract, info = make_extractor(kind, cfg, model_dir, pooling)
    feats, labels = file_features(extract, patch_h5, limit=cfg["max_reference"], seed=cfg["seed"])
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
            "geometry": pixel_geometry(patch_h5),
            "label_names": names,
            "source": str(patch_h5),
        },
    )
    log.info(
        "reference features: %d of %d %s patches, %s, dim %d",
        len(feats),
        n_available,
        split,
        info["name"],
        feats.shape[1] if len(feats) else 0,
    )
    return len(feats)
