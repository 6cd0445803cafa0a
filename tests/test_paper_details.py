"""The papers' details as options: Osorio et al.'s outlier removal and UMAP, PathLDM's flips, crops,
TIL-aware prompt dropout and 154-token text encoding."""

import numpy as np
import pandas as pd
import pytest

from histosynth.config import default_config
from histosynth.errors import InputError
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter


def tissue_like(rng, n, size=32):
    """Pink, textured patches with many small bright regions: no outlier criterion fires."""
    base = np.array([200, 120, 170], np.float64)
    noise = rng.normal(0, 40, (n, size, size, 1))
    return np.clip(base + noise * np.array([1.0, 1.2, 0.8]), 0, 255).astype(np.uint8)


def write_patches(path, imgs, labels):
    n = len(imgs)
    with PatchWriter(path, PatchFileSpec(imgs.shape[1], ["a", "b"], {})) as w:
        w.append(PatchBatch(imgs, np.zeros((n, 2)), np.asarray(labels), ["s"] * n, ["c"] * n, np.ones(n)))
    return path


def test_outlier_criteria_flag_dark_blank_and_blurred_patches():
    from histosynth.morphology import outlier_features, outlier_mask

    rng = np.random.default_rng(0)
    good = tissue_like(rng, 3)
    dark = (good // 4).astype(np.uint8)  # mean V far below 70
    blank = np.full((1, 32, 32, 3), 235, np.uint8)  # white background: no saturation, no texture
    feats = outlier_features(np.concatenate([good, dark[:1], blank]))
    cfg = default_config()["morphology"]["outliers"]
    mask, counts = outlier_mask(feats, cfg)
    assert mask.tolist() == [False, False, False, True, True]
    assert counts["min_mean_v"] == 1 and counts["min_mean_s"] == 1 and counts["min_laplacian_var"] >= 1
    # a flat patch has a single contour (or none), a textured one many
    assert feats["n_contour"].iloc[4] == 1 and (feats["n_contour"].iloc[:3] >= cfg["min_contours"]).all()


def test_outliers_are_left_out_of_the_clustering_fit_and_marked(tmp_path):
    from histosynth.morphology import cluster_morphology

    rng = np.random.default_rng(1)
    imgs = np.concatenate([tissue_like(rng, 8), np.full((2, 32, 32, 3), 235, np.uint8)])
    labels = np.array([0, 1] * 5)
    train = write_patches(tmp_path / "train.h5", imgs, labels)
    # the two blank patches sit far away in embedding space: fitted on, they would take a cluster of their own
    emb = np.concatenate([rng.normal(0, 1, (8, 4)), np.full((2, 4), 50.0)])
    cfg = {**default_config()["morphology"], "k": 2, "sweep": [2], "examples_per_cluster": 2}
    out = {k: tmp_path / f"{k}.{'png' if k in ('sweep', 'examples') else 'tsv'}"
           for k in ("assignments", "centroids", "sizes", "sweep", "examples")}
    plain = cluster_morphology(emb, {"train": emb}, {"train": labels}, cfg, out, train)
    assert set(plain.loc[[8, 9], "cluster"]) != set(plain.loc[:7, "cluster"]) and not plain["outlier"].any()
    cfg["outliers"] = {**cfg["outliers"], "activate": True}
    df = cluster_morphology(emb, {"train": emb}, {"train": labels}, cfg, out, train)
    assert df["outlier"].tolist() == [False] * 8 + [True] * 2
    assert df.loc[:7, "cluster"].nunique() == 2  # both clusters split the real tissue
    assert len(df) == 10  # every patch keeps a cluster (and so a prompt)
    cfg["outliers"] = {**cfg["outliers"], "min_mean_v": 256}
    with pytest.raises(InputError, match="morphology.outliers"):
        cluster_morphology(emb, {"train": emb}, {"train": labels}, cfg, out, train)
