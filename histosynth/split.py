"""``split_patches``: pool every patch file, split train/val/test by group, stratified by label.

Groups (``case_id`` by default) are split, not patches, so no patient appears in two splits.
Patches with an ``official_split`` (imported datasets that keep their published split) keep it.
Each group gets its majority label and scikit-learn's ``train_test_split`` stratifies the groups
by it (falling back to an unstratified split, with a warning, when a class has too few groups).
Fractions are fractions of groups.

No pixel is copied that only moves: the split files' ``imgs`` are HDF5 virtual datasets over the
tile files (``PatchWriter.append_view``), one mapping per run of consecutive rows of a tile file
(a whole slide file when grouping by case, as usual). Only rows in runs shorter than
``MIN_VIEW_RUN`` (e.g. an imported dataset whose per-patch official split interleaves) are copied,
streamed in batches. The tile files must therefore stay in place (paths are stored relative to the
split files' folder, so ``results/`` can move as a whole).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from .atomic import atomic_path
from .errors import InputError
from .patchfile import UNLABELLED, PatchBatch, PatchFile, PatchFileSpec, PatchWriter, magnification_for_mpp

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
# a referenced run costs one mapping in the virtual dataset's layout (read on every open); runs
# shorter than this are cheaper copied than referenced
MIN_VIEW_RUN = 64


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Positions (start, stop) in ``rows`` of the runs of consecutive values."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    edges = np.concatenate([[0], breaks, [len(rows)]])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _pool_rare(strata: np.ndarray) -> np.ndarray:
    """Classes with a single group cannot be stratified: pool them with the most common class."""
    counts = Counter(strata.tolist())
    rare = [c for c, n in counts.items() if n < 2]
    if not rare or len(counts) == len(rare):
        return strata
    common = counts.most_common(1)[0][0]
    return np.array([common if s in rare else s for s in strata.tolist()])


def _split_groups(
    groups: np.ndarray, strata: np.ndarray, fraction: float, seed: int, what: str, asked: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split unique groups into (rest, taken) with ``fraction`` of them taken, stratified when possible.

    ``asked`` names the user's settings for error messages (``fraction`` may be a rescaled one)."""
    if fraction <= 0 or len(groups) == 0:
        return groups, groups[:0]
    n_take = int(np.ceil(fraction * len(groups)))
    if n_take >= len(groups):
        raise InputError(
            f"split: only {len(groups)} group(s) left for {what} and train with {asked}; "
            f"add cases or lower split.{what}"
        )
    strata = _pool_rare(np.asarray(strata))
    try:
        rest, taken = train_test_split(groups, test_size=n_take, stratify=strata, random_state=seed)
    except ValueError as e:
        log.warning("split: cannot stratify the %s split by label (%s); splitting groups at random", what, e)
        rest, taken = train_test_split(groups, test_size=n_take, random_state=seed)
    return np.asarray(rest), np.asarray(taken)


def assign_splits(labels: Sequence[int], groups: Sequence[str], val: float, test: float, seed: int) -> np.ndarray:
    """Split name per patch; every group lands in exactly one split."""
    if val + test >= 1:
        raise InputError(f"split.val ({val}) + split.test ({test}) must be below 1, leaving groups for training")
    asked = f"split.val={val}, split.test={test}"
    labels = np.asarray(labels)
    groups = np.asarray(groups, dtype=object)
    if len(groups) == 0:
        return np.array([], dtype=object)
    majority = {}
    for g, lab in zip(groups, labels):
        majority.setdefault(g, Counter())[lab] += 1
    uniq = np.array(sorted(majority), dtype=object)
    strata = np.array([majority[g].most_common(1)[0][0] for g in uniq])
    rest, test_groups = _split_groups(uniq, strata, test, seed, "test", asked)
    rest_strata = np.array([majority[g].most_common(1)[0][0] for g in rest])
    train_groups, val_groups = _split_groups(rest, rest_strata, val / (1 - test), seed + 1, "val", asked)
    where = {g: "train" for g in train_groups} | {g: "val" for g in val_groups} | {g: "test" for g in test_groups}
    return np.array([where[g] for g in groups], dtype=object)


def check_split(man: pd.DataFrame, group_by: str) -> None:
    """No group in two splits (an official split may leak), and every class can be learnt and evaluated."""
    spread = man.groupby(group_by)["split"].nunique()
    leaking = spread[spread > 1].index.tolist()
    if leaking:
        where = man[man[group_by].isin(leaking[:3])].groupby(group_by)["split"].unique()
        raise InputError(
            f"split: {len(leaking)} {group_by}(s) appear in two splits, e.g. "
            + "; ".join(f"{g} in {sorted(v)}" for g, v in where.items())
            + " (an official split that shares slides: use split: resplit for that dataset)"
        )
    labelled = man[man["label"] >= 0]
    for name, rows in labelled.groupby("label_name"):
        if not (rows["split"] == "train").any():
            raise InputError(
                f"split: class {name!r} has no training patches (its {rows[group_by].nunique()} "
                f"{group_by}(s) all went to {sorted(rows['split'].unique())}); add cases of it or drop it"
            )
        if rows[group_by].nunique() < 2 and len(man["split"].unique()) > 1:
            raise InputError(
                f"split: class {name!r} comes from a single {group_by} ({rows[group_by].iloc[0]}), so it "
                "cannot be both trained on and evaluated; add cases of it or drop it"
            )


def _warn_mixed_mpp(man: pd.DataFrame) -> None:
    """Patches of different um/px in one split teach the model different scales: say so, with counts."""
    values = man["mpp"].to_numpy(dtype=float)
    mpp = pd.Series(np.where(np.isfinite(values), np.round(values, 3).astype(str), "unknown"), index=man.index)
    for split, counts in mpp.groupby(man["split"]).value_counts().groupby(level=0):
        if len(counts) > 1:
            log.warning(
                "split %s mixes pixel sizes (um/px: patches): %s",
                split,
                ", ".join(f"{k[1]}: {v}" for k, v in counts.items()),
            )


