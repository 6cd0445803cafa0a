"""``cluster_morphology``: k-means "morphology types" on patch embeddings (Osorio et al.).

Scaling (MinMax as the paper, or standard) and k-means are fitted on the training split and
applied to every split. With ``morphology.outliers.activate``, training patches that Osorio et al.'s
HSV / contour criteria call outliers (dark, unsaturated, flat or featureless: :func:`outlier_mask`)
are left out of that fit; every patch is still assigned its nearest cluster (so each has a prompt),
and ``clusters.tsv`` marks the outliers. Outputs: per-patch assignments, centroids, cluster sizes, a k-sweep plot
(inertia and silhouette) to help choose k, and a grid of the patches nearest each centroid.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from .atomic import atomic_path
from .errors import InputError
from .patchfile import PatchFile
from .plots import image_grid, k_sweep_plot
from .progress import progress_bar

log = logging.getLogger(__name__)


def _scaler(kind: str):
    return MinMaxScaler() if kind == "minmax" else StandardScaler()


# Osorio et al.'s outlier features (rods-biogen extract_hsv_features / set_remove_label): a patch is an
# outlier when any of them is below its threshold in morphology.outliers
OUTLIER_FEATURES = {
    "min_mean_v": "mean_V",
    "min_mean_s": "mean_S",
    "min_std_v": "std_V",
    "min_std_s": "std_S",
    "min_std_h": "std_H",
    "min_laplacian_var": "var_L",
    "min_contours": "n_contour",
}


def outlier_features(imgs: np.ndarray) -> pd.DataFrame:
    """Per patch (uint8 RGB): mean/std of PIL's 0-255 HSV channels, the variance of the grey image's
    Laplacian (sharpness) and the number of contours of the grey image thresholded at 150 (outer
    borders of 8-connected bright regions plus their holes, as OpenCV's findContours with RETR_TREE)."""
    from PIL import Image
    from scipy import ndimage
    from skimage.measure import label

    rows = []
    for im in imgs:
        pil = Image.fromarray(im)
        hsv = np.asarray(pil.convert("HSV"), np.float64)
        grey = np.asarray(pil.convert("L"))
        bright = grey > 150
        holes = label(~bright, connectivity=1)
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        n_holes = len(set(np.unique(holes).tolist()) - set(border.tolist()) - {0})
        rows.append(
            {
                "mean_V": hsv[..., 2].mean(),
                "std_V": hsv[..., 2].std(),
                "mean_S": hsv[..., 1].mean(),
                "std_S": hsv[..., 1].std(),
                "std_H": hsv[..., 0].std(),
                "var_L": ndimage.laplace(grey.astype(np.float64), mode="mirror").var(),
                "n_contour": int(label(bright, connectivity=2).max()) + n_holes,
            }
        )
    return pd.DataFrame(rows, columns=list(OUTLIER_FEATURES.values()))


def outlier_mask(feats: pd.DataFrame, cfg: dict) -> tuple[np.ndarray, dict]:
    """True for outliers; and how many patches each criterion flags."""
    flags = {key: feats[col].to_numpy() < cfg[key] for key, col in OUTLIER_FEATURES.items()}
    return np.logical_or.reduce(list(flags.values())), {k: int(v.sum()) for k, v in flags.items()}


def train_outliers(train_patches, cfg: dict, batch: int = 256) -> np.ndarray:
    """Outlier mask of the training patches under ``morphology.outliers``; counts are logged."""
    with PatchFile(train_patches) as pf:
        feats = pd.concat([outlier_features(imgs) for _, imgs in pf.iter_batches(batch)], ignore_index=True)
    mask, counts = outlier_mask(feats, cfg)
    log.info(
        "morphology outliers (Osorio et al.'s HSV / contour criteria): %d of %d training patches left out of the "
        "clustering fit; per criterion: %s",
        mask.sum(),
        len(mask),
        counts,
    )
    if mask.all():
        raise InputError(
            f"morphology.outliers: every one of the {len(mask)} training patches of {train_patches} is an outlier "
            f"(per criterion: {counts}); lower the thresholds or set morphology.outliers.activate: false"
        )
    return mask


def fit_clusters(feats: np.ndarray, k: int, scaler: str, n_init: int, seed: int):
    if k > len(feats):
        raise InputError(
            f"morphology.k = {k} is larger than the number of training patches ({len(feats)}); lower morphology.k"
        )
    sc = _scaler(scaler).fit(feats)
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(sc.transform(feats))
    return sc, km


def k_sweep(feats: np.ndarray, ks: list[int], scaler: str, seed: int, out_png, chosen_k: int) -> pd.DataFrame:
    """Inertia (elbow) and silhouette for each k that the data allows; plotted to ``out_png``."""
    x = _scaler(scaler).fit_transform(feats)
    rows = []
    for k in progress_bar(sorted({k for k in ks if 2 <= k < len(x)}), desc="k-sweep", unit="k"):
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x)
        sil = silhouette_score(x, km.labels_, sample_size=min(len(x), 5000), random_state=seed)
        rows.append({"k": k, "inertia": km.inertia_, "silhouette": sil})
    df = pd.DataFrame(rows, columns=["k", "inertia", "silhouette"])
    k_sweep_plot(df, out_png, len(x), chosen_k)
    return df


