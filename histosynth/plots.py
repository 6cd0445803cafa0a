"""Pictures people look at instead of reading numbers: patch grids with a title per row."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_path
from .patchfile import PatchFile

CELL = 96
TITLE_CHARS = 30  # a title wraps at this many characters, so long prompts are shown whole
FONT_PX = 15


def font(size: int = FONT_PX):
    """A TrueType font (readable at any size, with µ); Pillow's built-in one where none is installed."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def image_grid(rows: Sequence[tuple[str, np.ndarray]], out_png: str | os.PathLike, columns: int = 8) -> None:
    """One row per ``(title, images)``; images are shown at ``CELL`` px, titles whole (wrapped)."""
    import textwrap

    f = font()
    line_h = FONT_PX + 4
    titles = [textwrap.wrap(title, TITLE_CHARS, break_on_hyphens=False) or [""] for title, _ in rows]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_w = 12 + max([probe.textlength(line, font=f) for lines in titles for line in lines] or [80])
    heights = [max(CELL, len(lines) * line_h + 8) for lines in titles]
    canvas = Image.new("RGB", (int(title_w) + CELL * columns, max(CELL, sum(heights))), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if not rows:
        draw.text((6, 6), "no patches", fill=(0, 0, 0), font=f)
    y = 0
    for (_, imgs), lines, h in zip(rows, titles, heights):
        top = y + (h - len(lines) * line_h) // 2
        for i, line in enumerate(lines):
            draw.text((6, top + i * line_h), line, fill=(0, 0, 0), font=f)
        for c, img in enumerate(imgs[:columns]):
            tile = Image.fromarray(img).resize((CELL - 2, CELL - 2), Image.Resampling.LANCZOS)
            canvas.paste(tile, (int(title_w) + c * CELL + 1, y + (h - CELL) // 2 + 1))
        y += h
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
