"""``cache_latents``: every training patch through the VAE once, every distinct prompt through the
text encoder once (as kohya's trainer caches), so training steps run the UNet only.

The image half depends only on the training split, the resolution and the flip setting, so the
workflow writes it once (``cache_image_latents``, ``results/latents/images/``) and every
experiment's cache (``cache_prompt_latents``) holds its own prompt embeddings plus HDF5 virtual
datasets over that shared file, referenced relative to the cache's folder (the two must stay side
by side; ``LatentCache`` refuses a cache whose image file is missing). ``cache_latents`` writes
both halves into one self-contained file.

This module owns the cache's HDF5 format: ``cache_latents`` writes it, ``LatentCache`` reads it,
and the key names below are the only place they are spelled.

Layout: ``latent_mean`` / ``latent_std`` (N, C, h, w) float16 — the VAE posterior, so each step can
still draw ``mean + std * eps`` like ``latent_dist.sample()`` — and the same for each flipped view
of the image when flips are on: ``*_flip`` (horizontal, ``random_flip``), ``*_vflip`` (vertical,
``vertical_flip``) and ``*_hvflip`` (both); ``prompt_index`` (N,) into ``prompt_embeds``
(P+1, T, D) whose last row is the empty prompt (classifier-free dropout), T = 77 x ``text_chunks``
(``text_encoding.py``); ``prompt_ids`` (P+1, T) token ids for text-encoder training; ``prompts``
(P+1,); ``labels`` (N,) with attribute ``label_names``; ``til_level`` (N,) PathLDM's per-patch TIL
level (0 low, 1-2 high, -1 unknown) when the prompts carry one. With ``crop``, the VAE encodes every
whole patch at its own size and training crops ``crop`` px (``latent_crop`` latent pixels) at a
random offset each step. File attributes ``scaling_factor``, ``resolution`` (the training image
size: ``crop`` when set), ``base_model``, ``random_flip``, ``vertical_flip``, ``crop`` (0 = none),
``latent_crop``, ``text_chunks``, ``uncond_index``, ``image_fingerprint`` (SHA-256 of every patch's
pixels and label, the label names, the resolution, flip and crop settings) and ``data_fingerprint``:
a SHA-256 of the image fingerprint, every patch's prompt and TIL level and the text-chunk setting, so
training can tell a cache of changed data or prompts from the one it checkpointed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image
from ..progress import progress_bar

from ..atomic import atomic_path
from ..device import pick_device
from ..errors import InputError
from ..patchfile import PatchFile
from .text_encoding import encode_prompts

log = logging.getLogger(__name__)

# dataset and attribute names of the cache file
MEAN, STD, FLIPPED = "latent_mean", "latent_std", "_flip"
VIEWS = {
    (False, False): "",
    (True, False): FLIPPED,
    (False, True): "_vflip",
    (True, True): "_hvflip",
}  # (h, v) flip -> suffix
PROMPT_INDEX, PROMPT_EMBEDS, PROMPT_IDS, PROMPTS = "prompt_index", "prompt_embeds", "prompt_ids", "prompts"
LABELS, LABEL_NAMES, TIL_LEVEL = "labels", "label_names", "til_level"
SCALING_FACTOR, RESOLUTION, BASE_MODEL = "scaling_factor", "resolution", "base_model"
RANDOM_FLIP, UNCOND_INDEX, DATA_FINGERPRINT = "random_flip", "uncond_index", "data_fingerprint"
IMAGE_FINGERPRINT = "image_fingerprint"
VERTICAL_FLIP, CROP, LATENT_CROP, TEXT_CHUNKS = "vertical_flip", "crop", "latent_crop", "text_chunks"
LATENT_NAMES = [k + suffix for suffix in VIEWS.values() for k in (MEAN, STD)]


def to_model_input(imgs: np.ndarray, resolution: int):
    """uint8 (B,S,S,3) -> float tensor (B,3,R,R) in [-1, 1], resized when S != R."""
    import torch

    if imgs.shape[1] != resolution:
        imgs = np.stack(
            [np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.Resampling.BICUBIC)) for im in imgs]
        )
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x


def _open_models(base: Path, device: str, vae: bool, text: bool):
    from diffusers import AutoencoderKL
    from transformers import AutoTokenizer, CLIPTextModel

    out = {}
    if vae:
        out["vae"] = AutoencoderKL.from_pretrained(base, subfolder="vae").to(device).eval()
    if text:
        out["tokenizer"] = AutoTokenizer.from_pretrained(base, subfolder="tokenizer")
        out["text_encoder"] = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(device).eval()
    return out


# the VAE's activations grow with the pixels of a batch (SD 1.5's VAE on the CPU: ~5 GB for 32 patches
# at 256 px, bench/bench_memory.py --stage sd), so 512 px patches go 8 at a time, not 32
ENCODE_BATCH, ENCODE_PIXELS_PER_BATCH = 32, 32 * 256 * 256


def encode_batch_size(encoded_px: int) -> int:
    """Patches per VAE batch at ``encoded_px``: ENCODE_BATCH, fewer where they exceed ENCODE_PIXELS_PER_BATCH."""
    return max(1, min(ENCODE_BATCH, ENCODE_PIXELS_PER_BATCH // (encoded_px * encoded_px)))


def _write_image_latents(
    h: h5py.File,
    pf: PatchFile,
    vae,
    base: Path,
    resolution: int,
    random_flip: bool,
    batch_size: int | None,
    device: str,
    progress: bool,
    vertical_flip: bool = False,
    crop: int | None = None,
) -> str:
    """Every patch of ``pf`` through the VAE into ``h``, in every flipped view asked for; with ``crop`` the
    patches are encoded whole at their own size and ``resolution`` must be ``crop`` (the training and
    sampling size). Returns the image fingerprint (also an attribute)."""
    import torch

    n = len(pf)
    if n == 0:
        raise InputError(f"{pf.path}: the training split is empty; nothing to fine-tune on")
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    if resolution % down:
        raise InputError(f"train.resolution {resolution} must be a multiple of the VAE's downsampling factor {down}")
    # with a crop the whole patch is encoded at its own size, and each training step crops its latent
    encoded = resolution
    if crop:
        encoded = pf.patch_size
        if crop != resolution:
            raise InputError(
                f"train.crop {crop} and train.resolution {resolution} differ; set train.resolution to null "
                "(the crop is the training and sampling size)"
            )
        if crop > encoded or encoded % down:
            raise InputError(
                f"train.crop {crop} needs patches of at least {crop} px whose size is a multiple of the "
                f"VAE's {down}; {pf.path} has {encoded} px patches (tiling.patch_size)"
            )
    shape = (n, vae.config.latent_channels, encoded // down, encoded // down)
    batch_size = batch_size or encode_batch_size(encoded)
    # what the latents are made of; the pixels are hashed as they stream through the VAE below
    digest = hashlib.sha256(
        json.dumps(
            {
                "label_names": list(pf.label_names),
                "resolution": resolution,
                "random_flip": random_flip,
                **({"vertical_flip": True} if vertical_flip else {}),
                **({"crop": crop} if crop else {}),
            }
        ).encode()
    )
    digest.update(np.ascontiguousarray(pf.labels, np.int64).tobytes())
    flips = [
        (hf, vf)
        for hf in ((False, True) if random_flip else (False,))
        for vf in ((False, True) if vertical_flip else (False,))
    ]
    names = [k + VIEWS[f] for f in flips for k in (MEAN, STD)]
    dsets = {k: h.create_dataset(k, shape, np.float16, chunks=(1, *shape[1:])) for k in names}
    h[LABELS] = pf.labels
    h[LABELS].attrs[LABEL_NAMES] = np.array(pf.label_names, dtype=h5py.string_dtype("utf-8"))
    h.attrs.update(
        {
            SCALING_FACTOR: float(vae.config.scaling_factor),
            RESOLUTION: resolution,
            BASE_MODEL: str(base),
            RANDOM_FLIP: random_flip,
            VERTICAL_FLIP: vertical_flip,
            CROP: crop or 0,
            LATENT_CROP: (crop or 0) // down,
        }
    )
    t0 = time.perf_counter()
    with torch.inference_mode():
        for rows, imgs in progress_bar(
            pf.iter_batches(batch_size),
            total=-(-n // batch_size),
            desc="cache latents",
            disable=not progress,
            mininterval=2,
        ):
            digest.update(np.ascontiguousarray(imgs).tobytes())
            x = to_model_input(imgs, encoded).to(device)
            views = [(VIEWS[(hf, vf)], torch.flip(x, dims=[3] * hf + [2] * vf) if hf or vf else x) for hf, vf in flips]
            for suffix, v in views:
                dist = vae.encode(v).latent_dist
                dsets[MEAN + suffix][rows[0] : rows[-1] + 1] = dist.mean.float().cpu().numpy()
                dsets[STD + suffix][rows[0] : rows[-1] + 1] = dist.std.float().cpu().numpy()
    h.attrs[IMAGE_FINGERPRINT] = digest.hexdigest()
    log.info(
        "cached latents of %d patches (%s, %d flipped views%s) on %s in %.1f s; image fingerprint %s",
        n,
        shape[1:],
        len(flips) - 1,
        f", cropped to {crop} px per step" if crop else "",
        device,
        time.perf_counter() - t0,
        digest.hexdigest()[:12],
    )
    return digest.hexdigest()


def _read_prompts(prompts_tsv, n: int) -> pd.DataFrame:
    prompts = pd.read_csv(prompts_tsv, sep="\t", keep_default_na=False)
    if len(prompts) != n:
        raise InputError(
            f"{prompts_tsv} has {len(prompts)} prompts but the training split has {n} patches; rerun build_prompts"
        )
    return prompts


def _write_prompts(
    h: h5py.File, prompts_tsv, n: int, image_fingerprint: str, tokenizer, text_encoder, text_chunks: int = 1
) -> None:
    """Every distinct prompt through the text encoder once (``text_chunks`` x 77 tokens); the data
    fingerprint combines the images', the prompts' and their TIL levels'."""
    prompts = _read_prompts(prompts_tsv, n)
    til = prompts[TIL_LEVEL].to_numpy(np.int64) if TIL_LEVEL in prompts.columns else None
    distinct = sorted(set(prompts["prompt"]))
    index = {p: i for i, p in enumerate(distinct)}
    ids, embeds = encode_prompts(tokenizer, text_encoder, distinct + [""], text_chunks)
    h[PROMPT_INDEX] = np.array([index[p] for p in prompts["prompt"]], np.int64)
    h[PROMPT_EMBEDS] = embeds.astype(np.float16)
    h[PROMPT_IDS] = ids.astype(np.int64)
    h[PROMPTS] = np.array(distinct + [""], dtype=h5py.string_dtype("utf-8"))
    if til is not None:
        h[TIL_LEVEL] = til
    h.attrs[UNCOND_INDEX] = len(distinct)
    h.attrs[TEXT_CHUNKS] = text_chunks
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "images": image_fingerprint,
                "prompts": prompts["prompt"].tolist(),
                **({"text_chunks": text_chunks} if text_chunks != 1 else {}),
                **({"til_level": til.tolist()} if til is not None else {}),
            }
        ).encode()
    )
    h.attrs[DATA_FINGERPRINT] = fingerprint.hexdigest()
    log.info(
        "encoded %d distinct prompts (%d tokens); data fingerprint %s",
        len(distinct),
        ids.shape[1],
        fingerprint.hexdigest()[:12],
    )


