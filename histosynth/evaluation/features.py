"""Image features for the generative metrics.

``inception``: clean-fid's own machinery — its torchscript Inception-v3 wrapper (``InceptionV3W``)
and its "clean" PIL-bicubic resizer to 299 px — loaded from a local weights file, never
downloaded at run time. ``embedding``: the embedding backbone of ``embed_patches`` (DINO-style),
for FD-DINO. Reference features of the real split are cached in ``results/eval/reference/``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path
from ..device import pick_device
from ..errors import InputError
from ..patchfile import PatchFile

log = logging.getLogger(__name__)
INCEPTION_FILE = "inception-2015-12-05.pt"


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
            "evaluation.fid_extractor: embedding to report a Fréchet distance on the embedding backbone instead.")
    folder = p.parent
    if p.name != INCEPTION_FILE:  # InceptionV3W looks for this exact name inside a folder
        folder = Path(tempfile.mkdtemp(prefix="histosynth-inception-"))
        (folder / INCEPTION_FILE).symlink_to(p.resolve())
    model = InceptionV3W(str(folder), download=False, resize_inside=False).to(device).eval()
    resize = build_resizer("clean")

    def extract(imgs: np.ndarray) -> np.ndarray:
        batch = torch.stack([torch.from_numpy(np.asarray(resize(im), dtype=np.float32)).permute(2, 0, 1) for im in imgs])
        with torch.inference_mode():
            return model(batch.to(device)).float().cpu().numpy()

    return extract


def embedding_extractor(embedder_dir, pooling: str, device: str):
    import torch

    from ..models.embedder import load_embedder

    emb = load_embedder(embedder_dir, pooling, device)

    def extract(imgs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return emb.forward(emb.preprocess(list(imgs)).to(device)).float().cpu().numpy()

    return extract


def make_extractor(kind: str, cfg: dict, embedder_dir, pooling: str):
    device = pick_device(cfg["device"])
    if kind == "inception":
        return inception_extractor(cfg["inception_weights"], device), f"inception-v3 (clean-fid, clean mode, {INCEPTION_FILE})"
    return embedding_extractor(embedder_dir, pooling, device), "embedding backbone"


def file_features(extract, patch_h5, batch: int = 64, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a patch file (at most ``limit`` patches, chosen at random but fixed)."""
    with PatchFile(patch_h5) as pf:
        idx = np.arange(len(pf))
        if limit and len(idx) > limit:
            idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
        batches = tqdm(pf.iter_batches(batch, idx), total=-(-len(idx) // batch), desc=f"features {Path(patch_h5).name}",
                       unit="batch", mininterval=5)
        feats = [extract(imgs) for _, imgs in batches]
        labels = pf.labels[idx]
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), labels


def write_features(path, feats: np.ndarray, labels: np.ndarray, attrs: dict) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h:
        h["features"] = feats.astype(np.float32)
        h["labels"] = labels
        h.attrs.update(attrs)


def read_features(path) -> tuple[np.ndarray, np.ndarray, dict]:
    with h5py.File(path, "r") as h:
        return h["features"][:], h["labels"][:], dict(h.attrs)


def reference_features(patch_h5, out_h5, kind: str, cfg: dict, embedder_dir, pooling: str, split: str) -> int:
    extract, name = make_extractor(kind, cfg, embedder_dir, pooling)
    feats, labels = file_features(extract, patch_h5, limit=cfg["max_reference"], seed=cfg["seed"])
    with PatchFile(patch_h5) as pf:
        names, size = pf.label_names, pf.patch_size
    write_features(out_h5, feats, labels, {"extractor": name, "kind": kind, "split": split, "n": len(feats), "resolution": size,
                                           "label_names": names, "source": str(patch_h5)})
    log.info("reference features: %d %s patches, %s, dim %d", len(feats), split, name, feats.shape[1] if len(feats) else 0)
    return len(feats)
