import numpy as np
import pytest
from _paper_setup import tissue_like, write_patches
from histosynth.config import default_config
from histosynth.embed import embed_patches, load_embeddings
from histosynth.errors import InputError
from histosynth.morphology import cluster_morphology


def test_clusters_separate_distinct_tissues(patches, embedder, tmp_path):
    feats, labels = {}, {}
    for split, p in patches.items():
        embed_patches(p, embedder, tmp_path / f"{split}.h5", "cls", 16, 0, progress=False)
        feats[split], _ = load_embeddings(tmp_path / f"{split}.h5", p)
        labels[split] = np.arange(len(feats[split])) % 2
    cfg = default_config(morphology={"k": 2, "sweep": [2, 3, 4]})["morphology"]
    out = {
        k: tmp_path / f"{k}.{'png' if k in ('sweep', 'examples') else 'tsv'}"
        for k in ("assignments", "centroids", "sizes", "sweep", "examples")
    }
    df = cluster_morphology(feats["train"], feats, labels, cfg, out, patches["train"])
    assert set(df.split) == {"train", "val", "test"} and len(df) == 60
    # with two well-separated tissues, k=2 clusters coincide with the labels
    agree = (df.cluster == df.label).mean()
    assert max(agree, 1 - agree) > 0.95
    assert all(p.stat().st_size > 0 for p in out.values())
    cfg["per_label"] = True
    per = cluster_morphology(feats["train"], feats, labels, cfg, out, patches["train"])
    assert per.groupby("label")["cluster"].nunique().tolist() == [2, 2]  # k clusters within each label
    cfg["per_label"] = False
    cfg["k"] = 100
    with pytest.raises(InputError, match="morphology.k = 100"):
        cluster_morphology(feats["train"], feats, labels, cfg, out, patches["train"])


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
    out = {
        k: tmp_path / f"{k}.{'png' if k in ('sweep', 'examples') else 'tsv'}"
        for k in ("assignments", "centroids", "sizes", "sweep", "examples")
    }
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
