"""``cache_latents``: every training patch through the VAE once, every distinct prompt through the
text encoder once (as kohya's trainer caches), so training steps run the UNet only.

This module owns the cache's HDF5 format: ``cache_latents`` writes it, ``LatentCache`` reads it,
and the key names below are the only place they are spelled.

Layout: ``latent_mean`` / ``latent_std`` (N, C, h, w) float16 — the VAE posterior, so each step can
still draw ``mean + std * eps`` like ``latent_dist.sample()`` — and the same for the horizontally
flipped image when random flips are on (``*_flip``); ``prompt_index`` (N,) into ``prompt_embeds``
(P+1, 77, D) whose last row is the empty prompt (classifier-free dropout); ``prompt_ids`` (P+1, 77)
token ids for text-encoder training; ``prompts`` (P+1,); ``labels`` (N,) with attribute
``label_names``; file attributes ``scaling_factor``, ``resolution``, ``base_model``,
``random_flip``, ``uncond_index`` and ``data_fingerprint``: a SHA-256 of what the cache was made
from (every patch's pixels and label, the label names, every patch's prompt, the resolution and the
flip setting), so training can tell a cache of changed data or prompts from the one it checkpointed.
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

log = logging.getLogger(__name__)

# dataset and attribute names of the cache file
MEAN, STD, FLIPPED = "latent_mean", "latent_std", "_flip"
PROMPT_INDEX, PROMPT_EMBEDS, PROMPT_IDS, PROMPTS = "prompt_index", "prompt_embeds", "prompt_ids", "prompts"
LABELS, LABEL_NAMES = "labels", "label_names"
SCALING_FACTOR, RESOLUTION, BASE_MODEL = "scaling_factor", "resolution", "base_model"
RANDOM_FLIP, UNCOND_INDEX, DATA_FINGERPRINT = "random_flip", "uncond_index", "data_fingerprint"


def to_model_input(imgs: np.ndarray, resolution: int):
    """uint8 (B,S,S,3) -> float tensor (B,3,R,R) in [-1, 1], resized when S != R."""
    import torch

    if imgs.shape[1] != resolution:
        imgs = np.stack([np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.Resampling.BICUBIC)) for im in imgs])
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x


def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: str, batch: int = 64):
    import torch

    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    out = []
    with torch.inference_mode():
        for s in range(0, len(ids), batch):
            out.append(text_encoder(ids[s : s + batch].to(device))[0].float().cpu())
    return ids.numpy(), torch.cat(out).numpy()


def cache_latents(patch_h5, prompts_tsv, base_dir, out_h5, resolution: int, random_flip: bool, batch_size: int = 32,
                  device: str = "auto", progress: bool = True) -> int:
    """Encode every patch of ``patch_h5`` with the VAE of ``base_dir`` at ``resolution`` (and its mirror
    image when ``random_flip``) and every distinct prompt of ``prompts_tsv`` with its text encoder,
    into ``out_h5``: the cache that training reads instead of pixels. Returns the number of patches."""
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
        tokenizer = AutoTokenizer.from_pretrained(base, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(device).eval()
        distinct = sorted(set(prompts["prompt"]))
        index = {p: i for i, p in enumerate(distinct)}
        ids, embeds = encode_prompts(tokenizer, text_encoder, distinct + [""], device)
        shape = (n, vae.config.latent_channels, resolution // down, resolution // down)
        # what the cache is made of; the pixels are hashed as they stream through the VAE below
        digest = hashlib.sha256(json.dumps({"prompts": prompts["prompt"].tolist(), "label_names": list(pf.label_names),
                                            "resolution": resolution, "random_flip": random_flip}).encode())
        digest.update(np.ascontiguousarray(pf.labels, np.int64).tobytes())
        t0 = time.perf_counter()
        with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h:
            names = [MEAN, STD] + ([MEAN + FLIPPED, STD + FLIPPED] if random_flip else [])
            dsets = {k: h.create_dataset(k, shape, np.float16, chunks=(1, *shape[1:])) for k in names}
            h[PROMPT_INDEX] = np.array([index[p] for p in prompts["prompt"]], np.int64)
            h[PROMPT_EMBEDS] = embeds.astype(np.float16)
            h[PROMPT_IDS] = ids.astype(np.int64)
            h[PROMPTS] = np.array(distinct + [""], dtype=h5py.string_dtype("utf-8"))
            h[LABELS] = pf.labels
            h[LABELS].attrs[LABEL_NAMES] = np.array(pf.label_names, dtype=h5py.string_dtype("utf-8"))
            h.attrs.update({SCALING_FACTOR: float(vae.config.scaling_factor), RESOLUTION: resolution, BASE_MODEL: str(base),
                            RANDOM_FLIP: random_flip, UNCOND_INDEX: len(distinct)})
            with torch.inference_mode():
                for rows, imgs in progress_bar(pf.iter_batches(batch_size), total=-(-n // batch_size), desc="cache latents",
                                       disable=not progress, mininterval=2):
                    digest.update(np.ascontiguousarray(imgs).tobytes())
                    x = to_model_input(imgs, resolution).to(device)
                    views = [("", x)] + ([(FLIPPED, torch.flip(x, dims=[3]))] if random_flip else [])
                    for suffix, v in views:
                        dist = vae.encode(v).latent_dist
                        dsets[MEAN + suffix][rows[0] : rows[-1] + 1] = dist.mean.float().cpu().numpy()
                        dsets[STD + suffix][rows[0] : rows[-1] + 1] = dist.std.float().cpu().numpy()
            h.attrs[DATA_FINGERPRINT] = digest.hexdigest()
    log.info("cached latents of %d patches (%s) and %d distinct prompts on %s in %.1f s; data fingerprint %s", n, shape[1:],
             len(distinct), device, time.perf_counter() - t0, digest.hexdigest()[:12])
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
        self.prompt_index = self.h5[PROMPT_INDEX][:]
        self.embeds = self.h5[PROMPT_EMBEDS][:]
        self.ids = self.h5[PROMPT_IDS][:]
        self.prompts = self.h5[PROMPTS].asstr()[:].tolist()
        self.labels = self.h5[LABELS][:]
        self.label_names = [str(x) for x in self.h5[LABELS].attrs[LABEL_NAMES]]
        self.uncond = int(self.h5.attrs[UNCOND_INDEX])
        self.scaling_factor = float(self.h5.attrs[SCALING_FACTOR])
        self.resolution = int(self.h5.attrs[RESOLUTION])

    def read(self, idx: np.ndarray, flipped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of rows ``idx``, from the flipped view where ``flipped``."""
        mean = np.empty((len(idx), *self.h5[MEAN].shape[1:]), np.float32)
        std = np.empty_like(mean)
        for suffix, sel in (("", ~flipped), (FLIPPED, flipped)):
            pos = np.flatnonzero(sel)
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
