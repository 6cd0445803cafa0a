"""``prepare_base_model``: a Stable Diffusion pipeline as a local diffusers folder.

A hub id or local folder is loaded with ``StableDiffusionPipeline.from_pretrained`` and saved
(safetensors), so every later rule reads one local, validated folder. ``tiny`` builds a small
randomly initialised UNet / VAE / CLIP text encoder of the real classes, with OpenAI's CLIP BPE
tokenizer (from open_clip's shipped vocabulary) and a zero-terminal-SNR v-prediction schedule, so
tests and the demo run the same loading, LoRA and sampling code as a real model, offline.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..atomic import atomic_dir
from ..errors import InputError
from . import SOURCE_FILE
from .clip_tokenizer import CLIP_MAX_LENGTH, build_clip_tokenizer

log = logging.getLogger(__name__)
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def build_tiny_pipeline(tokenizer_dir: str | os.PathLike, seed: int = 0):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(tokenizer_dir)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64, 64),
        latent_channels=4,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        sample_size=64,
    )
    text_encoder = clip_text_encoder(
        tokenizer, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    # zero terminal SNR with v-prediction (Lin et al. 2024): with Stable Diffusion's schedule the last
    # timestep still shows the image's mean colour, so a model learns to read the colour from the noise
    # and sampling cannot make it follow the prompt; the demo's classes differ mostly in colour
    return assemble_pipeline(
        unet,
        vae,
        text_encoder,
        tokenizer,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
    )


def clip_text_encoder(tokenizer, **size):
    """A randomly initialised ``CLIPTextModel`` of the given size whose vocabulary and special tokens are ``tokenizer``'s."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=CLIP_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **size,
        )
    )


def assemble_pipeline(unet, vae, text_encoder, tokenizer, **scheduler_options):
    """A ``StableDiffusionPipeline`` of these components with Stable Diffusion 1.x's DDIM noise schedule
    (its published scheduler config, changed by ``scheduler_options``) and no safety checker, as the tiny
    base and the GPU bench build it."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(
        **{
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "set_alpha_to_one": False,
            "steps_offset": 1,
            **scheduler_options,
        }
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def check_base_model_dir(path: str | os.PathLike) -> None:
    """A diffusers SD folder with every component; the error names what is missing."""
    p = Path(path)
    index = p / "model_index.json"
    if not index.is_file():
        raise InputError(f"base model {p}: no model_index.json (not a diffusers pipeline folder)")
    missing = [c for c in COMPONENTS if not (p / c).is_dir()]
    if missing:
        raise InputError(f"base model {p}: missing component folder(s) {missing}")
    declared = json.loads(index.read_text())
    absent = [c for c in COMPONENTS if c not in declared]
    if absent:
        raise InputError(f"base model {p}: model_index.json lacks {absent}")


def prepare_base_model(name: str, out_dir: str | os.PathLike) -> Path:
    """Write the base pipeline to ``out_dir`` (atomically: a temp folder renamed at the end)."""
    from diffusers import StableDiffusionPipeline

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        if name == "tiny":
            pipe = build_tiny_pipeline(tmp / "tokenizer")
        else:
            if Path(name).is_dir():
                check_base_model_dir(name)
            log.info("loading base model %s with from_pretrained", name)
            pipe = StableDiffusionPipeline.from_pretrained(name, safety_checker=None, requires_safety_checker=False)
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / SOURCE_FILE).write_text(json.dumps({"base_model": name}))
        check_base_model_dir(tmp)
    log.info("base model %s saved to %s", name, out)
    return out
