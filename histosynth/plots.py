"""Pictures people look at instead of reading numbers: every figure of the workflow.

Patch grids and strips, slide thumbnails (PIL) and the matplotlib charts (loss curve, k-sweep,
filter acceptance, coverage PCA); every chart goes through :func:`figure` and :func:`save_figure`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .atomic import atomic_path
from .patchfile import PatchFile
from .qc import BLUR_COLOUR as QC_REJECTED_COLOUR

if TYPE_CHECKING:  # the charts take data frames; the thumbnails (tile_slide) do not need pandas
    import pandas as pd

CELL = 96
TITLE_CHARS = 30  # a title wraps at this many characters, so long prompts are shown whole
FONT_PX = 15
PREVIEW_PX = 1024  # the longer side of a slide thumbnail


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


def patch_strip(imgs: np.ndarray, slots: int, min_px: int) -> Image.Image | None:
    """A row of ``slots`` cells holding the first ``slots`` patches, each at least ``min_px`` wide (small patches
    keep their pixels); cells without a patch stay light grey, so strips of any count show patches at one scale."""
    if not len(imgs):
        return None
    size = imgs.shape[1]
    tile = max(size, min_px)
    method = Image.Resampling.NEAREST if size < min_px else Image.Resampling.LANCZOS
    out = Image.new("RGB", (slots * (tile + 4) - 4, tile), (255, 255, 255))
    for i in range(slots):
        patch = (
            Image.fromarray(imgs[i]).resize((tile, tile), method)
            if i < len(imgs)
            else Image.new("RGB", (tile, tile), (238, 238, 238))
        )
        out.paste(patch, (i * (tile + 4), 0))
    return out


def label_examples_grid(
    patch_h5: str | os.PathLike, out_png: str | os.PathLike, per_label: int = 8, seed: int = 0
) -> None:
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


def figure(ncols: int = 1, figsize: tuple[float, float] = (6, 3.5), nrows: int = 1, **kwargs):
    """``(fig, axes)`` from matplotlib's ``subplots`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=figsize, **kwargs)


def save_figure(fig, out_png: str | os.PathLike, dpi: int = 100) -> None:
    """Lay out, write ``out_png`` atomically and free the figure (pyplot keeps every open figure)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def loss_curve(df: pd.DataFrame, out_png: str | os.PathLike, method: str) -> None:
    """Training loss per step (columns ``step``, ``loss``) with its running mean."""
    fig, ax = figure()
    ax.plot(df["step"], df["loss"], color="tab:blue", alpha=0.3, lw=0.8, label="loss")
    win = max(1, len(df) // 20)
    ax.plot(df["step"], df["loss"].rolling(win, min_periods=1).mean(), color="tab:blue", label=f"mean of {win}")
    ax.set_xlabel("step")
    ax.set_ylabel("diffusion loss")
    ax.legend()
    ax.set_title("LoRA fine-tuning" if method == "lora" else "full UNet fine-tuning")
    save_figure(fig, out_png)


def k_sweep_plot(df: pd.DataFrame, out_png: str | os.PathLike, n: int, chosen_k: int) -> None:
    """Inertia (elbow) and silhouette per k (columns ``k``, ``inertia``, ``silhouette``) of ``n`` embeddings."""
    fig, ax1 = figure()
    if len(df):
        ax1.plot(df.k, df.inertia, "o-", color="tab:blue")
        ax2 = ax1.twinx()
        ax2.plot(df.k, df.silhouette, "s--", color="tab:orange")
        ax2.set_ylabel("silhouette", color="tab:orange")
        ax1.axvline(chosen_k, color="grey", lw=0.8, ls=":")
    ax1.set_xlabel("k (number of morphology clusters)")
    ax1.set_ylabel("inertia", color="tab:blue")
    ax1.set_title(f"k-sweep on {n} training embeddings (chosen k = {chosen_k})")
    save_figure(fig, out_png)


def acceptance_plot(df: pd.DataFrame, per_class: pd.DataFrame, out_png: str | os.PathLike) -> None:
    """Cumulative accepted fraction per class, stacked by filter round (``df``: the acceptance table)."""
    import matplotlib.pyplot as plt

    fig, ax = figure(figsize=(max(5, 0.9 * len(per_class) + 2), 3.5))
    cum = df.pivot_table(index="label_name", columns="round", values="accepted", aggfunc="sum", fill_value=0).cumsum(
        axis=1
    )
    req = per_class.set_index("label_name")["requested"]
    frac = cum.div(req, axis=0)
    bottom = np.zeros(len(frac))
    prev = np.zeros(len(frac))
    for rnd in frac.columns:
        vals = frac[rnd].to_numpy()
        ax.bar(frac.index, vals - prev, bottom=bottom, label=f"round {rnd}")
        bottom = vals
        prev = vals
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accepted fraction (cumulative)")
    ax.set_title("classifier filter: acceptance per class and round")
    ax.legend(fontsize=7)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    save_figure(fig, out_png)


def umap_projection(real: np.ndarray, seed: int):
    """umap-learn's UMAP fitted on the real features (imported here: numba compiles on first import)."""
    import umap

    return umap.UMAP(n_components=2, n_neighbors=min(15, len(real) - 1), random_state=seed).fit(real)


