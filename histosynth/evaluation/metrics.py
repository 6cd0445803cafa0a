"""Generative and classifier metrics, overall and per class.

- Fréchet distance (FID with Inception features, FD-DINO with the embedding backbone) and KID
  (unbiased, polynomial kernel) come from clean-fid (``frechet_distance``, ``kernel_distance``).
- Generative precision / recall (Kynkäänniemi et al. 2019, k = 3) and density / coverage (Naeem et
  al. 2020) follow the published definitions on k-NN radii, with scikit-learn's neighbour search.
- Classifier agreement (the LoRA paper): the ResNet-18 labels each synthetic image, the prompt's
  class is the truth; per-class precision / recall / F1 and their macro means from scikit-learn.
- Like for like: ``match_classes`` gives both sets the same class make-up before an overall distance.
- Noise: ``bootstrap_interval`` gives a classifier number (macro AUC, macro F1) its 95 % percentile
  interval over seeded, class-stratified resamples of the scored patches (scikit-learn's ``resample``).
"""

from __future__ import annotations

import numpy as np

from .metric_files import with_interval

FD_MIN_N = 2  # below this a covariance is undefined
BOOTSTRAP_RESAMPLES = 200  # a stable 95 % interval; AUC + F1 of 9 classes on 5000 patches: ~15 s (2 busy cores)
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_SEED = 0  # the same resamples for every classifier scored on the same patches
BOOTSTRAP_METHOD = (
    f"{BOOTSTRAP_LEVEL * 100:.0f} % percentile bootstrap: {BOOTSTRAP_RESAMPLES} class-stratified resamples "
    f"(seed {BOOTSTRAP_SEED}) of the scored patches"
)


def bootstrap_interval(statistic, labels: np.ndarray, *arrays: np.ndarray) -> tuple[float, float] | None:
    """The ``BOOTSTRAP_LEVEL`` percentile interval of ``statistic(labels, *arrays)`` over ``BOOTSTRAP_RESAMPLES``
    seeded resamples of the rows, each keeping every class's count (so no resample loses a class);
    None for fewer than two rows or when the statistic is undefined on the resamples."""
    from sklearn import config_context
    from sklearn.utils import resample

    labels = np.asarray(labels)
    if len(labels) < 2:
        return None
    rng = np.random.RandomState(BOOTSTRAP_SEED)
    rows = np.arange(len(labels))
    values = []
    # the inputs were checked once by the point estimate: sklearn's checks on every resample are most of the time
    with config_context(assume_finite=True, skip_parameter_validation=True):
        for _ in range(BOOTSTRAP_RESAMPLES):
            idx = resample(rows, replace=True, stratify=labels, random_state=rng)
            values.append(statistic(labels[idx], *(a[idx] for a in arrays)))
    values = np.asarray(values, float)
    if not np.isfinite(values).all():
        return None
    tail = (1 - BOOTSTRAP_LEVEL) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


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
        return {
            "precision": float("nan"),
            "recall": float("nan"),
            "density": float("nan"),
            "coverage": float("nan"),
            "k": k,
        }
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
    return {
        "precision": float(inside_real.mean()),
        "recall": float(inside_fake.mean()),
        "density": float(count_real.mean() / k),
        "coverage": float(covered.mean()),
        "k": k,
    }


def per_class(fn, real, real_labels, fake, fake_labels, names) -> dict:
    """``fn(real, fake)`` overall and for each class present on both sides."""
    out = {"overall": fn(real, fake)}
    for c, name in enumerate(names):
        r, f = real[real_labels == c], fake[fake_labels == c]
        if len(r) and len(f):
            out[name] = fn(r, f)
    return out


MATCH_MODES = ("reference", "synthetic", "off")


def class_name(c: int, names: list[str]) -> str:
    return names[c] if 0 <= c < len(names) else "unlabelled"


