import numpy as np
import pytest
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