def coverage_plot(
    real: np.ndarray,
    fakes: dict,
    out_png: str | os.PathLike,
    experiment: str,
    note: str | None = None,
    umap: bool = False,
    seed: int = 0,
) -> None:
    """Real vs synthetic features projected by a PCA fitted on the real ones (Osorio et al., Fig. 3-4) and,
    with ``umap``, a second row by a UMAP fitted on them: where the synthetic set covers the real one.

    One panel per synthetic set in ``fakes``; ``note`` is added under each title (e.g. a random extractor)."""
    from sklearn.decomposition import PCA

    projections = [("PC", PCA(n_components=2, random_state=0).fit(real) if len(real) >= 2 else None)]
    if umap:
        projections.append(("UMAP", umap_projection(real, seed) if len(real) >= 3 else None))
    fig, axes = figure(
        len(fakes), figsize=(4.2 * len(fakes), 4 * len(projections)), squeeze=False, nrows=len(projections)
    )
    for row, (axis_name, proj) in zip(axes, projections):
        for ax, (name, ff) in zip(row, fakes.items()):
            if proj is not None:
                r2 = proj.transform(real)
                ax.scatter(r2[:, 0], r2[:, 1], s=6, alpha=0.5, label=f"real ({len(real)})", color="tab:blue")
                if len(ff):
                    f2 = proj.transform(ff)
                    ax.scatter(
                        f2[:, 0], f2[:, 1], s=6, alpha=0.5, label=f"synthetic {name} ({len(ff)})", color="tab:red"
                    )
            ax.set_title(f"{experiment}: {name}" + (f"\n({note})" if note else ""), fontsize=9)
            ax.set_xlabel(f"{axis_name} 1 (fitted on real)")
            ax.set_ylabel(f"{axis_name} 2")
            ax.legend(fontsize=7)
    save_figure(fig, out_png, dpi=90)


def write_thumbnail(
    slide,
    mask: np.ndarray,
    coords: np.ndarray,
    footprint: int,
    out_png: str | os.PathLike,
    title: str = "",
    mpp: float | None = None,
    rejected: np.ndarray = (),
    legend: list = (),
) -> None:
    """Slide preview: the tissue mask as a contour over the untinted stain, every kept patch
    outlined, QC-rejected patches (``rejected``, level-0 x, y) outlined in their own colour, and a legend
    band with a scale bar in µm (``mpp``: level-0 µm/px, else the slide's own) and one row per
    ``legend`` (text, colour) entry."""
    from PIL import ImageFont
    from scipy import ndimage as ndi

    width, height = slide.dimensions
    preview = slide.get_thumbnail((PREVIEW_PX, PREVIEW_PX)).convert("RGB")
    scale = preview.width / width
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(preview.size, Image.Resampling.NEAREST)) > 0
    # ~3 px contour, the stain stays visible (binary morphology: PIL's rank filters cost ~10 % of a bench job)
    square = np.ones((3, 3), bool)
    edge = ndi.binary_dilation(ndi.binary_dilation(m, square) & ~ndi.binary_erosion(m, square, border_value=1), square)
    edge = Image.fromarray(edge.astype(np.uint8) * 255)
    mask_colour, patch_colour = (0, 190, 0), (20, 60, 220)
    preview = Image.composite(Image.new("RGB", preview.size, mask_colour), preview, edge)
    draw = ImageDraw.Draw(preview)
    for x, y in coords:
        x0, y0 = x * scale, y * scale
        draw.rectangle([x0, y0, x0 + footprint * scale, y0 + footprint * scale], outline=patch_colour, width=1)
    for x, y in rejected:
        x0, y0 = x * scale, y * scale
        draw.rectangle([x0, y0, x0 + footprint * scale, y0 + footprint * scale], outline=QC_REJECTED_COLOUR, width=2)
    size = max(14, round(preview.width / 40))  # stays readable when the page shows the picture smaller
    try:  # a TrueType font has the µ sign; Pillow's built-in one does not
        font, micro = ImageFont.truetype("DejaVuSans.ttf", size), "µm"
    except OSError:
        font, micro = ImageFont.load_default(size=size), "um"
    if title:
        box = draw.textbbox((6, 4), title, font=font)
        draw.rectangle([0, 0, box[2] + 6, box[3] + 4], fill=(255, 255, 255))
        draw.text((6, 4), title, fill=(0, 0, 0), font=font)
    # legend band under the picture: mask contour, patches, scale bar
    if mpp is None:
        value = slide.properties.get("openslide.mpp-x")
        mpp = float(value) if value else None
    band = 2 * size
    out = Image.new("RGB", (max(preview.width, 30 * size), preview.height + band * (1 + len(legend))), (255, 255, 255))
    out.paste(preview, (0, 0))
    draw = ImageDraw.Draw(out)
    y = preview.height + band // 2

    def label(x, text):
        draw.text((x, y), text, fill=(0, 0, 0), font=font, anchor="lm")
        return x + draw.textlength(text, font=font) + size

    draw.line([8, y, 8 + 1.5 * size, y], fill=mask_colour, width=max(3, size // 6))
    x = label(14 + 1.5 * size, "tissue mask")
    half = size // 2
    draw.rectangle([x, y - half, x + size, y + half], outline=patch_colour, width=2)
    x = label(x + size + size // 3, f"kept patch ({len(coords)})")
    if mpp:
        um_per_px = mpp / scale
        steps = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000]
        fitting = [s for s in steps if s / um_per_px <= min(8 * size, out.width - x - 5 * size)]
        length = fitting[-1] if fitting else steps[0]
        bar = max(1, round(length / um_per_px))
        draw.rectangle([x, y - max(2, size // 6), x + bar, y + max(2, size // 6)], fill=(0, 0, 0))
        label(x + bar + size // 3, f"{length // 1000} mm" if length >= 1000 else f"{length} {micro}")
    else:
        label(x, f"scale unknown (no {micro}/px)")
    for i, (text, colour) in enumerate(legend):  # one row per QC step under the scale bar
        y = preview.height + band * (i + 1) + band // 2
        if colour is not None:
            draw.rectangle([8, y - half, 8 + size, y + half], outline=colour, width=2)
        label(14 + 1.5 * size, text)
    with atomic_path(out_png) as tmp:
        out.save(tmp, format="PNG")
