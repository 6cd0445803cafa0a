"""``embed_patches``: one embedding per patch, aligned row by row with the patch file.

Batched ``inference_mode`` on the best device; a DataLoader whose workers each open the HDF5
themselves (h5py handles must not cross processes); preprocessing runs in the workers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

import h5py
import numpy as np
from .progress import progress_bar

from .atomic import atomic_path
from .errors import InputError
from .device import pick_device
from .models.embedder import load_embedder
from .patchfile import IMGS, PatchFile

log = logging.getLogger(__name__)
# the embeddings file: one dataset, its attrs the backbone's metadata and the patch file's fingerprint
EMBEDDINGS, PATCH_FINGERPRINT = "embeddings", "patch_fingerprint"


def patch_fingerprint(pf: PatchFile) -> str:
    """Identifies a patch file's rows (order, slides, cases, labels, coords, first and last pixels)."""
    h = hashlib.sha256()
    ends = pf.read([0, len(pf) - 1]) if len(pf) else np.zeros(0, np.uint8)
    for arr in (pf.coords, pf.labels, pf.slide_ids.astype(str), pf.case_ids.astype(str), ends):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(str(len(pf)).encode())
    return h.hexdigest()


class _PatchDataset:
    """torch Dataset over a patch file; the HDF5 is opened lazily in each worker."""

    def __init__(self, path: str):
        self.path = path
        with h5py.File(path, "r") as h:
            self.n = int(h[IMGS].shape[0])
        self._h5 = None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r")
        return self._h5[IMGS][i]


def pooled_rows(pooled) -> np.ndarray:
    """A batch's pooled vectors as a float32 array that owns its memory.

    ``hidden[:, 0]`` is a view of the whole ``last_hidden_state``; a numpy view of it would keep
    every token of every patch alive (~2.3 MiB per patch for ViT-B/8 at 224 px) for as long as the
    rows are kept, so the rows are copied out and the hidden state can be freed with the batch.
    """
    return np.array(pooled.detach().float().cpu().numpy(), dtype=np.float32, copy=True, order="C")


def embed_patches(
    patch_h5,
    embedder_dir,
    out_h5,
    pooling: str,
    batch_size: int,
    num_workers: int,
    device: str = "auto",
    progress: bool = True,
) -> int:
    """One embedding per patch of ``patch_h5`` with the backbone saved in ``embedder_dir``, written to
    ``out_h5`` with the patch file's fingerprint (readers check it); returns the number of patches.
    ``pooling``: cls or mean; ``batch_size``, ``num_workers``, ``device``: the ``embedding:`` settings."""
    import torch
    from torch.utils.data import DataLoader

    device = pick_device(device)
    emb = load_embedder(embedder_dir, pooling, device)
    with PatchFile(patch_h5) as pf:
        n, fingerprint = len(pf), patch_fingerprint(pf)
    ds = _PatchDataset(str(patch_h5))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=num_workers if n else 0,
        collate_fn=emb.preprocess,
        persistent_workers=False,
    )
    t0 = time.perf_counter()
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h:
        d = None
        with torch.inference_mode():
            for x in progress_bar(
                loader,
                desc=f"embed {os.path.basename(str(patch_h5))}",
                unit="batch",
                disable=not progress,
                mininterval=2,
            ):
                rows = pooled_rows(emb.forward(x.to(device)))
                if d is None:
                    # written batch by batch: memory stays one batch whatever the number of patches
                    d = h.create_dataset(
                        EMBEDDINGS,
                        (0, rows.shape[1]),
                        np.float32,
                        maxshape=(None, rows.shape[1]),
                        chunks=(max(1, min(batch_size, n)), rows.shape[1]),
                    )
                start = d.shape[0]
                d.resize(start + len(rows), axis=0)
                d[start:] = rows
            if d is None:  # an empty split still needs the backbone's width
                width = emb.forward(emb.preprocess([np.zeros((32, 32, 3), np.uint8)]).to(device)).shape[1]
                d = h.create_dataset(EMBEDDINGS, (0, width), np.float32)
        dim = d.shape[1]
        d.attrs.update(emb.meta)
        d.attrs.update(
            {
                PATCH_FINGERPRINT: fingerprint,
                "pooling": pooling,
                "patch_file": str(patch_h5),
                "n_patches": n,
                "device": device,
            }
        )
    rate = n / max(time.perf_counter() - t0, 1e-9)
    log.info(
        "embedded %d patches from %s with %s (%s pooling, dim %d) on %s: %.1f images/s",
        n,
        patch_h5,
        emb.meta["backbone"],
        pooling,
        dim,
        device,
        rate,
    )
    return n


def load_embeddings(emb_h5, patch_h5) -> tuple[np.ndarray, dict]:
    """Embeddings, checked to line up with ``patch_h5`` row by row."""
    with h5py.File(emb_h5, "r") as h:
        feats, attrs = h[EMBEDDINGS][:], dict(h[EMBEDDINGS].attrs)
    with PatchFile(patch_h5) as pf:
        fp, n = patch_fingerprint(pf), len(pf)
    if len(feats) != n or attrs.get(PATCH_FINGERPRINT) != fp:
        raise InputError(
            f"embeddings {emb_h5} do not line up with {patch_h5} ({len(feats)} rows vs {n} patches, "
            "or the patch file changed since embedding); rerun embed_patches"
        )
    return feats, attrs
