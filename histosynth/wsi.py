"""Whole-slide images: opening with clear errors, pixel size, level choice, tile grid, reading.

Patches are defined in physical units: ``mpp`` (um per output pixel) and ``patch_size`` (output
pixels). Each patch is read from the pyramid level whose downsample is the largest not above the
one needed (so pixels are only ever reduced, never invented) and resized to the output size.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import openslide
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .tissue import to_rgb_uint8


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


def tiff_damage(path: Path) -> str | None:
    """Why a TIFF-based file (SVS, NDPI, generic TIFF ...) is incomplete, or None if it looks whole.

    A cut-off SVS still starts with a valid header, and OpenSlide then hands it to PIL, which
    reads the first page and reports only "no MPP". Here every directory (IFD) and every strip or
    tile must lie inside the file.
    """
    import tifffile

    size = path.stat().st_size
    problems: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            problems.append(record.getMessage())

    handler = Collect(logging.WARNING)
    tlog = logging.getLogger("tifffile")
    tlog.addHandler(handler)
    level = tlog.level
    tlog.setLevel(logging.WARNING)  # heard even when the application silences logging
    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)  # walks the whole IFD chain; offsets past the end are logged
            if not pages:
                return "no readable image directory"
            for i, page in enumerate(pages):
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
                if ends and max(ends) > size:
                    missing = sum(e > size for e in ends)
                    return f"image {i}: {missing} of {len(ends)} tiles/strips lie beyond the end of the file ({size} bytes)"
    except Exception as e:  # tifffile raises its own error types for malformed structures
        return f"{type(e).__name__}: {e}"
    finally:
        tlog.removeHandler(handler)
        tlog.setLevel(level)
    for m in problems:
        if hit := re.search(r"invalid (?:page offset|offset to first page) (\d+)", m):
            return f"an image directory at byte {hit[1]} lies beyond the end of the file ({size} bytes)"
        if "corrupt" in m.lower():
            return m
    return None


def open_slide(path: str | os.PathLike, slide_id: str) -> openslide.AbstractSlide:
    """Open a WSI (or a plain image) with OpenSlide; errors name the slide and the file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"slide {slide_id!r}: file not found: {p}")
    if p.is_dir():
        raise InputError(f"slide {slide_id!r}: {p} is a directory, not a slide file")
    with open(p, "rb") as f:
        is_tiff = f.read(4) in TIFF_MAGIC
    if is_tiff:
        damage = tiff_damage(p)
        if damage:
            raise InputError(
                f"slide {slide_id!r} looks truncated or corrupt: {p} ({damage}); copy it again from its source"
            )
    try:
        slide = openslide.open_slide(str(p))
        if isinstance(slide, openslide.ImageSlide):  # PIL fallback: decode now so a damaged file fails here
            with Image.open(p) as im:
                im.load()
    except (openslide.OpenSlideError, UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        if is_tiff:
            raise InputError(f"slide {slide_id!r} looks truncated or corrupt: {p} ({e})") from e
        raise InputError(
            f"slide {slide_id!r}: {p} is not a whole-slide image OpenSlide can read "
            f"(corrupt, truncated or not a slide format): {e}"
        ) from e
    return slide


def slide_mpp(slide: openslide.AbstractSlide, slide_id: str, assume_mpp: float | None) -> tuple[float, str]:
    """Level-0 um/px from the slide's metadata, else ``assume_mpp``; returns (mpp, source)."""
    props = slide.properties
    values = []
    for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y):
        try:
            values.append(float(props[key]))
        except (KeyError, ValueError):
            pass
    values = [v for v in values if math.isfinite(v) and v > 0]
    if values:
        return float(np.mean(values)), "metadata"
    if assume_mpp:
        return float(assume_mpp), "tiling.assume_mpp"
    raise InputError(
        f"slide {slide_id!r}: no microns-per-pixel (MPP) in its metadata; set tiling.assume_mpp "
        f"in the config (e.g. 0.25 for 40x, 0.5 for 20x scans) to tile it anyway"
    )


@dataclass(frozen=True)
class ReadPlan:
    """How to read one output patch: pyramid level, size read there, and level-0 footprint."""

    level: int
    level_downsample: float
    read_size: int  # pixels read at ``level``
    footprint: int  # level-0 pixels covered by one patch
    step: int  # level-0 pixels between neighbouring patches
    downsample: float  # level-0 pixels per output pixel (target mpp / slide mpp)


# Pyramids store rounded downsamples (2.0005 for 2.0 when a level's size is odd): accept a level up
# to this relative excess, which changes the pixel size by less than a resize could show.
LEVEL_TOLERANCE = 0.01


def best_level(level_downsamples: Sequence[float], downsample: float, tolerance: float = LEVEL_TOLERANCE) -> int:
    """Coarsest level whose downsample is at most ``downsample`` (within ``tolerance``); 0 if none."""
    fits = [i for i, d in enumerate(level_downsamples) if d <= max(downsample, 1.0) * (1 + tolerance)]
    return max(fits, key=lambda i: level_downsamples[i]) if fits else 0