def cache_image_latents(
    patch_h5,
    base_dir,
    out_h5,
    resolution: int,
    random_flip: bool,
    batch_size: int | None = None,
    device: str = "auto",
    progress: bool = True,
    vertical_flip: bool = False,
    crop: int | None = None,
) -> int:
    """The image half of the cache, shared by every experiment on the same split, resolution and flips:
    every patch of ``patch_h5`` through the VAE of ``base_dir`` at ``resolution`` (and its mirror image
    when ``random_flip``, upside down when ``vertical_flip``; whole, for per-step crops, with ``crop``)
    into ``out_h5``, ``batch_size`` patches at a time (None: ``encode_batch_size``). Returns the number
    of patches."""
    device = pick_device(device)
    base = Path(base_dir)
    with PatchFile(patch_h5) as pf, atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h:
        _write_image_latents(
            h,
            pf,
            _open_models(base, device, vae=True, text=False)["vae"],
            base,
            resolution,
            random_flip,
            batch_size,
            device,
            progress,
            vertical_flip=vertical_flip,
            crop=crop,
        )
        return len(pf)


def cache_prompt_latents(image_h5, prompts_tsv, base_dir, out_h5, device: str = "auto", text_chunks: int = 1) -> int:
    """An experiment's cache: its prompt embeddings, and the shared image latents of ``image_h5`` as HDF5
    virtual datasets (referenced by a path relative to ``out_h5``'s folder, not copied)."""
    device = pick_device(device)
    base = Path(base_dir)
    models = _open_models(base, device, vae=False, text=True)
    rel = os.path.relpath(Path(image_h5).resolve(), Path(out_h5).resolve().parent)
    with h5py.File(image_h5, "r") as img, atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h:
        if IMAGE_FINGERPRINT not in img.attrs:
            raise InputError(f"{image_h5} is not an image-latent file of cache_image_latents (no {IMAGE_FINGERPRINT})")
        if img.attrs[BASE_MODEL] != str(base):
            raise InputError(f"{image_h5} was encoded with the VAE of {img.attrs[BASE_MODEL]}, not {base}")
        for name in LATENT_NAMES:
            if name in img:
                layout = h5py.VirtualLayout(img[name].shape, img[name].dtype)
                layout[...] = h5py.VirtualSource(rel, name, shape=img[name].shape)
                h.create_virtual_dataset(name, layout)
        h[LABELS] = img[LABELS][:]
        h[LABELS].attrs[LABEL_NAMES] = img[LABELS].attrs[LABEL_NAMES]
        h.attrs.update(
            {
                k: img.attrs[k]
                for k in (
                    SCALING_FACTOR,
                    RESOLUTION,
                    BASE_MODEL,
                    RANDOM_FLIP,
                    VERTICAL_FLIP,
                    CROP,
                    LATENT_CROP,
                    IMAGE_FINGERPRINT,
                )
            }
        )
        n = int(img[MEAN].shape[0])
        _write_prompts(
            h,
            prompts_tsv,
            n,
            str(img.attrs[IMAGE_FINGERPRINT]),
            models["tokenizer"],
            models["text_encoder"],
            text_chunks,
        )
    return n


