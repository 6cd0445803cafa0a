"""Offline demo data built from scikit-image's real IHC tissue image.

``skimage.data.immunohistochemistry()`` (shipped inside the scikit-image wheel) is a 512x512
crop of human colon tissue stained for a protein with DAB (brown) and counterstained with
haematoxylin (blue). Each demo slide places a differently oriented, enlarged copy of it as an
irregular tissue piece on glass, and writes a real pyramidal TIFF: one page per level, JPEG tiles,
pixel size in the resolution tags, so OpenSlide reports levels, downsamples and MPP exactly as for
a scanner file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage as ndi
from skimage import data

from .atomic import atomic_path

DEMO_MPP = 0.5  # um/px at level 0, a 20x scan
GLASS_RGB = (242, 240, 244)


def _tissue_piece(variant: int, size: int) -> np.ndarray:
    ihc = data.immunohistochemistry()
    ihc = np.rot90(ihc, k=variant % 4)
    if (variant // 4) % 2:
        ihc = ihc[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(ihc)).resize((size, size), Image.Resampling.BICUBIC))


def _blob(shape: tuple[int, int], rng: np.random.Generator, centre: tuple[float, float], radius: float) -> np.ndarray:
    """An irregular, smooth tissue outline: an ellipse with a low-frequency wobbly edge."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    ang = np.arctan2(yy - centre[0], xx - centre[1])
    wobble = sum(rng.uniform(0.03, 0.10) * np.sin(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    aspect = rng.uniform(0.75, 1.0)
    r = np.hypot((yy - centre[0]) / aspect, xx - centre[1])
    return r <= radius * (1 + wobble)


def demo_slide_image(variant: int, size: int = 2048) -> np.ndarray:
    """Level-0 RGB pixels of demo slide ``variant`` (deterministic)."""
    rng = np.random.default_rng(1000 + variant)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = GLASS_RGB
    canvas = np.clip(canvas.astype(np.int16) + rng.normal(0, 1.5, canvas.shape).round(), 0, 255).astype(np.uint8)
    piece_size = int(size * 0.75)
    piece = _tissue_piece(variant, piece_size)
    off = rng.integers(0, size - piece_size, size=2)
    mask = _blob((piece_size, piece_size), rng, (piece_size / 2, piece_size / 2), piece_size * 0.46)
    mask = ndi.gaussian_filter(mask.astype(np.float32), 2.0)[..., None]
    region = canvas[off[0] : off[0] + piece_size, off[1] : off[1] + piece_size].astype(np.float32)
    canvas[off[0] : off[0] + piece_size, off[1] : off[1] + piece_size] = (mask * piece + (1 - mask) * region).astype(
        np.uint8
    )
    # a few dust specks on the glass, which the tissue mask must ignore
    for _ in range(4):
        cy, cx = rng.integers(20, size - 20, size=2)
        canvas[cy - 3 : cy + 3, cx - 3 : cx + 3] = (120, 100, 90)
    return canvas


def write_pyramidal_tiff(
    path: str | os.PathLike, level0: np.ndarray, mpp: float, n_levels: int = 4, tile: int = 256
) -> None:
    """Write ``level0`` as a tiled, JPEG-compressed pyramid that OpenSlide reads as generic-tiff."""
    levels = [level0]
    for _ in range(1, n_levels):
        prev = levels[-1]
        if min(prev.shape[:2]) < 2 * tile:
            break
        levels.append(np.asarray(Image.fromarray(prev).reduce(2)))
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=False) as tw:
            for i, im in enumerate(levels):
                px_per_cm = 1e4 / (mpp * 2**i)
                tw.write(
                    im,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": 90},
                    subfiletype=0 if i == 0 else 1,
                    resolution=(px_per_cm, px_per_cm),
                    resolutionunit="CENTIMETER",
                    description="histosynth demo slide from skimage.data.immunohistochemistry()" if i == 0 else None,
                )


def make_demo_slide(path: str | os.PathLike, variant: int, size: int = 2048) -> Path:
    """Write demo slide number ``variant`` (``size`` px square, pyramidal TIFF at the demo's MPP) to ``path``."""
    write_pyramidal_tiff(path, demo_slide_image(variant, size), DEMO_MPP)
    return Path(path)
