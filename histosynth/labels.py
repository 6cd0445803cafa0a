"""Patch labels derived from the tissue itself.

``dab``: immunohistochemistry positivity by colour deconvolution (Ruifrok & Johnston, via
``skimage.color.rgb2hed``). A pixel is DAB-positive when its DAB optical density exceeds
``dab_threshold``; a patch is ``dab_positive`` when at least ``min_positive_fraction`` of its tissue
pixels are. This is what the demo uses: the brown (positive) epithelium and the blue
(haematoxylin-only) stroma of scikit-image's IHC image become two classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.color import hed_from_rgb, rgb2hed

DAB_LABEL_NAMES = ["dab_negative", "dab_positive"]


@dataclass(frozen=True)
class DabParams:
    dab_threshold: float  # DAB optical density above which a pixel is positive
    min_positive_fraction: float  # of tissue pixels, for a positive patch


def dab_positive_fraction(rgb: np.ndarray, dab_threshold: float, tissue: np.ndarray | None = None) -> float:
    """Fraction of (tissue) pixels whose DAB optical density is above ``dab_threshold``."""
    dab = rgb2hed(rgb)[..., 2]
    pos = dab > dab_threshold
    if tissue is not None:
        if not tissue.any():
            return 0.0
        return float(pos[tissue].mean())
    return float(pos.mean())


def _dab_lookup() -> np.ndarray:
    """(3, 256) float32: each channel's uint8 value -> its term of rgb2hed's DAB optical density.

    rgb2hed (skimage's ``separate_stains``) computes ``max(log(max(v/255, 1e-6)) / log(1e-6) @
    hed_from_rgb, 0)``; for uint8 input that is a sum of one table lookup per channel.
    """
    v = np.maximum(np.arange(256) / 255.0, 1e-6)
    return (np.log(v)[None, :] / np.log(1e-6) * hed_from_rgb[:, 2][:, None]).astype(np.float32)


_DAB_LUT = _dab_lookup()


def batch_dab_density(imgs: np.ndarray) -> np.ndarray:
    """DAB optical density (as ``rgb2hed(img)[..., 2]``) of a uint8 batch (..., 3), float32."""
    imgs = np.asarray(imgs, np.uint8)
    od = _DAB_LUT[0][imgs[..., 0]]
    od += _DAB_LUT[1][imgs[..., 1]]
    od += _DAB_LUT[2][imgs[..., 2]]
    return np.maximum(od, 0, out=od)


def dab_labels(imgs: np.ndarray, params: DabParams, tissue_masks: np.ndarray | None = None) -> np.ndarray:
    """0 = dab_negative, 1 = dab_positive, for a batch (N,S,S,3), computed on the whole batch at once."""
    pos = batch_dab_density(imgs) > params.dab_threshold
    if tissue_masks is None:
        frac = pos.reshape(len(imgs), -1).mean(axis=1)
    else:
        t = np.asarray(tissue_masks, bool).reshape(len(imgs), -1)
        frac = (pos.reshape(len(imgs), -1) & t).sum(axis=1) / np.maximum(t.sum(axis=1), 1)  # no tissue -> 0
    return (frac >= params.min_positive_fraction).astype(np.int64)
