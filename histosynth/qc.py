"""Optional patch quality control for tiling and import (config ``qc:``; both steps off by default).

- **Blur filter**: the variance of the Laplacian of the grey patch (Pech-Pacheco et al., 2000), computed on
  a whole batch at once; patches below ``qc.blur.threshold`` are dropped (as slideflow's blur QC, but per
  patch). The score depends on the pixel size: the default suits 0.5-1 um/px; featureless patches
  (background, fat) and patches enlarged from small sources score low too.
- **Stain normalisation**: Macenko or Reinhard from ``torchstain`` (numpy backend), fitted once on
  ``qc.stain.reference`` (an image file) or, without one, on the first patch of the slide/dataset that
  carries enough stain. Patches with too little stain, or on which the normaliser fails numerically, are
  kept as they are and counted, never a crash.

``PatchQC.apply`` is the one hook the tiler and the importers call on every batch; ``PatchQC.finish``
records the counts in the patch file's attributes and the log.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import InputError
from .patchfile import PatchBatch

log = logging.getLogger(__name__)

# torchstain's own constants: transmitted light intensity and the optical density under which a pixel
# counts as unstained (background); our "stained fraction" uses the same definition
IO, BETA = 240, 0.15
GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], np.float32)
BLUR_COLOUR = (255, 140, 0)  # thumbnail outline of blur-rejected patches
MOSTLY_BLURRY = (
    0.5  # warn when more than this fraction of a file is rejected: the threshold may not suit its pixel size
)


def blur_scores(imgs: np.ndarray) -> np.ndarray:
    """(N,H,W,3) uint8 -> (N,) variance of the Laplacian of each grey patch (grey in [0, 1])."""
    from scipy import ndimage as ndi

    imgs = np.asarray(imgs)
    if len(imgs) == 0:
        return np.zeros(0, np.float32)
    # skimage.color.rgb2gray's luminance weights, as one float32 product (rgb2gray itself is ~10x slower on a batch)
    grey = imgs.astype(np.float32) @ (GREY_WEIGHTS / 255)
    return ndi.laplace(grey, axes=(1, 2)).var(axis=(1, 2))


def stained_fraction(imgs: np.ndarray) -> np.ndarray:
    """(N,H,W,3) or (H,W,3) uint8 -> fraction of pixels whose optical density is >= BETA in every channel."""
    od = -np.log((np.asarray(imgs, np.float32) + 1) / IO)
    return (od >= BETA).all(axis=-1).mean(axis=(-2, -1))


def active_settings(qc: dict) -> dict:
    """Only the settings of the QC steps that are switched on, so editing an inactive step reruns nothing."""
    return {step: (cfg if cfg.get("activate") else {"activate": False}) for step, cfg in qc.items()}


@contextmanager
def _numerical_trouble_raises():
    """Inside, numpy's invalid/zero-division results and RuntimeWarnings (e.g. the covariance of no pixels)
    raise, so a normaliser that cannot handle a patch fails instead of writing garbage pixels."""
    with np.errstate(divide="raise", invalid="raise"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


FAILURES = (ArithmeticError, ValueError, RuntimeWarning, np.linalg.LinAlgError)


def _normaliser(method: str):
    from torchstain.base.normalizers import MacenkoNormalizer, ReinhardNormalizer

    return {"macenko": MacenkoNormalizer, "reinhard": ReinhardNormalizer}[method](backend="numpy")


def _take(batch: PatchBatch, keep: np.ndarray) -> PatchBatch:
    """The rows of ``batch`` where ``keep`` is true."""
    pick = lambda v: np.asarray(v, dtype=object if not isinstance(v, np.ndarray) else None)[keep]  # noqa: E731
    return dataclasses.replace(
        batch,
        imgs=batch.imgs[keep],
        coords=np.asarray(batch.coords)[keep],
        labels=np.asarray(batch.labels)[keep],
        slide_ids=list(pick(batch.slide_ids)),
        case_ids=list(pick(batch.case_ids)),
        mpp=np.asarray(batch.mpp)[keep],
        extra={k: pick(v) for k, v in batch.extra.items()},
    )


class PatchQC:
    """QC state of one slide or dataset: the fitted normaliser and the counts."""

    def __init__(self, qc: dict | None, source: str):
        qc = qc or {}
        blur, stain = qc.get("blur", {}), qc.get("stain", {})
        self.source = source  # "slide X" / "patch dataset Y", for messages
        self.blur_threshold = float(blur["threshold"]) if blur.get("activate") else None
        self.stain_method = stain["method"] if stain.get("activate") else None
        self.min_stained = float(stain.get("min_stained_fraction", 0.0))
        self.reference = stain.get("reference") or ""
        self.n_in = self.n_blurry = self.n_normalised = self.n_unnormalised = 0
        self._rejected: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._normaliser = None
        self.reference_used = ""
        if self.stain_method and self.reference:
            self._fit_reference_image(Path(self.reference))

    @property
    def active(self) -> bool:
        return self.blur_threshold is not None or self.stain_method is not None

    def _fit_reference_image(self, path: Path) -> None:
        from PIL import Image, UnidentifiedImageError

        where = f"{self.source}: qc.stain.reference {path}"
        try:
            with Image.open(path) as im:
                ref = np.asarray(im.convert("RGB"))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
            raise InputError(f"{where}: cannot read the stain-normalisation reference image ({e})") from e
        frac = float(stained_fraction(ref))
        if frac < self.min_stained:
            raise InputError(
                f"{where}: the stain-normalisation reference is blank (only {frac:.1%} of its pixels are "
                f"stained, qc.stain.min_stained_fraction is {self.min_stained:.0%}); give an image of "
                "well-stained tissue"
            )
        try:
            self._normaliser = self._fit(ref)
        except FAILURES as e:
            raise InputError(f"{where}: {self.stain_method} cannot be fitted on this image ({e})") from e
        self.reference_used = str(path)

    def _fit(self, ref: np.ndarray):
        norm = _normaliser(self.stain_method)
        with _numerical_trouble_raises():
            norm.fit(ref)
        return norm

    def apply(self, batch: PatchBatch) -> PatchBatch:
        """Drop blurry patches, stain-normalise the rest; returns the batch to write."""
        if not self.active or len(batch) == 0:
            return batch
        self.n_in += len(batch)
        if self.blur_threshold is not None:
            scores = blur_scores(batch.imgs)
            self._scores.append(scores)
            sharp = scores >= self.blur_threshold
            self.n_blurry += int((~sharp).sum())
            self._rejected.append(np.asarray(batch.coords).reshape(-1, 2)[~sharp])
            if not sharp.all():
                batch = _take(batch, sharp)
        if self.stain_method is not None and len(batch):
            batch = dataclasses.replace(batch, imgs=self._normalise(batch.imgs))
        return batch

    def _normalise(self, imgs: np.ndarray) -> np.ndarray:
        out = imgs.copy()
        done = 0
        for i in np.flatnonzero(stained_fraction(imgs) >= self.min_stained):
            if self._normaliser is None:  # no reference image: the first patch with enough stain is the reference
                try:
                    self._normaliser = self._fit(imgs[i])
                    self.reference_used = f"first stained patch of {self.source}"
                except FAILURES:
                    continue
            try:
                with _numerical_trouble_raises():
                    if self.stain_method == "macenko":
                        out[i] = self._normaliser.normalize(imgs[i], stains=False)[0]
                    else:
                        out[i] = self._normaliser.normalize(imgs[i])
            except FAILURES:
                continue
            done += 1
        self.n_normalised += done
        self.n_unnormalised += len(imgs) - done
        return out

    @property
    def rejected_coords(self) -> np.ndarray:
        """Level-0 coords of the blur-rejected patches (for the thumbnail)."""
        return np.concatenate(self._rejected) if self._rejected else np.zeros((0, 2), np.int64)

    def attrs(self) -> dict:
        """What QC did, for the patch file's root attributes."""
        return dict(
            qc_blur_threshold=float("nan") if self.blur_threshold is None else self.blur_threshold,
            qc_n_blurry=self.n_blurry,
            qc_stain_method=self.stain_method or "none",
            qc_stain_reference=self.reference_used,
            qc_n_normalised=self.n_normalised,
            qc_n_unnormalised=self.n_unnormalised,
        )

    def legend(self) -> list[tuple[str, tuple[int, int, int] | None]]:
        """Thumbnail legend rows (text, outline colour or None) for the QC steps that ran."""
        out = []
        if self.blur_threshold is not None:
            out.append(
                (f"blurry, rejected: {self.n_blurry} (Laplacian variance < {self.blur_threshold:g})", BLUR_COLOUR)
            )
        if self.stain_method is not None:
            out.append(
                (
                    f"stain-normalised ({self.stain_method}): {self.n_normalised}, too pale/failed: {self.n_unnormalised}",
                    None,
                )
            )  # nothing to outline: normalised patches look like the others
        return out

    def finish(self, writer) -> None:
        """Record the counts in the patch file and the log (call before the writer closes)."""
        if not self.active:
            return
        writer.set_attrs(**self.attrs())
        if self.blur_threshold is not None:
            scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
            log.info(
                "%s: qc blur: %d of %d patches rejected (Laplacian variance < %g; median score %.4g)",
                self.source,
                self.n_blurry,
                self.n_in,
                self.blur_threshold,
                np.median(scores) if len(scores) else float("nan"),
            )
            if self.n_in and self.n_blurry > MOSTLY_BLURRY * self.n_in:
                log.warning(
                    "%s: qc blur rejected %d of %d patches: check qc.blur.threshold (%g) for this pixel size "
                    "(median score %.4g)",
                    self.source,
                    self.n_blurry,
                    self.n_in,
                    self.blur_threshold,
                    np.median(scores),
                )
        if self.stain_method is not None:
            log.info(
                "%s: qc stain (%s, reference: %s): %d patches normalised, %d kept unnormalised (too little stain "
                "or the normaliser failed)",
                self.source,
                self.stain_method,
                self.reference_used or "none found",
                self.n_normalised,
                self.n_unnormalised,
            )