def match_classes(
    real_labels: np.ndarray, fake_labels: np.ndarray, mode: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Row indices of both sets with the same class make-up, so an overall distance compares like with like.

    ``reference``: the real set is drawn (without replacement, seeded) to the synthetic set's class
    proportions; ``synthetic``: the synthetic set is drawn to the real one's; ``off``: both as they are.
    Classes present on one side only are left out of both (and listed), except with ``off``.
    """
    rng = np.random.default_rng(seed)
    r_cls, r_cnt = np.unique(real_labels, return_counts=True)
    f_cls, f_cnt = np.unique(fake_labels, return_counts=True)
    rc, fc = dict(zip(r_cls.tolist(), r_cnt.tolist())), dict(zip(f_cls.tolist(), f_cnt.tolist()))
    info = {"mode": mode, "only_real": sorted(set(rc) - set(fc)), "only_synthetic": sorted(set(fc) - set(rc))}
    if mode == "off":
        return np.arange(len(real_labels)), np.arange(len(fake_labels)), info
    if mode not in MATCH_MODES:
        raise ValueError(f"evaluation.match_classes: {mode!r} is not one of {MATCH_MODES}")
    common = sorted(set(rc) & set(fc))
    if not common:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), info
    # the set that is drawn (``draw``) follows the proportions of the other (``target``)
    target, draw = (fc, rc) if mode == "reference" else (rc, fc)
    total = sum(target[c] for c in common)
    share = {c: target[c] / total for c in common}
    n = min(int(np.floor(draw[c] / share[c] + 1e-9)) for c in common)  # largest N the scarcest class allows
    want = {c: min(draw[c], max(1, int(round(n * share[c])))) for c in common}
    draw_labels, keep_labels = (real_labels, fake_labels) if mode == "reference" else (fake_labels, real_labels)
    drawn = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(draw_labels == c), want[c], replace=False) for c in common])
    )
    kept = np.flatnonzero(np.isin(keep_labels, common))
    return (drawn, kept, info) if mode == "reference" else (kept, drawn, info)


def class_counts(labels: np.ndarray, names: list[str]) -> dict:
    c, n = np.unique(labels, return_counts=True)
    return {class_name(int(k), names): int(v) for k, v in zip(c, n)}


def macro_over_present(test: dict, names: list[str]) -> dict:
    """Macro F1 over the classes the test split contains, and the classes it lacks (scikit-learn's
    report counts an absent class as F1 = 0, which reads as a failure that never happened)."""
    per = test.get("per_class") or {}
    present = [c for c in names if (per.get(c) or {}).get("support", 0) > 0]
    absent = [c for c in names if c not in present]
    f1 = [per[c]["f1-score"] for c in present]
    return {
        "macro_f1": float(np.mean(f1)) if f1 else float("nan"),
        "classes_absent_from_test": absent,
        "macro_over": f"{len(present)} of {len(names)} classes",
    }


def classifier_agreement(prompt_labels: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    """Per-class P/R/F1 with the prompt's class as truth, and the macro means (as the LoRA paper)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    present = sorted(set(prompt_labels.tolist()))
    p, r, f, s = precision_recall_fscore_support(prompt_labels, predicted, labels=present, zero_division=0)

    def macro_f1(y, pred):
        return float(np.mean(precision_recall_fscore_support(y, pred, labels=present, zero_division=0)[2]))

    return {
        "n": int(len(prompt_labels)),
        "accuracy": float(accuracy_score(prompt_labels, predicted)) if len(prompt_labels) else float("nan"),
        "macro_precision": float(np.mean(p)) if len(p) else float("nan"),
        "macro_recall": float(np.mean(r)) if len(r) else float("nan"),
        # with its bootstrap interval over the set's images: a difference inside it is noise
        **with_interval(
            "macro_f1",
            float(np.mean(f)) if len(f) else float("nan"),
            bootstrap_interval(macro_f1, prompt_labels, predicted),
        ),
        "interval_method": BOOTSTRAP_METHOD,
        # macro means run over the classes the set contains; the others are named, not counted as 0
        "macro_over": f"{len(present)} of {len(names)} classes",
        "classes_absent": [class_name(c, names) for c in range(len(names)) if c not in present],
        "per_class": {
            class_name(c, names): {"precision": float(pi), "recall": float(ri), "f1": float(fi), "n": int(si)}
            for c, pi, ri, fi, si in zip(present, p, r, f, s)
        },
    }
