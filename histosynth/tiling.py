"""``tile_slide``: one whole-slide image -> a patch HDF5 and a QC thumbnail."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .progress import progress_bar

from .errors import InputError
from .labels import DAB_LABEL_NAMES, DabParams, dab_labels
from .scores import TUMOR_LEVEL_NAMES, level, lookup, read_scores
from .patchfile import PAD_FRACTION, UNLABELLED, PatchBatch, PatchFileSpec, PatchWriter, magnification_for_mpp
from .plots import write_thumbnail
from .qc import PatchQC
from .tissue import TissueParams, batch_pixel_tissue, slide_tissue_mask, to_rgb_uint8
from .wsi import PatchReader, ReadPlan, grid_coords, mask_fraction, open_slide, plan_read, slide_mpp

log = logging.getLogger(__name__)
# finest tiling.mpp allowed, as a multiple of the slide's own resolution: 4x upsampling already
# turns one scanned pixel into 16; beyond it a typo (0.001 for 1.0) queues millions of 1-pixel reads
MAX_UPSAMPLING = 4.0
# deflate level of the patch pixels (ISA-L's 1 when installed, see histosynth.patchfile). Measured on
# JPEG-90 slide patches (bench/bench_tiling.py, README): 0.8 ms per 256 px patch against zlib 1's
# 4.4 ms, for 0-11 % more bytes; higher ISA-L levels cost more CPU and save ~2 %.
COMPRESSION_LEVEL = 1
KEEP_RULES = ("fraction", "four_points", "both")
GRID_ORIGINS = ("slide", "tissue")
# DAB labels are fractions of a patch's pixels: every other pixel in each direction (a quarter of
# the work) estimates them from thousands of pixels per patch
LABEL_STRIDE = 2


@dataclass(frozen=True)
class TilingParams:
    """Config ``tiling:`` (defaults and documentation live in the config schema)."""

    patch_size: int
    mpp: float
    stride: int | None
    min_tissue_fraction: float
    keep_rule: str
    grid_origin: str
    pad_edges: bool
    assume_mpp: float | None
    batch_size: int
    labels: dict
    tissue: dict

    @classmethod
    def from_config(cls, cfg: dict) -> "TilingParams":
        # slides_per_job only bundles slides into jobs (the workflow's rules): not how a slide is tiled
        p = cls(**{k: v for k, v in cfg.items() if k != "slides_per_job"})
        if p.keep_rule not in KEEP_RULES:
            raise ValueError(f"tiling.keep_rule must be one of {KEEP_RULES}, got {p.keep_rule!r}")
        if p.grid_origin not in GRID_ORIGINS:
            raise ValueError(f"tiling.grid_origin must be one of {GRID_ORIGINS}, got {p.grid_origin!r}")
        return p

    @property
    def step(self) -> int:
        return self.stride or self.patch_size


@dataclass
class SlideTiles:
    """What tiling one slide produced (also stored as attributes of the HDF5)."""

    slide_id: str
    n_patches: int
    n_candidates: int
    base_mpp: float
    mpp_source: str
    plan: ReadPlan
    tissue_area_mm2: float
    saturation_threshold: float
    seconds: float


def four_point_hits(mask: np.ndarray, mask_downsample: float, coords: np.ndarray, footprint: int) -> np.ndarray:
    """CLAM's ``four_pt`` test on a mask: is any of four inner points (centre +- a quarter of the
    footprint, diagonally) tissue? Points outside the slide count as background."""
    if len(coords) == 0:
        return np.zeros(0, bool)
    centre = coords + footprint // 2
    shift = int(footprint // 2 * 0.5)
    hit = np.zeros(len(coords), bool)
    h, w = mask.shape
    for dx, dy in ((-shift, -shift), (shift, shift), (shift, -shift), (-shift, shift)):
        mx = np.floor((centre[:, 0] + dx) / mask_downsample).astype(np.int64)
        my = np.floor((centre[:, 1] + dy) / mask_downsample).astype(np.int64)
        inside = (mx >= 0) & (mx < w) & (my >= 0) & (my < h)
        hit[inside] |= mask[my[inside], mx[inside]]
    return hit


def keep_patches(
    mask: np.ndarray, mask_downsample: float, coords: np.ndarray, footprint: int, rule: str, min_fraction: float
) -> np.ndarray:
    """Boolean keep flag per grid position under ``tiling.keep_rule``."""
    frac_ok = mask_fraction(mask, mask_downsample, coords, footprint) >= min_fraction
    if rule == "fraction":
        return frac_ok
    points = four_point_hits(mask, mask_downsample, coords, footprint)
    return points if rule == "four_points" else points & frac_ok


def tissue_grid_patches(
    mask: np.ndarray,
    mask_downsample: float,
    size: tuple[int, int],
    footprint: int,
    step: int,
    pad: bool,
    rule: str,
    min_fraction: float,
) -> tuple[np.ndarray, int]:
    """Kept patches on one grid per tissue piece, as CLAM's per-contour grids: each connected
    piece of ``mask`` (8-connected) gets a grid starting at its bounding box's top-left corner
    and spanning that box; positions are kept by ``rule`` on the whole mask.

    Pieces are taken largest first; a later piece's patch is dropped when it lies less than one
    grid step from an already kept patch in both x and y (it would repeat pixels a neighbouring
    grid already took). Returns the kept level-0 coordinates, row-major, and the candidate count.
    """
    width, height = size
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    boxes = ndi.find_objects(labels)
    areas = ndi.sum_labels(mask, labels, np.arange(1, n + 1)) if n else np.zeros(0)
    # the boxes in level-0 px; without padding no patch may reach past the slide
    last_x = width - (1 if pad else footprint)
    last_y = height - (1 if pad else footprint)
    grids = []
    for i in np.argsort(-areas, kind="stable"):
        ys, xs = boxes[i]
        x0 = min(int(xs.start * mask_downsample), max(last_x, 0))
        y0 = min(int(ys.start * mask_downsample), max(last_y, 0))
        gx = np.arange(x0, min(int(np.ceil(xs.stop * mask_downsample)), last_x + 1), step, dtype=np.int64)
        gy = np.arange(y0, min(int(np.ceil(ys.stop * mask_downsample)), last_y + 1), step, dtype=np.int64)
        cx, cy = np.meshgrid(gx, gy)
        grids.append(np.stack([cx.ravel(), cy.ravel()], axis=1))
    cand = np.concatenate(grids) if grids else np.zeros((0, 2), np.int64)
    piece = np.repeat(np.arange(len(grids)), [len(g) for g in grids])
    # one keep test over all pieces' positions (it builds a summed-area table of the whole mask)
    keep = keep_patches(mask, mask_downsample, cand, footprint, rule, min_fraction)
    kept = [np.zeros((0, 2), np.int64)]
    for k in range(len(grids)):
        mine = cand[keep & (piece == k)]
        taken = np.concatenate(kept)
        if len(taken) and len(mine):
            # Chebyshev distance <= step - 0.5 on integer coordinates: |dx| < step and |dy| < step
            dist, _ = cKDTree(taken).query(mine, k=1, p=np.inf, distance_upper_bound=step - 0.5)
            mine = mine[np.isinf(dist)]
        kept.append(mine)
    coords = np.concatenate(kept)
    return coords[np.lexsort((coords[:, 0], coords[:, 1]))], len(cand)


def background_rgb(thumb_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The glass colour: median of the thumbnail's bright non-tissue pixels (white if there are none)."""
    glass = thumb_rgb[~mask]
    glass = glass[glass.min(axis=1) >= np.percentile(glass.min(axis=1), 50)] if len(glass) else glass
    return np.median(glass, axis=0).astype(np.uint8) if len(glass) else np.full(3, 255, np.uint8)