def cluster_morphology(
    train_emb: np.ndarray,
    split_embs: dict[str, np.ndarray],
    split_labels: dict[str, np.ndarray],
    cfg: dict,
    out: dict,
    train_patches: str | os.PathLike,
) -> pd.DataFrame:
    """Fit on train, assign every split; write ``out['assignments'|'centroids'|'sizes'|'sweep'|'examples']``."""
    k, per_label = cfg["k"], cfg["per_label"]
    outliers = (
        train_outliers(train_patches, cfg["outliers"])
        if cfg["outliers"]["activate"]
        else np.zeros(len(train_emb), bool)
    )
    groups = (
        {None: np.ones(len(train_emb), bool)}
        if not per_label
        else {lab: split_labels["train"] == lab for lab in np.unique(split_labels["train"])}
    )
    rows, centroids = [], []
    for lab, sel in groups.items():
        sc, km = fit_clusters(train_emb[sel & ~outliers], k, cfg["scaler"], cfg["n_init"], cfg["seed"])
        for split, feats in split_embs.items():
            mask = np.ones(len(feats), bool) if lab is None else split_labels[split] == lab
            if not mask.any():
                continue
            x = sc.transform(feats[mask])
            assign = km.predict(x)
            dist = km.transform(x)[np.arange(len(x)), assign]
            for idx, c, d, label in zip(np.flatnonzero(mask), assign, dist, split_labels[split][mask]):
                rows.append(
                    {
                        "split": split,
                        "index": int(idx),
                        "label": int(label),
                        "cluster": int(c),
                        "distance": float(d),
                        "outlier": bool(split == "train" and outliers[idx]),
                    }
                )
        for c, center in enumerate(sc.inverse_transform(km.cluster_centers_)):
            centroids.append(
                {
                    "label_group": "all" if lab is None else int(lab),
                    "cluster": c,
                    **{f"f{j}": float(v) for j, v in enumerate(center)},
                }
            )
    df = pd.DataFrame(rows)
    sizes = df[df.split == "train"].groupby(["label", "cluster"]).size().rename("n_train").reset_index()
    for name, frame in (("assignments", df), ("centroids", pd.DataFrame(centroids)), ("sizes", sizes)):
        with atomic_path(out[name]) as tmp:
            frame.to_csv(tmp, sep="\t", index=False)
    k_sweep(train_emb[~outliers], cfg["sweep"], cfg["scaler"], cfg["seed"], out["sweep"], k)
    # the patches nearest each centroid show what a "morphology type" looks like
    train = df[(df.split == "train") & ~df.outlier].sort_values("distance")
    grid_rows = []
    with PatchFile(train_patches) as pf:
        names = list(pf.label_names)
        keys = ["label", "cluster"] if per_label else ["cluster"]
        for key, part in train.groupby(keys, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            idx = part["index"].to_numpy()[: cfg["examples_per_cluster"]]
            title = (f"{pf.label_names[key[0]]} / " if per_label else "") + f"cluster {key[-1]} (n={len(part)})"
            grid_rows.append((title, pf.read(idx)))
    image_grid(grid_rows, out["examples"], columns=cfg["examples_per_cluster"])
    # "label: n, n, ..." per label, so the counts read as label x cluster, not one flat list
    by_label = "; ".join(
        f"{names[int(lab)] if 0 <= int(lab) < len(names) else lab}: "
        + ", ".join(f"cluster {int(c)}={int(n)}" for c, n in zip(g["cluster"], g["n_train"]))
        for lab, g in sizes.groupby("label")
    )
    log.info(
        "morphology: k=%d%s on %d training patches; training patches per label and cluster: %s",
        k,
        " per label" if per_label else "",
        len(train_emb),
        by_label,
    )
    return df
