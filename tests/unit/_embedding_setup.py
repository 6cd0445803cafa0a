"""Shared set-up of test_embed.py, test_models_base_model.py, test_morphology.py (split from test_models_offline.py)."""

import numpy as np
import pytest
from histosynth.models.embedder import prepare_embedder
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter


@pytest.fixture(scope="session")
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
            w.append(
                PatchBatch(imgs, np.zeros((n, 2)), labels, ["s"] * n, [f"{split}{i}" for i in range(n)], np.ones(n))
            )
    return paths


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    return prepare_embedder("tiny", tmp_path_factory.mktemp("m") / "embedder", image_size=32)