def cache_latents(
    patch_h5,
    prompts_tsv,
    base_dir,
    out_h5,
    resolution: int,
    random_flip: bool,
    batch_size: int | None = None,
    device: str = "auto",
    progress: bool = True,
    vertical_flip: bool = False,
    crop: int | None = None,
    text_chunks: int = 1,
) -> int:
    """A self-contained cache (image latents and prompts in one file), with the same fingerprint as the
    shared-image pair ``cache_image_latents`` + ``cache_prompt_latents`` over the same inputs."""
    device = pick_device(device)
    base = Path(base_dir)
    models = _open_models(base, device, vae=True, text=True)
    with PatchFile(patch_h5) as pf:
        if len(pf) == 0:
            raise InputError(f"{patch_h5}: the training split is empty; nothing to fine-tune on")
        _read_prompts(prompts_tsv, len(pf))  # a stale prompt file fails before the VAE pass, not after
        with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h:
            fp = _write_image_latents(
                h,
                pf,
                models["vae"],
                base,
                resolution,
                random_flip,
                batch_size,
                device,
                progress,
                vertical_flip=vertical_flip,
                crop=crop,
            )
            _write_prompts(h, prompts_tsv, len(pf), fp, models["tokenizer"], models["text_encoder"], text_chunks)
        return len(pf)