def pad_outside(
    imgs: np.ndarray, coords: np.ndarray, size: tuple[int, int], downsample: float, footprint: int, colour: np.ndarray
) -> np.ndarray:
    """Paint the part of each patch beyond the slide's right/bottom edge with ``colour``; return
    the padded fraction of each patch (0 for patches inside the slide)."""
    width, height = size
    inside_x = np.clip(width - coords[:, 0], 0, footprint)
    inside_y = np.clip(height - coords[:, 1], 0, footprint)
    for i in np.flatnonzero((inside_x < footprint) | (inside_y < footprint)):
        imgs[i, :, int(np.ceil(inside_x[i] / downsample)) :] = colour
        imgs[i, int(np.ceil(inside_y[i] / downsample)) :, :] = colour
    return (1 - inside_x * inside_y / float(footprint * footprint)).astype(np.float32)


def prefetch(it: Iterable) -> Iterator:
    """Iterate ``it`` one item ahead on a background thread (reading overlaps the consumer's work)."""
    it = iter(it)
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="prefetch") as ex:
        fut = ex.submit(next, it, done)
        while (item := fut.result()) is not done:
            fut = ex.submit(next, it, done)
            yield item


def _label_setup(tiling: TilingParams, sample_label: str | None, label_names: list[str]):
    method = tiling.labels["method"]
    if method == "dab":
        return DAB_LABEL_NAMES, DabParams(tiling.labels["dab_threshold"], tiling.labels["min_positive_fraction"])
    if method == "scores":  # PathLDM: the patch's tumour level from its per-patch scores
        return TUMOR_LEVEL_NAMES, None
    names = list(label_names)
    if sample_label is not None and sample_label not in names:
        names.append(sample_label)
    return names, None


