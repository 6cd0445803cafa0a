"""``cache_latents``: every training patch through the VAE once, every distinct prompt through the
text encoder once (as kohya's trainer caches), so training steps run the UNet only.

HDF5 layout: ``latent_mean`` / ``latent_std`` (N, C, h, w) float16 — the VAE posterior, so each
step can still draw ``mean + std * eps`` like ``latent_dist.sample()`` — and the same for the
horizontally flipped image when random flips are on (``*_flip``); ``prompt_index`` (N,) into
``prompt_embeds`` (P+1, 77, D) whose last row is the empty prompt (classifier-free dropout);
``prompt_ids`` (P+1, 77) token ids for text-encoder training; ``labels`` (N,); attrs:
``scaling_factor``, ``resolution``, base model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..atomic import atomic_path
from ..device import pick_device
from ..errors import InputError
from ..patchfile import PatchFile

log = logging.getLogger(__name__)


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
        t0 = time.perf_counter()
        with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h:
            names = ["latent_mean", "latent_std"] + (["latent_mean_flip", "latent_std_flip"] if random_flip else [])
            dsets = {k: h.create_dataset(k, shape, np.float16, chunks=(1, *shape[1:])) for k in names}
            h["prompt_index"] = np.array([index[p] for p in prompts["prompt"]], np.int64)
            h["prompt_embeds"] = embeds.astype(np.float16)
            h["prompt_ids"] = ids.astype(np.int64)
            h["prompts"] = np.array(distinct + [""], dtype=h5py.string_dtype("utf-8"))
            h["labels"] = pf.labels
            h["labels"].attrs["label_names"] = np.array(pf.label_names, dtype=h5py.string_dtype("utf-8"))
            h.attrs.update(scaling_factor=float(vae.config.scaling_factor), resolution=resolution, base_model=str(base),
                           random_flip=random_flip, uncond_index=len(distinct))
            with torch.inference_mode():
                for rows, imgs in tqdm(pf.iter_batches(batch_size), total=-(-n // batch_size), desc="cache latents",
                                       disable=not progress, mininterval=2):
                    x = to_model_input(imgs, resolution).to(device)
                    views = [("", x)] + ([("_flip", torch.flip(x, dims=[3]))] if random_flip else [])
                    for suffix, v in views:
                        dist = vae.encode(v).latent_dist
                        dsets["latent_mean" + suffix][rows[0] : rows[-1] + 1] = dist.mean.float().cpu().numpy()
                        dsets["latent_std" + suffix][rows[0] : rows[-1] + 1] = dist.std.float().cpu().numpy()
    log.info("cached latents of %d patches (%s) and %d distinct prompts on %s in %.1f s", n, shape[1:], len(distinct), device,
             time.perf_counter() - t0)
    return n
