"""``cache_latents``: every training patch through the VAE once, every distinct prompt through the
text encoder once (as kohya's trainer caches), so training steps run the UNet only.

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
``latent_crop``, ``text_chunks``, ``uncond_index`` and ``data_fingerprint``: a SHA-256 of what the
cache was made from (every patch's pixels and label, the label names, every patch's prompt and TIL
level, the resolution, flip, crop and text-chunk settings), so training can tell a cache of changed
data or prompts from the one it checkpointed.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
VIEWS = {(False, False): "", (True, False): FLIPPED, (False, True): "_vflip", (True, True): "_hvflip"}  # (h, v) flip -> suffix
PROMPT_INDEX, PROMPT_EMBEDS, PROMPT_IDS, PROMPTS = "prompt_index", "prompt_embeds", "prompt_ids", "prompts"
LABELS, LABEL_NAMES, TIL_LEVEL = "labels", "label_names", "til_level"
SCALING_FACTOR, RESOLUTION, BASE_MODEL = "scaling_factor", "resolution", "base_model"
RANDOM_FLIP, UNCOND_INDEX, DATA_FINGERPRINT = "random_flip", "uncond_index", "data_fingerprint"
VERTICAL_FLIP, CROP, LATENT_CROP, TEXT_CHUNKS = "vertical_flip", "crop", "latent_crop", "text_chunks"


def to_model_input(imgs: np.ndarray, resolution: int):
    """uint8 (B,S,S,3) -> float tensor (B,3,R,R) in [-1, 1], resized when S != R."""
    import torch

    if imgs.shape[1] != resolution:
        imgs = np.stack([np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.Resampling.BICUBIC)) for im in imgs])
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x


def cache_latents(patch_h5, prompts_tsv, base_dir, out_h5, resolution: int, random_flip: bool, batch_size: int = 32,
                  device: str = "auto", progress: bool = True, vertical_flip: bool = False, crop: int | None = None,
                  text_chunks: int = 1) -> int:
    """Write the cache; with ``crop`` the patches are encoded whole at their own size and ``resolution``
    must be ``crop`` (the training and sampling size)."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import AutoTokenizer, CLIPTextModel

    device = pick_device(device)
    base = Path(base_dir)
    prompts = pd.read_csv(prompts_tsv, sep="\t", keep_default_na=False)
    with PatchFile(patch_h5) as pf:
        n = len(pf)
        if n == 0:
            raise InputError(f"{patch_h5}: the training split is empty; nothing to fine-tune on")
        if len(prompts) != n:
            raise InputError(f"{prompts_tsv} has {len(prompts)} prompts but {patch_h5} has {n} patches; rerun build_prompts")
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae").to(device).eval()
        down = 2 ** (len(vae.config.block_out_channels) - 1)
        if resolution % down:
            raise InputError(f"train.resolution {resolution} must be a multiple of the VAE's downsampling factor {down}")
        # with a crop the whole patch is encoded at its own size, and each training step crops its latent
        encoded = resolution
        if crop:
            encoded = pf.patch_size
            if crop != resolution:
                raise InputError(f"train.crop {crop} and train.resolution {resolution} differ; set train.resolution to null "
                                 "(the crop is the training and sampling size)")
            if crop > encoded or encoded % down:
                raise InputError(f"train.crop {crop} needs patches of at least {crop} px whose size is a multiple of the "
                                 f"VAE's {down}; {patch_h5} has {encoded} px patches (tiling.patch_size)")
        til = prompts[TIL_LEVEL].to_numpy(np.int64) if TIL_LEVEL in prompts.columns else None
        tokenizer = AutoTokenizer.from_pretrained(base, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(device).eval()
        distinct = sorted(set(prompts["prompt"]))
        index = {p: i for i, p in enumerate(distinct)}
        ids, embeds = encode_prompts(tokenizer, text_encoder, distinct + [""], text_chunks)
        shape = (n, vae.config.latent_channels, encoded // down, encoded // down)
        # what the cache is made of; the pixels are hashed as they stream through the VAE below
        digest = hashlib.sha256(json.dumps({"prompts": prompts["prompt"].tolist(), "label_names": list(pf.label_names),
                                            "resolution": resolution, "random_flip": random_flip,
                                            **({"vertical_flip": True} if vertical_flip else {}),
                                            **({"crop": crop} if crop else {}),
                                            **({"text_chunks": text_chunks} if text_chunks != 1 else {}),
                                            **({"til_level": til.tolist()} if til is not None else {})}).encode())
        digest.update(np.ascontiguousarray(pf.labels, np.int64).tobytes())
        flips = [(h, v) for h in ((False, True) if random_flip else (False,)) for v in ((False, True) if vertical_flip else (False,))]
        t0 = time.perf_counter()
        with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h:
            names = [k + VIEWS[f] for f in flips for k in (MEAN, STD)]
            dsets = {k: h.create_dataset(k, shape, np.float16, chunks=(1, *shape[1:])) for k in names}
            h[PROMPT_INDEX] = np.array([index[p] for p in prompts["prompt"]], np.int64)
            h[PROMPT_EMBEDS] = embeds.astype(np.float16)
            h[PROMPT_IDS] = ids.astype(np.int64)
            h[PROMPTS] = np.array(distinct + [""], dtype=h5py.string_dtype("utf-8"))
            h[LABELS] = pf.labels
            h[LABELS].attrs[LABEL_NAMES] = np.array(pf.label_names, dtype=h5py.string_dtype("utf-8"))
            if til is not None:
                h[TIL_LEVEL] = til
            h.attrs.update({SCALING_FACTOR: float(vae.config.scaling_factor), RESOLUTION: resolution, BASE_MODEL: str(base),
                            RANDOM_FLIP: random_flip, VERTICAL_FLIP: vertical_flip, CROP: crop or 0,
                            LATENT_CROP: (crop or 0) // down, TEXT_CHUNKS: text_chunks, UNCOND_INDEX: len(distinct)})
            with torch.inference_mode():
                for rows, imgs in progress_bar(pf.iter_batches(batch_size), total=-(-n // batch_size), desc="cache latents",
                                       disable=not progress, mininterval=2):
                    digest.update(np.ascontiguousarray(imgs).tobytes())
                    x = to_model_input(imgs, encoded).to(device)
                    views = [(VIEWS[(hf, vf)], torch.flip(x, dims=[3] * hf + [2] * vf) if hf or vf else x) for hf, vf in flips]
                    for suffix, v in views:
                        dist = vae.encode(v).latent_dist
                        dsets[MEAN + suffix][rows[0] : rows[-1] + 1] = dist.mean.float().cpu().numpy()
                        dsets[STD + suffix][rows[0] : rows[-1] + 1] = dist.std.float().cpu().numpy()
            h.attrs[DATA_FINGERPRINT] = digest.hexdigest()
    log.info("cached latents of %d patches (%s, %d flipped views%s) and %d distinct prompts (%d tokens) on %s in %.1f s; "
             "data fingerprint %s", n, shape[1:], len(flips) - 1, f", cropped to {crop} px per step" if crop else "",
             len(distinct), ids.shape[1], device, time.perf_counter() - t0, digest.hexdigest()[:12])
    return n


class LatentCache:
    """Reader of a cache made by ``cache_latents``; latents are read lazily per batch."""

    def __init__(self, path):
        self.path = Path(path)
        self.h5 = h5py.File(self.path, "r")
        if DATA_FINGERPRINT not in self.h5.attrs:
            self.h5.close()
            raise InputError(f"latent cache {self.path} has no {DATA_FINGERPRINT} (written by an older histosynth); "
                             "delete it and rerun cache_latents")
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