def tile_slide(
    slide_path: str | os.PathLike,
    slide_id: str,
    case_id: str,
    out_h5: str | os.PathLike,
    out_thumbnail: str | os.PathLike,
    tiling: TilingParams,
    sample_label: str | None = None,
    label_names: list[str] = (),
    threads: int = 1,
    progress: bool = True,
    qc: dict | None = None,
) -> SlideTiles:
    """Tile one slide into ``out_h5`` (patches, coordinates, labels, QC flags) and draw ``out_thumbnail``.

    ``tiling`` holds the ``tiling:`` settings; ``sample_label`` is the sheet's label for the slide
    (used when ``tiling.labels.method`` takes it); ``qc`` is the ``qc:`` section. Nothing is cached:
    the patch file is written atomically, so a failed run leaves the previous one in place.
    """
    t0 = time.perf_counter()
    tissue = TissueParams.from_config(tiling.tissue)
    slide = open_slide(slide_path, slide_id)
    base_mpp, mpp_source = slide_mpp(slide, slide_id, tiling.assume_mpp)
    plan = plan_read(slide, base_mpp, tiling.mpp, tiling.patch_size, tiling.step)
    if plan.downsample < 1 / MAX_UPSAMPLING:
        raise InputError(
            f"slide {slide_id!r}: tiling.mpp = {tiling.mpp:g} um/px is {1 / plan.downsample:.0f}x finer than the slide's "
            f"{base_mpp:g} um/px ({mpp_source}); at most {MAX_UPSAMPLING:g}x upsampling is allowed, as finer patches "
            f"would only invent pixels ({len(grid_coords(*slide.dimensions, plan.footprint, plan.step))} reads of "
            f"{plan.read_size} px); set tiling.mpp >= {base_mpp / MAX_UPSAMPLING:g}"
        )
    if plan.downsample < 1:
        log.warning(
            "slide %s: target %.3f um/px is finer than the scan (%.3f um/px); patches are upsampled %.2fx",
            slide_id,
            tiling.mpp,
            base_mpp,
            1 / plan.downsample,
        )
    width, height = slide.dimensions
    log.info(
        "slide %s: %dx%d px at %.4f um/px (%s), %d levels; reading level %d (downsample %.2f), %d px -> %d px",
        slide_id,
        width,
        height,
        base_mpp,
        mpp_source,
        slide.level_count,
        plan.level,
        plan.level_downsample,
        plan.read_size,
        tiling.patch_size,
    )

    # tissue mask on a low-resolution image; openslide picks the best level for the thumbnail
    mask_ds_target = max(tissue.mask_mpp / base_mpp, 1.0)
    thumb = slide.get_thumbnail((max(1, int(width / mask_ds_target)), max(1, int(height / mask_ds_target))))
    thumb_rgb = to_rgb_uint8(np.asarray(thumb.convert("RGB")))
    mask_ds = width / thumb_rgb.shape[1]
    mask, threshold = slide_tissue_mask(thumb_rgb, tissue, mask_mpp=mask_ds * base_mpp)
    tissue_area_mm2 = float(mask.sum() * (mask_ds * base_mpp) ** 2 / 1e6)

    if tiling.grid_origin == "tissue":
        coords, n_candidates = tissue_grid_patches(
            mask,
            mask_ds,
            (width, height),
            plan.footprint,
            plan.step,
            tiling.pad_edges,
            tiling.keep_rule,
            tiling.min_tissue_fraction,
        )
    else:
        candidates = grid_coords(width, height, plan.footprint, plan.step, pad=tiling.pad_edges)
        coords = candidates[
            keep_patches(mask, mask_ds, candidates, plan.footprint, tiling.keep_rule, tiling.min_tissue_fraction)
        ]
        n_candidates = len(candidates)
    background = background_rgb(thumb_rgb, mask)
    log.info(
        "slide %s: tissue %.2f mm^2 (saturation threshold %.0f); kept %d of %d grid positions (keep_rule %s, "
        "grid_origin %s, min_tissue_fraction %.2f, pad_edges %s, background %s)",
        slide_id,
        tissue_area_mm2,
        threshold,
        len(coords),
        n_candidates,
        tiling.keep_rule,
        tiling.grid_origin,
        tiling.min_tissue_fraction,
        tiling.pad_edges,
        background.tolist(),
    )
    if len(coords) == 0:
        log.warning("slide %s: no tissue found; writing an empty patch file", slide_id)

    names, dab = _label_setup(tiling, sample_label, list(label_names))
    fixed_label = names.index(sample_label) if (dab is None and sample_label is not None) else UNLABELLED
    scores_tsv = tiling.labels.get("scores") if tiling.labels["method"] == "scores" else None
    if tiling.labels["method"] == "scores" and not scores_tsv:
        raise InputError(
            "tiling.labels.method 'scores' needs tiling.labels.scores (a TSV of slide_id, x, y, tumor, til)"
        )
    scores = read_scores(scores_tsv, slide_id) if scores_tsv else None
    spec = PatchFileSpec(
        patch_size=tiling.patch_size,
        label_names=names,
        coords_attrs=dict(
            patch_size=plan.read_size,
            patch_level=plan.level,
            downsample=np.array([plan.level_downsample] * 2),
            level_dim=np.array(slide.level_dimensions[plan.level]),
            downsampled_level_dim=np.array(slide.level_dimensions[plan.level]),
            name=slide_id,
            mpp=tiling.mpp,
            magnification=magnification_for_mpp(tiling.mpp),
            footprint_level0=plan.footprint,
        ),
        root_attrs=dict(
            source="slide",
            slide_id=slide_id,
            case_id=case_id,
            slide_path=str(slide_path),
            base_mpp=base_mpp,
            mpp_source=mpp_source,
            mpp=tiling.mpp,
            tissue_area_mm2=tissue_area_mm2,
            saturation_threshold=threshold,
            label_method=tiling.labels["method"],
            n_candidates=n_candidates,
            keep_rule=tiling.keep_rule,
            grid_origin=tiling.grid_origin,
            min_tissue_fraction=tiling.min_tissue_fraction,
            background_rgb=background,
        ),
        extra={PAD_FRACTION: "float"},
    )
    # three stages overlap: reading (one batch ahead), tissue/labels (this thread), gzip + HDF5 write
    # (one writer thread; h5py runs the filter without holding the GIL). The writer takes about a
    # core, so `threads` counts it: threads - 1 decode threads (bench/bench_tiling.py).
    reader = PatchReader(slide_path, slide_id, plan, tiling.patch_size, max(1, threads - 1))
    patch_qc = PatchQC(qc, source=f"slide {slide_id}")  # optional blur filter / stain normalisation (histosynth.qc)
    with (
        PatchWriter(out_h5, spec, compression_level=COMPRESSION_LEVEL) as writer,
        ThreadPoolExecutor(1, thread_name_prefix="hdf5-writer") as write_pool,
    ):
        bar = progress_bar(
            total=len(coords), desc=f"tile {slide_id}", unit="patch", disable=not progress, mininterval=2
        )
        pending = None
        for xy, imgs in prefetch(reader.iter_batches(coords, tiling.batch_size)):
            pad = pad_outside(imgs, xy, (width, height), plan.downsample, plan.footprint, background)
            if dab is not None:
                sub = imgs[:, ::LABEL_STRIDE, ::LABEL_STRIDE]
                labels = dab_labels(sub, dab, batch_pixel_tissue(sub, tissue, threshold))
            elif scores is not None:
                labels = level(lookup(scores, [slide_id] * len(xy), xy, scores_tsv)["tumor"])
            else:
                labels = np.full(len(imgs), fixed_label)
            batch = patch_qc.apply(
                PatchBatch(
                    imgs,
                    xy,
                    labels,
                    [slide_id] * len(imgs),
                    [case_id] * len(imgs),
                    np.full(len(imgs), tiling.mpp, np.float32),
                    extra={PAD_FRACTION: pad},
                )
            )
            if pending is not None:
                pending.result()  # keeps row order and surfaces write errors here
            pending = write_pool.submit(writer.append, batch)
            bar.update(len(imgs))
        if pending is not None:
            pending.result()
        bar.close()
        patch_qc.finish(writer)
    write_thumbnail(
        slide,
        mask,
        coords,
        plan.footprint,
        out_thumbnail,
        title=f"{slide_id}: {writer.n} patches",
        rejected=patch_qc.rejected_coords,
        legend=patch_qc.legend(),
    )
    slide.close()
    result = SlideTiles(
        slide_id,
        writer.n,
        n_candidates,
        base_mpp,
        mpp_source,
        plan,
        tissue_area_mm2,
        threshold,
        time.perf_counter() - t0,
    )
    log.info("slide %s: wrote %d patches to %s in %.1f s", slide_id, writer.n, out_h5, result.seconds)
    return result