def _merged_label_names(files: list[PatchFile]) -> list[str]:
    names: list[str] = []
    for pf in files:
        names += [n for n in pf.label_names if n not in names]
    return names


def _merged_coords_attrs(files: list[PatchFile]) -> dict:
    """Attributes all sources agree on are kept; the rest become 'mixed' (-1 / NaN)."""
    keys = ("patch_size", "patch_level", "mpp", "magnification")
    out = {}
    for k in keys:
        vals = {repr(np.asarray(pf.coords_attrs.get(k, np.nan)).tolist()) for pf in files}
        out[k] = (
            files[0].coords_attrs.get(k, np.nan)
            if len(vals) == 1
            else (np.nan if k in ("mpp", "magnification") else -1)
        )
    levels = {repr(np.asarray(pf.coords_attrs.get("downsample", [1.0, 1.0])).tolist()) for pf in files}
    out["downsample"] = (
        files[0].coords_attrs.get("downsample", np.array([1.0, 1.0])) if len(levels) == 1 else np.array([-1.0, -1.0])
    )
    if not np.isfinite(out["mpp"]):
        out["magnification"] = magnification_for_mpp(out["mpp"])
    return out


def split_patches(
    inputs: Sequence[str | os.PathLike],
    outputs: dict[str, str | os.PathLike],
    manifest: str | os.PathLike,
    summary: str | os.PathLike | None,
    val: float,
    test: float,
    seed: int,
    group_by: str = "case_id",
    batch_size: int = 256,
) -> pd.DataFrame:
    """Write ``outputs['train'|'val'|'test']``, the manifest TSV and a split x label count TSV."""
    if not inputs:
        raise InputError("split: no patch files to split (no slides in the slide sheet and no patch_datasets)")
    files = [PatchFile(p) for p in inputs]
    try:
        sizes = {pf.patch_size for pf in files}
        if len(sizes) > 1:
            raise InputError(
                f"split: patch files have different patch sizes {sorted(sizes)}: "
                + ", ".join(f"{pf.path.name}={pf.patch_size}" for pf in files)
            )
        names = _merged_label_names(files)
        rows = []
        for fi, pf in enumerate(files):
            remap = np.array([names.index(n) for n in pf.label_names] + [UNLABELLED], np.int64)
            lab = remap[pf.labels] if len(pf) else np.zeros(0, np.int64)
            try:  # imported datasets that keep their published split say so per patch
                official = pf.column("official_split")
            except InputError:
                official = np.full(len(pf), "", dtype=object)
            rows.append(
                pd.DataFrame(
                    {
                        "source_file": str(pf.path),
                        "source_index": np.arange(len(pf)),
                        "slide_id": pf.slide_ids,
                        "case_id": pf.case_ids,
                        "label": lab,
                        "mpp": pf.mpp,
                        "official_split": official,
                        "_file": fi,
                    }
                )
            )
        man = pd.concat(rows, ignore_index=True)
        man["label_name"] = [names[i] if i >= 0 else "" for i in man["label"]]
        man["split"] = man["official_split"].to_numpy(dtype=object)
        free = (man["official_split"] == "").to_numpy()
        man.loc[free, "split"] = assign_splits(
            man.loc[free, "label"].to_numpy(), man.loc[free, group_by].to_numpy(), val, test, seed
        )
        check_split(man, group_by)
        _warn_mixed_mpp(man)
        spec = PatchFileSpec(
            patch_size=files[0].patch_size,
            label_names=names,
            coords_attrs=_merged_coords_attrs(files),
            root_attrs=dict(source="split", group_by=group_by, seed=seed),
        )
        man["split_index"] = -1
        referenced = copied = 0
        for split in SPLITS:
            sel = man[man["split"] == split]
            man.loc[sel.index, "split_index"] = np.arange(len(sel))
            with PatchWriter(
                outputs[split],
                PatchFileSpec(spec.patch_size, names, spec.coords_attrs, dict(spec.root_attrs, split=split)),
            ) as w:
                for fi, part in sel.groupby("_file", sort=True):
                    pf, src, labs = files[fi], part["source_index"].to_numpy(), part["label"].to_numpy()
                    for a, b in _runs(src):
                        view = b - a >= MIN_VIEW_RUN
                        for s in range(a, b, batch_size):
                            rows_idx = src[s : min(s + batch_size, b)]
                            batch = PatchBatch(
                                None if view else pf.read(rows_idx),
                                pf.coords[rows_idx],
                                labs[s : s + len(rows_idx)],
                                pf.slide_ids[rows_idx],
                                pf.case_ids[rows_idx],
                                pf.mpp[rows_idx],
                            )
                            if view:
                                w.append_view(pf.path, int(rows_idx[0]), batch)
                            else:
                                w.append(batch)
                        referenced += (b - a) * view
                        copied += (b - a) * (not view)
        log.info("split: %d patches referenced in the tile files, %d copied", referenced, copied)
    finally:
        for pf in files:
            pf.close()
    man = man.drop(columns=["_file", "mpp"])
    with atomic_path(manifest) as tmp:
        man.to_csv(tmp, sep="\t", index=False)
    counts = man.groupby(["split", "label_name"]).size().unstack(fill_value=0)
    log.info("split by %s (val %.2f, test %.2f, seed %d):\n%s", group_by, val, test, seed, counts.to_string())
    if summary is not None:
        with atomic_path(summary) as tmp:
            counts.to_csv(tmp, sep="\t")
    return man
