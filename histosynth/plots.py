"""Pictures people look at instead of reading numbers: every figure of the workflow.

Patch grids (PIL, a title per row) and the matplotlib charts (loss curve, k-sweep, filter
acceptance, coverage PCA); every chart goes through :func:`figure` and :func:`save_figure`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
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
