"""Generative and classifier metrics, overall and per class.

- Fréchet distance (FID with Inception features, FD-DINO with the embedding backbone) and KID
  (unbiased, polynomial kernel) come from clean-fid (``frechet_distance``, ``kernel_distance``).
- Generative precision / recall (Kynkäänniemi et al. 2019, k = 3) and density / coverage (Naeem et
  al. 2020) follow the published definitions on k-NN radii, with scikit-learn's neighbour search.
- Classifier agreement (the LoRA paper): the ResNet-18 labels each synthetic image, the prompt's
  class is the truth; per-class precision / recall / F1 and their macro means from scikit-learn.
"""

from __future__ import annotations

import numpy as np

FD_MIN_N = 2  # below this a covariance is undefined


def frechet(real: np.ndarray, fake: np.ndarray) -> float:
    from cleanfid.fid import frechet_distance

    if len(real) < FD_MIN_N or len(fake) < FD_MIN_N:
        return float("nan")
    return float(frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)))


def kid(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> float:
    from cleanfid.fid import kernel_distance

    if len(real) < 2 or len(fake) < 2:
        return float("nan")
    state = np.random.get_state()
    np.random.seed(seed)  # clean-fid draws its subsets from numpy's global generator
    try:
        return float(kernel_distance(real, fake, num_subsets=100, max_subset_size=1000))
    finally:
        np.random.set_state(state)


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    return nn.kneighbors(x)[0][:, k]  # column 0 is the point itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 2048) -> dict:
    """Precision, recall (k-NN manifolds) and density, coverage; NaN where a set has <= k points."""
    from sklearn.metrics import pairwise_distances

    if len(real) <= k or len(fake) <= k:
        return {"precision": float("nan"), "recall": float("nan"), "density": float("nan"), "coverage": float("nan"), "k": k}
    r_rad, f_rad = _kth_radius(real, k), _kth_radius(fake, k)
    inside_real = np.zeros(len(fake), bool)  # fake point inside some real ball (precision)
    count_real = np.zeros(len(fake))  # how many real balls contain it (density)
    covered = np.zeros(len(real), bool)  # real point whose nearest fake is inside its own ball (coverage)
    nearest_fake = np.full(len(real), np.inf)
    inside_fake = np.zeros(len(real), bool)  # real point inside some fake ball (recall)
    for s in range(0, len(fake), chunk):
        d = pairwise_distances(real, fake[s : s + chunk])  # (n_real, chunk)
        within_r = d < r_rad[:, None]
        inside_real[s : s + chunk] = within_r.any(0)
        count_real[s : s + chunk] = within_r.sum(0)
        nearest_fake = np.minimum(nearest_fake, d.min(1))
        inside_fake |= (d < f_rad[None, s : s + chunk]).any(1)
    covered = nearest_fake < r_rad
    return {"precision": float(inside_real.mean()), "recall": float(inside_fake.mean()),
            "density": float(count_real.mean() / k), "coverage": float(covered.mean()), "k": k}


def per_class(fn, real, real_labels, fake, fake_labels, names) -> dict:
    """``fn(real, fake)`` overall and for each class present on both sides."""
    out = {"overall": fn(real, fake)}
    for c, name in enumerate(names):
        r, f = real[real_labels == c], fake[fake_labels == c]
        if len(r) and len(f):
            out[name] = fn(r, f)
    return out


def classifier_agreement(prompt_labels: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    """Per-class P/R/F1 with the prompt's class as truth, and the macro means (as the LoRA paper)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    present = sorted(set(prompt_labels.tolist()))
    p, r, f, s = precision_recall_fscore_support(prompt_labels, predicted, labels=present, zero_division=0)
    return {
        "n": int(len(prompt_labels)), "accuracy": float(accuracy_score(prompt_labels, predicted)) if len(prompt_labels) else float("nan"),
        "macro_precision": float(np.mean(p)) if len(p) else float("nan"), "macro_recall": float(np.mean(r)) if len(r) else float("nan"),
        "macro_f1": float(np.mean(f)) if len(f) else float("nan"),
        "per_class": {names[c]: {"precision": float(pi), "recall": float(ri), "f1": float(fi), "n": int(si)}
                      for c, pi, ri, fi, si in zip(present, p, r, f, s)},
    }
