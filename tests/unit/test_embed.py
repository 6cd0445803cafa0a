"""embed_patches holds at most one batch of hidden states, whatever the number of patches.

Structural, not an RSS measurement: the backbone is replaced by one whose ``forward`` returns a
view of a large "hidden state" (as ``last_hidden_state[:, 0]`` is), and every hidden state is
tracked with a weak reference to its buffer. When the next batch starts, the previous ones must be gone.
(bench/bench_memory.py measures the resulting peak RSS with a ViT-B.)
"""

import gc
import weakref

import h5py
import numpy as np
import pytest

import histosynth.embed as embed_mod
from histosynth.models.embedder import Embedder
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter
from histosynth.embed import EMBEDDINGS, embed_patches, load_embeddings
from histosynth.errors import InputError

torch = pytest.importorskip("torch")
TOKENS, DIM = 50, 16


@pytest.fixture()
def patch_file(tmp_path):
    n = 23  # several batches, the last one short
    imgs = np.random.default_rng(0).integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "p.h5"
    with PatchWriter(path, PatchFileSpec(8, ["a"], {})) as w:
        w.append(PatchBatch(imgs, np.zeros((n, 2)), np.zeros(n), ["s"] * n, ["c"] * n, np.ones(n)))
    return path, n


def test_previous_hidden_states_are_freed(patch_file, tmp_path, monkeypatch):
    alive, seen_alive, expected = [], [], []

    def forward(x):
        gc.collect()
        seen_alive.append(sum(r() is not None for r in alive))
        # the buffer is a numpy array so a weak reference sees any view that keeps the storage alive
        buf = np.arange(len(x) * TOKENS * DIM, dtype=np.float32).reshape(len(x), TOKENS, DIM) + len(expected)
        alive.append(weakref.ref(buf))
        hidden = torch.from_numpy(buf)
        expected.append(hidden[:, 0].clone().numpy())
        return hidden[:, 0]  # a view, as the real CLS pooling

    def preprocess(imgs):
        return torch.zeros(len(imgs), 3, 8, 8)

    fake = Embedder(None, preprocess, forward, {"backbone": "fake"})
    monkeypatch.setattr(embed_mod, "load_embedder", lambda *a, **k: fake)
    path, n = patch_file
    out = tmp_path / "e.h5"
    assert (
        embed_mod.embed_patches(path, "unused", out, "cls", batch_size=5, num_workers=0, device="cpu", progress=False)
        == n
    )
    assert len(seen_alive) == 5
    assert max(seen_alive) == 0, f"hidden states of earlier batches still referenced: {seen_alive}"
    with h5py.File(out, "r") as h:
        np.testing.assert_array_equal(h[EMBEDDINGS][:], np.concatenate(expected))


def test_pooled_rows_own_their_memory():
    hidden = torch.ones(4, TOKENS, DIM)
    rows = embed_mod.pooled_rows(hidden[:, 0])
    assert rows.base is None and rows.flags.owndata and rows.nbytes == 4 * DIM * 4


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