def plan_read(
    slide: openslide.AbstractSlide, base_mpp: float, target_mpp: float, patch_size: int, stride: int
) -> ReadPlan:
    """Choose the level and read size that give ``patch_size`` px at ``target_mpp``."""
    downsample = target_mpp / base_mpp
    level = best_level(slide.level_downsamples, downsample)
    level_ds = float(slide.level_downsamples[level])
    read_size = max(1, int(round(patch_size * downsample / level_ds)))
    footprint = max(1, int(round(patch_size * downsample)))
    step = max(1, int(round(stride * downsample)))
    return ReadPlan(level, level_ds, read_size, footprint, step, downsample)


def grid_coords(width: int, height: int, footprint: int, step: int, pad: bool = False) -> np.ndarray:
    """Top-left level-0 coordinates of every patch that fits inside the slide (row-major).

    With ``pad``, one more column and row of patches reaching past the right and bottom edges
    where the grid would otherwise leave a strip of the slide untiled.
    """

    def starts(extent):
        s = np.arange(0, max(extent - footprint, -1) + 1, step, dtype=np.int64)
        if pad:
            nxt = s[-1] + step if s.size else 0
            if (s[-1] + footprint if s.size else 0) < extent and nxt < extent:
                s = np.append(s, nxt)
        return s

    xs, ys = starts(width), starts(height)
    if xs.size == 0 or ys.size == 0:
        return np.zeros((0, 2), np.int64)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def mask_fraction(mask: np.ndarray, mask_downsample: float, coords: np.ndarray, footprint: int) -> np.ndarray:
    """Fraction of each patch footprint that is tissue (summed-area table, vectorised).

    The denominator is the whole footprint, also where it reaches past the slide (padding).
    """
    if len(coords) == 0:
        return np.zeros(0)
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)
    h, w = mask.shape

    def clip_idx(v, hi):
        return np.clip(v, 0, hi)

    x0 = clip_idx(np.floor(coords[:, 0] / mask_downsample).astype(np.int64), w)
    y0 = clip_idx(np.floor(coords[:, 1] / mask_downsample).astype(np.int64), h)
    x1 = clip_idx(np.ceil((coords[:, 0] + footprint) / mask_downsample).astype(np.int64), w)
    y1 = clip_idx(np.ceil((coords[:, 1] + footprint) / mask_downsample).astype(np.int64), h)
    x1 = np.maximum(x1, x0 + 1).clip(max=w)
    y1 = np.maximum(y1, y0 + 1).clip(max=h)
    total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    full = max(1, int(np.ceil(footprint / mask_downsample)))
    area = np.maximum(np.maximum((x1 - x0) * (y1 - y0), full * full), 1)
    return total / area


class PatchReader:
    """Reads patches from one slide with a pool of threads.

    OpenSlide's C library is thread-safe and releases the GIL while decoding, so threads give
    real parallelism; each thread keeps its own handle so no decoder cache is shared.
    """

    def __init__(self, path: str | os.PathLike, slide_id: str, plan: ReadPlan, patch_size: int, threads: int = 1):
        self.path, self.slide_id, self.plan, self.patch_size = str(path), slide_id, plan, patch_size
        self.threads = max(1, int(threads))
        self._local = threading.local()

    def _slide(self) -> openslide.AbstractSlide:
        s = getattr(self._local, "slide", None)
        if s is None:
            s = self._local.slide = open_slide(self.path, self.slide_id)
        return s

    def read_one(self, xy: Sequence[int]) -> np.ndarray:
        p = self.plan
        x, y = int(xy[0]), int(xy[1])
        try:
            region = self._slide().read_region((x, y), p.level, (p.read_size, p.read_size))
        except openslide.OpenSlideError as e:
            raise InputError(
                f"slide {self.slide_id!r}: cannot read region at level-0 ({x}, {y}), level {p.level}: {e} (truncated or corrupt file?)"
            ) from e
        # PIL's C conversion drops alpha (a numpy pass cost half as much as the decode); only
        # fully transparent pixels (outside a sparse scan's tiles) need fixing, as white glass
        rgb = region.convert("RGB")
        if region.mode == "RGBA" and region.getchannel("A").getextrema()[0] == 0:
            rgb = Image.fromarray(to_rgb_uint8(np.asarray(region)))
        if p.read_size != self.patch_size:
            rgb = rgb.resize((self.patch_size, self.patch_size), Image.Resampling.LANCZOS)
        return np.asarray(rgb, dtype=np.uint8)

    def iter_batches(self, coords: np.ndarray, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(coords, pixels)`` batches in input order."""
        with ThreadPoolExecutor(self.threads) as pool:
            for start in range(0, len(coords), batch_size):
                chunk = coords[start : start + batch_size]
                # one thread reads in the caller's thread: a hand-off per patch costs more than it gains
                imgs = list(pool.map(self.read_one, chunk) if self.threads > 1 else map(self.read_one, chunk))
                yield chunk, np.stack(imgs) if imgs else np.zeros((0, self.patch_size, self.patch_size, 3), np.uint8)
