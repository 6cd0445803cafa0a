"""The patch HDF5 contract (docs/DESIGN.md, "File contracts"), written and read in one place.

Datasets, all with N rows in the same order:

- ``imgs``      (N, S, S, 3) uint8, one patch per chunk, gzip-compressed.
- ``coords``    (N, 2) int64, top-left x, y at level 0 (-1, -1 for patches that come from a
                patch dataset, not a slide). CLAM-compatible attrs ``patch_size`` (pixels read at
                ``patch_level``), ``patch_level``, ``downsample``, plus ``mpp`` and
                ``magnification`` of the stored pixels.
- ``labels``    (N,) int64, -1 = unlabelled; attr ``label_names`` (index -> name).
- ``slide_ids`` (N,) UTF-8 strings; ``case_ids`` (N,) UTF-8 strings.
- ``mpp``       (N,) float32, micrometres per stored pixel (NaN where unknown).

Optional datasets, also N rows:

- ``pad_fraction`` (N,) float32, written by ``tile_slide``: the fraction of the patch that lies
                past the slide's right/bottom edge and was painted with the glass colour (root attr
                ``background_rgb``); 0 for patches wholly inside the slide. Absent = no padding.

Readers never load all pixels at once: ``PatchFile.iter_batches`` streams them.

``imgs`` may be an HDF5 virtual dataset (written with ``PatchWriter.append_view``): row ranges of
other patch files' ``imgs``, referenced by paths relative to this file's folder (so the folder
they share can move as a whole), and rows copied into this file's own ``copied_imgs``. Readers see
an ordinary dataset; the referenced files must stay where they are.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from .atomic import atomic_path
from .errors import InputError

UNLABELLED = -1
NO_COORD = -1
IMGS = "imgs"  # the pixels
REQUIRED_DATASETS = (IMGS, "coords", "labels", "slide_ids", "case_ids", "mpp")
PAD_FRACTION = "pad_fraction"  # optional per-patch column, see the module docstring
STR_DTYPE = h5py.string_dtype("utf-8")
COPIED_IMGS = "copied_imgs"  # the rows of a virtual ``imgs`` that were copied, not referenced
_Piece = namedtuple("_Piece", "source start stop")  # imgs rows start:stop of source (None: copied_imgs)

try:  # ISA-L's deflate: the same zlib stream HDF5's gzip filter reads, ~4x less CPU at level 1
    from isal import isal_zlib as _deflate_lib  # (bench/bench_tiling.py, README "Cohort scale")

    MAX_DEFLATE_LEVEL = 3  # ISA-L has levels 0-3; higher zlib levels map to its best
except ImportError:  # optional: plain zlib writes the same format, only slower
    _deflate_lib, MAX_DEFLATE_LEVEL = zlib, 9


def magnification_for_mpp(mpp: float) -> float:
    """Nominal objective magnification for a pixel size (0.25 um/px ~ 40x, 0.5 ~ 20x, 1.0 ~ 10x)."""
    return float("nan") if not np.isfinite(mpp) or mpp <= 0 else 10.0 / mpp


@dataclass
class PatchBatch:
    """Rows to append to a patch file. All arrays share their first dimension."""

    imgs: np.ndarray
    coords: np.ndarray
    labels: np.ndarray
    slide_ids: Sequence[str]
    case_ids: Sequence[str]
    mpp: np.ndarray
    extra: dict = field(default_factory=dict)  # values of PatchFileSpec.extra columns

    def __len__(self) -> int:
        return len(self.imgs)


@dataclass
class PatchFileSpec:
    """What a patch file says about itself: image size, label vocabulary, CLAM attrs."""

    patch_size: int
    label_names: list[str]
    coords_attrs: dict = field(default_factory=dict)
    root_attrs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # additional per-patch columns: name -> "str" | "int" | "float"


class PatchWriter:
    """Append-only writer; the file appears under its final name only after a clean ``close``.

    Use as a context manager: an exception inside the block discards the temporary file.
    Pixels are deflated here (ISA-L when installed, else zlib; both release the GIL) and stored
    with ``write_direct_chunk`` into a gzip-filtered dataset, so any HDF5 reader decodes them as
    ordinary gzip chunks while the writer skips the HDF5 filter pipeline.
    """

    def __init__(self, path: str | os.PathLike, spec: PatchFileSpec, compression_level: int = 4):
        self.path = Path(path)
        self.spec = spec
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._h5 = self._stack.enter_context(h5py.File(tmp, "w"))
        s = int(spec.patch_size)
        self._level = min(int(compression_level), MAX_DEFLATE_LEVEL)
        gz = dict(compression="gzip", compression_opts=compression_level)
        h = self._h5
        h.create_dataset(IMGS, (0, s, s, 3), np.uint8, maxshape=(None, s, s, 3), chunks=(1, s, s, 3), **gz)
        coords = h.create_dataset("coords", (0, 2), np.int64, maxshape=(None, 2), chunks=(4096, 2))
        labels = h.create_dataset("labels", (0,), np.int64, maxshape=(None,), chunks=(4096,))
        h.create_dataset("slide_ids", (0,), STR_DTYPE, maxshape=(None,), chunks=(4096,))
        h.create_dataset("case_ids", (0,), STR_DTYPE, maxshape=(None,), chunks=(4096,))
        h.create_dataset("mpp", (0,), np.float32, maxshape=(None,), chunks=(4096,))
        for name, kind in spec.extra.items():
            dtype = {"str": STR_DTYPE, "int": np.int64, "float": np.float32}[kind]
            h.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(4096,))
        labels.attrs["label_names"] = np.array(list(spec.label_names), dtype=STR_DTYPE)
        for k, v in spec.coords_attrs.items():
            coords.attrs[k] = v
        for k, v in spec.root_attrs.items():
            h.attrs[k] = v
        h.attrs["output_patch_size"] = s
        self.n = 0
        self._pieces: list[_Piece] = []  # the layout of ``imgs`` once a view was appended
        self._copied = 0

    def append(self, batch: PatchBatch) -> None:
        m = len(batch)
        if m == 0:
            return
        s = self.spec.patch_size
        if batch.imgs.shape[1:] != (s, s, 3) or batch.imgs.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: patches must be uint8 ({s},{s},3), got {batch.imgs.dtype} {batch.imgs.shape[1:]}"
            )
        imgs = self._h5[IMGS]
        imgs.resize(self._copied + m, axis=0)
        for i, img in enumerate(batch.imgs):  # one patch per chunk (the contract)
            imgs.id.write_direct_chunk(
                (self._copied + i, 0, 0, 0), _deflate_lib.compress(np.ascontiguousarray(img), self._level)
            )
        self._add_piece(None, self._copied, self._copied + m)
        self._copied += m
        self._append_columns(batch, m)

    def append_view(self, source: str | os.PathLike, start: int, batch: PatchBatch) -> None:
        """Rows whose pixels are ``imgs[start:start + m]`` of the patch file ``source``: referenced, not
        copied (``batch.imgs`` is ignored; the other columns are written as given)."""
        m = len(batch.coords)
        if m == 0:
            return
        with h5py.File(source, "r") as src:
            shape = src[IMGS].shape
        s = self.spec.patch_size
        if shape[1:] != (s, s, 3) or start < 0 or start + m > shape[0]:
            raise ValueError(f"{self.path}: cannot reference rows {start}:{start + m} of {source} imgs {shape}")
        self._add_piece(Path(source).resolve(), start, start + m)
        self._append_columns(batch, m)

    def append_copy(self, source: str | os.PathLike, rows: np.ndarray, batch: PatchBatch) -> None:
        """Rows whose pixels are ``imgs[rows]`` of the patch file ``source``, copied into this file
        (``batch.imgs`` is ignored). Chunks of a file written here are copied as they are stored,
        without decoding; a virtual or otherwise stored source is decoded and deflated again."""
        rows = np.asarray(rows, np.int64)
        m = len(rows)
        if m == 0:
            return
        s = self.spec.patch_size
        with PatchFile(source) as src:
            imgs = src.imgs
            if imgs.shape[1:] != (s, s, 3) or rows.min() < 0 or rows.max() >= imgs.shape[0]:
                raise ValueError(f"{self.path}: cannot copy rows of {source} imgs {imgs.shape}")
            raw = not imgs.is_virtual and imgs.chunks == (1, s, s, 3) and imgs.compression == "gzip"
            out = self._h5[IMGS]
            out.resize(self._copied + m, axis=0)
            for i, r in enumerate(rows):
                if raw:
                    mask, chunk = imgs.id.read_direct_chunk((int(r), 0, 0, 0))
                    if mask == 0:  # every filter applied: the bytes are a gzip chunk like ours
                        out.id.write_direct_chunk((self._copied + i, 0, 0, 0), chunk)
                        continue
                img = np.ascontiguousarray(imgs[int(r)])
                out.id.write_direct_chunk((self._copied + i, 0, 0, 0), _deflate_lib.compress(img, self._level))
        self._add_piece(None, self._copied, self._copied + m)
        self._copied += m
        self._append_columns(batch, m)

    def _add_piece(self, source, start: int, stop: int) -> None:
        last = self._pieces[-1] if self._pieces else None
        if last is not None and last.source == source and last.stop == start:
            self._pieces[-1] = last._replace(stop=stop)  # one mapping per contiguous run
        else:
            self._pieces.append(_Piece(source, start, stop))

    def _append_columns(self, batch: PatchBatch, m: int) -> None:
        start, end = self.n, self.n + m
        for name, values in (
            ("coords", np.asarray(batch.coords, np.int64).reshape(m, 2)),
            ("labels", np.asarray(batch.labels, np.int64)),
            ("slide_ids", np.asarray(batch.slide_ids, dtype=object)),
            ("case_ids", np.asarray(batch.case_ids, dtype=object)),
            ("mpp", np.asarray(batch.mpp, np.float32)),
            *(
                (name, np.asarray(batch.extra[name], dtype=object if kind == "str" else None))
                for name, kind in self.spec.extra.items()
            ),
        ):
            ds = self._h5[name]
            ds.resize(end, axis=0)
            ds[start:end] = values
        self.n = end

    def set_coords_attrs(self, **attrs) -> None:
        """Attributes known only after the data is written (e.g. a pixel size found on the way)."""
        for k, v in attrs.items():
            self._h5["coords"].attrs[k] = v

    def set_attrs(self, **attrs) -> None:
        """Root attributes known only after the data is written (e.g. QC counts)."""
        for k, v in attrs.items():
            self._h5.attrs[k] = v

    def _make_virtual_imgs(self) -> None:
        """Turn ``imgs`` into a virtual dataset over the referenced files and the copied rows."""
        h, s = self._h5, self.spec.patch_size
        h.move(IMGS, COPIED_IMGS)
        layout = h5py.VirtualLayout((self.n, s, s, 3), np.uint8)
        folder = self.path.resolve().parent
        row = 0
        for p in self._pieces:
            # "." is this file; other files by relative path, which HDF5 resolves from this file's folder
            name, shape = (".", h[COPIED_IMGS].shape) if p.source is None else (os.path.relpath(p.source, folder), None)
            if shape is None:
                with h5py.File(p.source, "r") as src:
                    shape = src[IMGS].shape
            layout[row : row + p.stop - p.start] = h5py.VirtualSource(
                name, IMGS if p.source else COPIED_IMGS, shape=shape
            )[p.start : p.stop]
            row += p.stop - p.start
        h.create_virtual_dataset(IMGS, layout, fillvalue=0)

    def close(self) -> None:
        if any(p.source is not None for p in self._pieces):
            self._make_virtual_imgs()
        self._h5.attrs["n_patches"] = self.n
        self._stack.close()

    def __enter__(self) -> "PatchWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._stack.__exit__(exc_type, exc, tb)


class PatchFile:
    """Read-only view of a patch file: small per-patch arrays in memory, pixels streamed."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
        except (OSError, FileNotFoundError) as e:
            raise InputError(f"{self.path}: not a readable HDF5 patch file ({e})") from e
        missing = [d for d in REQUIRED_DATASETS if d not in self._h5]
        if missing:
            self._h5.close()
            raise InputError(f"{self.path}: not a histosynth patch file, missing datasets {missing}")
        h = self._h5
        self.imgs = h[IMGS]
        if self.imgs.is_virtual:
            # HDF5 reads a missing source of a virtual dataset as zeros: refuse instead of reading them
            folder = self.path.parent
            for src in sorted({m.file_name for m in self.imgs.virtual_sources()} - {"."}):
                if not (folder / src).is_file():
                    h.close()
                    raise InputError(
                        f"{self.path}: its pixels are kept in {os.path.normpath(folder / src)}, which is missing; "
                        f"make it again (snakemake --cores N {os.path.normpath(folder / src)}; the same settings "
                        "give the same patches) or delete this file so that it is rebuilt"
                    )
        self.coords = h["coords"][:]
        self.labels = h["labels"][:]
        self.label_names = [str(x) for x in h["labels"].attrs.get("label_names", [])]
        self.slide_ids = h["slide_ids"].asstr()[:].astype(object)
        self.case_ids = h["case_ids"].asstr()[:].astype(object)
        self.mpp = h["mpp"][:]
        self.coords_attrs = dict(h["coords"].attrs)
        self.attrs = dict(h.attrs)
        self.patch_size = int(self.imgs.shape[1])

    def __len__(self) -> int:
        return int(self.imgs.shape[0])

    def column(self, name: str) -> np.ndarray:
        """An additional per-patch column (e.g. ``prompts`` and ``seeds`` of synthetic sets)."""
        if name not in self._h5:
            raise InputError(f"{self.path}: no column {name!r}")
        ds = self._h5[name]
        return ds.asstr()[:].astype(object) if h5py.check_string_dtype(ds.dtype) else ds[:]

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Pixels of the given rows, in the order given."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return np.zeros((0, self.patch_size, self.patch_size, 3), np.uint8)
        order = np.argsort(idx)
        out = np.empty((idx.size, self.patch_size, self.patch_size, 3), np.uint8)
        # h5py fancy indexing needs increasing, unique indices
        uniq, inverse = np.unique(idx[order], return_inverse=True)
        block = self.imgs[uniq]
        out[order] = block[inverse]
        return out

    def iter_batches(
        self, batch_size: int = 256, indices: Sequence[int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, pixels)`` in chunks of at most ``batch_size`` rows."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        for start in range(0, idx.size, batch_size):
            rows = idx[start : start + batch_size]
            yield rows, self.read(rows)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "PatchFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_patch_file(path: str | os.PathLike) -> int:
    """Check a file against the contract; return its patch count or raise ``InputError``."""
    with PatchFile(path) as pf:
        n = len(pf)
        s = pf.patch_size
        problems = []
        if pf.imgs.dtype != np.uint8 or pf.imgs.shape[1:] != (s, s, 3):
            problems.append(f"imgs must be uint8 (N,S,S,3), is {pf.imgs.dtype} {pf.imgs.shape}")
        if pf.imgs.chunks is not None and pf.imgs.chunks[0] != 1:
            problems.append(f"imgs must be chunked one patch per chunk, chunks={pf.imgs.chunks}")
        for name, arr in (
            ("coords", pf.coords),
            ("labels", pf.labels),
            ("slide_ids", pf.slide_ids),
            ("case_ids", pf.case_ids),
            ("mpp", pf.mpp),
        ):
            if len(arr) != n:
                problems.append(f"{name} has {len(arr)} rows, imgs has {n}")
        for key in ("patch_size", "patch_level", "downsample", "mpp", "magnification"):
            if key not in pf.coords_attrs:
                problems.append(f"coords lacks attr {key!r}")
        if n and (pf.labels.max() >= len(pf.label_names) or pf.labels.min() < UNLABELLED):
            problems.append(f"labels outside 0..{len(pf.label_names) - 1} (or -1) with label_names {pf.label_names}")
        if problems:
            raise InputError(f"{path}: violates the patch-file contract: " + "; ".join(problems))
        return n
