"""``tile_slide``: one whole-slide image -> a patch HDF5 and a QC thumbnail."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .atomic import atomic_path
from .errors import InputError
from .labels import DAB_LABEL_NAMES, DabParams, dab_labels
from .patchfile import UNLABELLED, PatchBatch, PatchFileSpec, PatchWriter, magnification_for_mpp
from .qc import BLUR_COLOUR as QC_REJECTED_COLOUR, PatchQC
from .tissue import TissueParams, pixel_tissue, slide_tissue_mask, to_rgb_uint8
from .wsi import PatchReader, ReadPlan, grid_coords, mask_fraction, open_slide, plan_read, slide_mpp

log = logging.getLogger(__name__)
PREVIEW_PX = 1024
# finest tiling.mpp allowed, as a multiple of the slide's own resolution: 4x upsampling already
# turns one scanned pixel into 16; beyond it a typo (0.001 for 1.0) queues millions of 1-pixel reads
MAX_UPSAMPLING = 4.0


@dataclass(frozen=True)
class TilingParams:
    """Config ``tiling:`` (defaults and documentation live in the config schema)."""

    patch_size: int
    mpp: float
    stride: int | None
    min_tissue_fraction: float
    assume_mpp: float | None
    batch_size: int
    labels: dict
    tissue: dict

    @classmethod
    def from_config(cls, cfg: dict) -> "TilingParams":
        return cls(**cfg)

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


def _label_setup(tiling: TilingParams, sample_label: str | None, label_names: list[str]):
    method = tiling.labels["method"]
    if method == "dab":
        return DAB_LABEL_NAMES, DabParams(tiling.labels["dab_threshold"], tiling.labels["min_positive_fraction"])
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
        log.warning("slide %s: target %.3f um/px is finer than the scan (%.3f um/px); patches are upsampled %.2fx",
                    slide_id, tiling.mpp, base_mpp, 1 / plan.downsample)
    width, height = slide.dimensions
    log.info("slide %s: %dx%d px at %.4f um/px (%s), %d levels; reading level %d (downsample %.2f), %d px -> %d px",
             slide_id, width, height, base_mpp, mpp_source, slide.level_count, plan.level, plan.level_downsample,
             plan.read_size, tiling.patch_size)

    # tissue mask on a low-resolution image; openslide picks the best level for the thumbnail
    mask_ds_target = max(tissue.mask_mpp / base_mpp, 1.0)
    thumb = slide.get_thumbnail((max(1, int(width / mask_ds_target)), max(1, int(height / mask_ds_target))))
    thumb_rgb = to_rgb_uint8(np.asarray(thumb.convert("RGB")))
    mask_ds = width / thumb_rgb.shape[1]
    mask, threshold = slide_tissue_mask(thumb_rgb, tissue, mask_mpp=mask_ds * base_mpp)
    tissue_area_mm2 = float(mask.sum() * (mask_ds * base_mpp) ** 2 / 1e6)

    candidates = grid_coords(width, height, plan.footprint, plan.step)
    frac = mask_fraction(mask, mask_ds, candidates, plan.footprint)
    coords = candidates[frac >= tiling.min_tissue_fraction]
    log.info("slide %s: tissue %.2f mm^2 (saturation threshold %.0f); %d of %d grid positions have >= %.0f%% tissue",
             slide_id, tissue_area_mm2, threshold, len(coords), len(candidates), 100 * tiling.min_tissue_fraction)
    if len(coords) == 0:
        log.warning("slide %s: no tissue found; writing an empty patch file", slide_id)

    names, dab = _label_setup(tiling, sample_label, list(label_names))
    fixed_label = names.index(sample_label) if (dab is None and sample_label is not None) else UNLABELLED
    spec = PatchFileSpec(
        patch_size=tiling.patch_size,
        label_names=names,
        coords_attrs=dict(
            patch_size=plan.read_size, patch_level=plan.level,
            downsample=np.array([plan.level_downsample] * 2), level_dim=np.array(slide.level_dimensions[plan.level]),
            downsampled_level_dim=np.array(slide.level_dimensions[plan.level]), name=slide_id,
            mpp=tiling.mpp, magnification=magnification_for_mpp(tiling.mpp), footprint_level0=plan.footprint,
        ),
        root_attrs=dict(
            source="slide", slide_id=slide_id, case_id=case_id, slide_path=str(slide_path), base_mpp=base_mpp,
            mpp_source=mpp_source, mpp=tiling.mpp, tissue_area_mm2=tissue_area_mm2,
            saturation_threshold=threshold, label_method=tiling.labels["method"], n_candidates=len(candidates),
        ),
    )
    reader = PatchReader(slide_path, slide_id, plan, tiling.patch_size, threads)
    patch_qc = PatchQC(qc, source=f"slide {slide_id}")  # optional blur filter / stain normalisation (histosynth.qc)
    with PatchWriter(out_h5, spec) as writer:
        bar = tqdm(total=len(coords), desc=f"tile {slide_id}", unit="patch", disable=not progress, mininterval=2)
        for xy, imgs in reader.iter_batches(coords, tiling.batch_size):
            if dab is not None:
                masks = np.stack([pixel_tissue(im, tissue, threshold)[0] for im in imgs])
                labels = dab_labels(imgs, dab, masks)
            else:
                labels = np.full(len(imgs), fixed_label)
            writer.append(patch_qc.apply(PatchBatch(imgs, xy, labels, [slide_id] * len(imgs), [case_id] * len(imgs),
                                                    np.full(len(imgs), tiling.mpp, np.float32))))
            bar.update(len(imgs))
        bar.close()
        patch_qc.finish(writer)
    write_thumbnail(slide, mask, coords, plan.footprint, out_thumbnail, title=f"{slide_id}: {writer.n} patches",
                    rejected=patch_qc.rejected_coords, legend=patch_qc.legend())
    slide.close()
    result = SlideTiles(slide_id, writer.n, len(candidates), base_mpp, mpp_source, plan, tissue_area_mm2, threshold,
                        time.perf_counter() - t0)
    log.info("slide %s: wrote %d patches to %s in %.1f s", slide_id, writer.n, out_h5, result.seconds)
    return result


def write_thumbnail(slide, mask: np.ndarray, coords: np.ndarray, footprint: int, out_png: str | os.PathLike, title: str = "",
                    mpp: float | None = None, rejected: np.ndarray = (), legend: list = ()) -> None:
    """Slide preview: the tissue mask as a contour over the untinted stain, every kept patch
    outlined, QC-rejected patches (``rejected``, level-0 x, y) outlined in their own colour, and a legend
    band with a scale bar in µm (``mpp``: level-0 µm/px, else the slide's own) and one row per
    ``legend`` (text, colour) entry."""
    from PIL import ImageFilter, ImageFont

    width, height = slide.dimensions
    preview = slide.get_thumbnail((PREVIEW_PX, PREVIEW_PX)).convert("RGB")
    scale = preview.width / width
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize(preview.size, Image.Resampling.NEAREST)
    edge = Image.fromarray((np.asarray(m.filter(ImageFilter.MaxFilter(3))) != np.asarray(m.filter(ImageFilter.MinFilter(3))))
                           .astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))  # ~3 px contour, the stain stays visible
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
