"""Per-patch tumour / TIL scores (PathLDM): one TSV, read by tiling labels and the report prompts.

Columns ``slide_id, x, y, tumor, til``: probabilities in [0, 1] per patch, ``x, y`` the patch's
top-left corner in level-0 pixels, as the tiling grid (``coords`` of the patch files) and wsinfer's
per-slide output (``minx, miny``) give them. PathLDM turns a probability into a level with
``int(p * 2)``: low below 0.5, high from 0.5.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("slide_id", "x", "y", "tumor", "til")
TUMOR_LEVEL_NAMES = ["low_tumor", "high_tumor"]  # label names of tiling.labels.method: scores


def read_scores(path: str | os.PathLike, slide_id: str | None = None) -> pd.DataFrame:
    """The scores table indexed by (slide_id, x, y); only ``slide_id``'s rows when given."""
    import pandas as pd  # here, not at the top: tile_slide imports this module, and pandas costs it ~0.3 s CPU per job

    try:
        df = pd.read_csv(path, sep="\t", dtype={"slide_id": str})
    except (OSError, pd.errors.ParserError) as e:
        raise InputError(f"patch scores {path}: cannot read it as a TSV ({e})") from e
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"patch scores {path}: missing column(s) {missing}; it has {list(df.columns)} "
            f"(expected tab-separated {', '.join(COLUMNS)})"
        )
    bad = df[~df["tumor"].between(0, 1) | ~df["til"].between(0, 1)]
    if len(bad):
        raise InputError(
            f"patch scores {path}: tumor/til must be probabilities in [0, 1]; row {int(bad.index[0]) + 2} "
            f"has tumor={bad['tumor'].iloc[0]}, til={bad['til'].iloc[0]}"
        )
    if slide_id is not None:
        df = df[df["slide_id"] == slide_id]
    return df.set_index(["slide_id", "x", "y"])[["tumor", "til"]]


def lookup(scores: pd.DataFrame, slide_ids, coords: np.ndarray, path) -> pd.DataFrame:
    """The (tumor, til) row of every patch; a patch without one stops with the slide and corner named."""
    import pandas as pd

    key = pd.MultiIndex.from_arrays(
        [np.asarray(slide_ids, dtype=object), np.asarray(coords)[:, 0], np.asarray(coords)[:, 1]]
    )
    found = scores.reindex(key)
    absent = found["tumor"].isna().to_numpy()
    if absent.any():
        i = int(np.flatnonzero(absent)[0])
        raise InputError(
            f"patch scores {path}: no row for {int(absent.sum())} patch(es), e.g. slide {key[i][0]} at "
            f"x={key[i][1]}, y={key[i][2]} (level-0 top-left corner); score the slides on the tiling grid "
            "(tiling.patch_size at tiling.mpp, from tiling.grid_origin)"
        )
    return found.reset_index(drop=True)


def level(p) -> np.ndarray:
    """PathLDM's level, as ``prompts.pathldm_levels``: 0 (low) below 0.5, 1 (high) from 0.5."""
    return np.minimum((np.asarray(p, dtype=float) * 2).astype(int), 1)
