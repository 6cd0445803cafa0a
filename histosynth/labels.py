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
from skimage.color import rgb2hed

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


def dab_labels(imgs: np.ndarray, params: DabParams, tissue_masks: np.ndarray | None = None) -> np.ndarray:
    """0 = dab_negative, 1 = dab_positive, for a batch (N,S,S,3)."""
    out = np.empty(len(imgs), np.int64)
    for i, img in enumerate(imgs):
        t = None if tissue_masks is None else tissue_masks[i]
        out[i] = int(dab_positive_fraction(img, params.dab_threshold, t) >= params.min_positive_fraction)
    return out
