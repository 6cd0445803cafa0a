"""Shared set-up of the papers' details (Osorio et al.'s outliers, PathLDM's flips, crops, TIL-aware prompt
dropout and 154-token prompts): tissue-like patches and a tiny PathLDM-style training set (fixture ``pathldm``)."""

import numpy as np
import pandas as pd
import pytest

from histosynth.config import default_config
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


@pytest.fixture(scope="session")
def pathldm(tmp_path_factory):
    """48 px patches with report-style prompts and TIL levels, a tiny base model, and a latent cache with
    vertical flips, 32 px crops and two-chunk prompts."""
    from histosynth.diffusion.latents import cache_latents
    from histosynth.models.base_model import prepare_base_model
    from histosynth.text.prompts import build_prompts

    d = tmp_path_factory.mktemp("pathldm")
    rng = np.random.default_rng(0)
    n = 8
    path = d / "train.h5"
    spec = PatchFileSpec(48, ["a", "b"], coords_attrs={"mpp": 1.0})
    with PatchWriter(path, spec) as w:
        w.append(
            PatchBatch(
                tissue_like(rng, n, 48),
                np.stack([np.arange(n) * 48, np.zeros(n)], 1),
                np.array([0, 1] * 4),
                ["s"] * n,
                ["c1", "c2"] * 4,
                np.ones(n),
            )
        )
    summaries, scores = d / "summaries.tsv", d / "scores.tsv"
    pd.DataFrame(
        {"case_id": ["c1", "c2"], "summary": ["invasive ductal carcinoma; grade 3", "lobular carcinoma"]}
    ).to_csv(summaries, sep="\t", index=False)
    til = [0.1, 0.9, 0.3, 0.6, 0.0, 0.2, 0.8, 0.4]  # levels 0 1 0 1 0 0 1 0
    # joined to the patches on slide and level-0 corner (histosynth.scores)
    pd.DataFrame({"slide_id": ["s"] * n, "x": np.arange(n) * 48, "y": [0] * n, "tumor": [0.7] * n, "til": til}).to_csv(
        scores, sep="\t", index=False
    )
    cfg = {**default_config()["prompts"], "patch_scores": str(scores)}
    build_prompts(
        "report",
        path,
        cfg,
        lambda s: len(s.split()) + 2,
        154,
        inputs={"summaries": summaries},
        out_tsv=d / "prompts.tsv",
    )
    base = prepare_base_model("tiny", d / "base")
    cache_latents(
        path,
        d / "prompts.tsv",
        base,
        d / "latents.h5",
        32,
        True,
        progress=False,
        vertical_flip=True,
        crop=32,
        text_chunks=2,
    )
    return {
        "dir": d,
        "train": path,
        "base": base,
        "prompts": d / "prompts.tsv",
        "latents": d / "latents.h5",
        "til_level": np.array([0, 1, 0, 1, 0, 0, 1, 0]),
    }


def pathldm_train_cfg(**kw):
    return default_config(
        train={
            "max_steps": 2,
            "batch_size": 4,
            "checkpoint_every": 100,
            "validation_every": 100,
            "validation_images_per_class": 1,
            "vertical_flip": True,
            "crop": 32,
            "text_chunks": 2,
            "prompt_dropout": 1.0,
            "prompt_dropout_low_til_only": True,
            **kw,
        }
    )["train"]