class LatentCache:
    """Reader of a cache made by ``cache_latents`` / ``cache_prompt_latents``; latents are read lazily per batch."""

    def __init__(self, path):
        self.path = Path(path)
        self.h5 = h5py.File(self.path, "r")
        if DATA_FINGERPRINT not in self.h5.attrs:
            self.h5.close()
            raise InputError(
                f"latent cache {self.path} has no {DATA_FINGERPRINT} (written by an older histosynth); "
                "delete it and rerun cache_latents"
            )
        for name in LATENT_NAMES:
            # HDF5 reads a missing source of a virtual dataset as zeros: refuse instead of training on them
            if name in self.h5 and self.h5[name].is_virtual:
                for src in {m.file_name for m in self.h5[name].virtual_sources()}:
                    if not (self.path.parent / src).is_file():
                        self.h5.close()
                        raise InputError(
                            f"latent cache {self.path}: its image latents {src} (relative to its folder) are "
                            "missing; the shared image-latent file must stay beside it (rerun cache_latents)"
                        )
        self.n = int(self.h5[MEAN].shape[0])
        self.fingerprint = str(self.h5.attrs[DATA_FINGERPRINT])
        self.flip = bool(self.h5.attrs[RANDOM_FLIP])
        self.vflip = bool(self.h5.attrs.get(VERTICAL_FLIP, False))
        self.views = [suffix for suffix in VIEWS.values() if MEAN + suffix in self.h5]
        self.crop = int(self.h5.attrs.get(CROP, 0)) or None
        self.latent_crop = int(self.h5.attrs.get(LATENT_CROP, 0))
        self.text_chunks = int(self.h5.attrs.get(TEXT_CHUNKS, 1))
        self.til_level = self.h5[TIL_LEVEL][:] if TIL_LEVEL in self.h5 else None
        self.prompt_index = self.h5[PROMPT_INDEX][:]
        self.embeds = self.h5[PROMPT_EMBEDS][:]
        self.ids = self.h5[PROMPT_IDS][:]
        self.prompts = self.h5[PROMPTS].asstr()[:].tolist()
        self.labels = self.h5[LABELS][:]
        self.label_names = [str(x) for x in self.h5[LABELS].attrs[LABEL_NAMES]]
        self.uncond = int(self.h5.attrs[UNCOND_INDEX])
        self.scaling_factor = float(self.h5.attrs[SCALING_FACTOR])
        self.resolution = int(self.h5.attrs[RESOLUTION])

    def view(self, hflip: np.ndarray, vflip: np.ndarray) -> np.ndarray:
        """Index into ``views`` of the view flipped horizontally where ``hflip`` and vertically where ``vflip``."""
        return np.array([self.views.index(VIEWS[(bool(h), bool(v))]) for h, v in zip(hflip, vflip)], np.int64)

    def read(self, idx: np.ndarray, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of rows ``idx``, each from view ``view`` (an index into ``views``, 0 = unflipped)."""
        mean = np.empty((len(idx), *self.h5[MEAN].shape[1:]), np.float32)
        std = np.empty_like(mean)
        view = np.asarray(view, np.int64)
        for v, suffix in enumerate(self.views):
            pos = np.flatnonzero(view == v)
            if pos.size:
                uniq, inv = np.unique(idx[pos], return_inverse=True)  # h5py wants sorted, unique rows
                mean[pos] = self.h5[MEAN + suffix][uniq][inv]
                std[pos] = self.h5[STD + suffix][uniq][inv]
        return mean, std

    def close(self) -> None:
        self.h5.close()

    def __enter__(self) -> "LatentCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
