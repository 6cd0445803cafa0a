"""The offline 'tiny' models go through the same from_pretrained code as real ones."""

import json

import numpy as np
import pytest

from histosynth.config import default_config
from histosynth.embed import embed_patches, load_embeddings
from histosynth.errors import InputError
from histosynth.models.base_model import check_base_model_dir, prepare_base_model
from histosynth.models.embedder import prepare_embedder
from histosynth.morphology import cluster_morphology
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    """Two visually distinct groups of patches (pink vs blue textures)."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("p")
    paths = {}
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        labels = np.arange(n) % 2
        base = np.where(labels[:, None, None, None] == 0, [200, 120, 170], [90, 90, 200]).astype(float)
        imgs = np.clip(base + rng.normal(0, 20, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
        paths[split] = d / f"{split}.h5"
        with PatchWriter(paths[split], PatchFileSpec(32, ["pink", "blue"], {})) as w:
            w.append(PatchBatch(imgs, np.zeros((n, 2)), labels, ["s"] * n, [f"{split}{i}" for i in range(n)], np.ones(n)))
    return paths


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return prepare_embedder("tiny", tmp_path_factory.mktemp("m") / "embedder", image_size=32)


def test_embeddings_are_aligned_and_deterministic(patches, embedder, tmp_path):
    out1, out2 = tmp_path / "e1.h5", tmp_path / "e2.h5"
    assert embed_patches(patches["train"], embedder, out1, "cls", 16, 0, progress=False) == 40
    embed_patches(patches["train"], embedder, out2, "cls", 7, 2, progress=False)  # other batching, 2 workers
    f1, attrs = load_embeddings(out1, patches["train"])
    f2, _ = load_embeddings(out2, patches["train"])
    assert f1.shape == (40, 64) and np.allclose(f1, f2, atol=1e-5)
    assert attrs["backbone"] == "tiny" and attrs["pooling"] == "cls" and "image_mean" in attrs["preprocessing"]
    embed_patches(patches["train"], embedder, tmp_path / "m.h5", "mean", 16, 0, progress=False)
    assert not np.allclose(load_embeddings(tmp_path / "m.h5", patches["train"])[0], f1)


def test_misaligned_embeddings_are_refused(patches, embedder, tmp_path):
    embed_patches(patches["val"], embedder, tmp_path / "v.h5", "cls", 16, 0, progress=False)
    with pytest.raises(InputError, match="do not line up"):
        load_embeddings(tmp_path / "v.h5", patches["test"])


def test_clusters_separate_distinct_tissues(patches, embedder, tmp_path):
    feats, labels = {}, {}
    for split, p in patches.items():
        embed_patches(p, embedder, tmp_path / f"{split}.h5", "cls", 16, 0, progress=False)
        feats[split], _ = load_embeddings(tmp_path / f"{split}.h5", p)
        labels[split] = np.arange(len(feats[split])) % 2
    cfg = default_config(morphology={"k": 2, "sweep": [2, 3, 4]})["morphology"]
    out = {k: tmp_path / f"{k}.{'png' if k in ('sweep', 'examples') else 'tsv'}" for k in ("assignments", "centroids", "sizes", "sweep", "examples")}
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


def test_classifier_backbone_embeds_with_the_trained_resnet(patches, tmp_path):
    from histosynth.classifier import build_resnet18, save_classifier

    folder = tmp_path / "classifier"
    save_classifier(build_resnet18(2), folder, ["pink", "blue"], 32)
    assert embed_patches(patches["val"], folder, tmp_path / "v.h5", "cls", 4, 0, progress=False) == 10
    feats, attrs = load_embeddings(tmp_path / "v.h5", patches["val"])
    assert feats.shape == (10, 512) and attrs["backbone"] == "classifier" and str(folder) in attrs["trained_on"]
    # it is read where train_classifier wrote it, never prepared as a ViT
    with pytest.raises(InputError, match="embedding.backbone only, not to evaluation.backbone"):
        prepare_embedder("classifier", tmp_path / "embedder")


def test_tiny_base_model_is_a_loadable_diffusers_folder(tmp_path):
    from diffusers import StableDiffusionPipeline

    out = prepare_base_model("tiny", tmp_path / "base")
    check_base_model_dir(out)
    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert pipe.tokenizer("histology")["input_ids"][0] == 49406
    assert json.loads((out / "histosynth_source.json").read_text()) == {"base_model": "tiny"}
    (out / "vae" / "config.json").unlink()
    (out / "vae").rename(tmp_path / "vae_moved")
    with pytest.raises(InputError, match=r"missing component folder\(s\) \['vae'\]"):
        check_base_model_dir(out)


def test_diffusers_empty_float32_warning_is_silenced_and_others_are_not(tmp_path):
    """diffusers' "should be kept in float32: []" on every .to(dtype) says nothing; real warnings stay."""
    import logging

    import torch

    import histosynth  # noqa: F401  (installs the filter)
    from histosynth.models.base_model import build_tiny_pipeline

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    source = logging.getLogger("diffusers.models.modeling_utils")
    keep = Keep()
    source.addHandler(keep)
    try:
        pipe = build_tiny_pipeline(tmp_path / "tok")
        pipe.unet.to(torch.float32)
        source.warning("another warning")
    finally:
        source.removeHandler(keep)
    assert keep.messages == ["another warning"]
