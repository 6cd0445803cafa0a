"""Pictures people look at instead of reading numbers: patch grids with a title per row."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_path
from .patchfile import PatchFile

CELL = 96
TITLE_W = 220


def image_grid(rows: Sequence[tuple[str, np.ndarray]], out_png: str | os.PathLike, columns: int = 8) -> None:
    """One row per ``(title, images)``; images are shown at ``CELL`` px."""
    canvas = Image.new("RGB", (TITLE_W + CELL * columns, max(1, len(rows)) * CELL), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if not rows:
        draw.text((4, 4), "no patches", fill=(0, 0, 0))
    for r, (title, imgs) in enumerate(rows):
        draw.text((4, r * CELL + CELL // 2 - 6), title[:34], fill=(0, 0, 0))
        for c, img in enumerate(imgs[:columns]):
            tile = Image.fromarray(img).resize((CELL - 2, CELL - 2), Image.Resampling.LANCZOS)
            canvas.paste(tile, (TITLE_W + c * CELL + 1, r * CELL + 1))
    with atomic_path(out_png) as tmp:
        canvas.save(tmp, format="PNG")


def label_examples_grid(patch_h5: str | os.PathLike, out_png: str | os.PathLike, per_label: int = 8, seed: int = 0) -> None:
    """One row per label: up to ``per_label`` random patches of that label, with its name and count."""
    rng = np.random.default_rng(seed)
    rows = []
    with PatchFile(patch_h5) as pf:
        for lab in np.unique(pf.labels):
            idx = np.flatnonzero(pf.labels == lab)
            pick = np.sort(rng.choice(idx, size=min(per_label, idx.size), replace=False))
            name = pf.label_names[lab] if lab >= 0 else "unlabelled"
            rows.append((f"{name} (n={idx.size})", pf.read(pick)))
    image_grid(rows, out_png, columns=per_label)
