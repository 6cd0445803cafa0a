"""``pretrain_base``: teach the random ``tiny`` base model the demo's tissue before any experiment.

A random tiny model only ever samples coloured noise, so LoRA on top of it cannot show whether the
method works. This step makes ``tiny`` behave like a (very small) pretrained Stable Diffusion:

1. the VAE learns to reconstruct the training patches (``AutoencoderKL`` trained as diffusers'
   ``train_autoencoderkl.py`` does, without its LPIPS / GAN terms: L1 reconstruction of the decoded
   posterior sample + ``kl_weight`` x the posterior's KL), and its ``scaling_factor`` is set to
   1 / std of the training latents, the rule Stable Diffusion's 0.18215 was chosen by;
2. the UNet is fully fine-tuned on those latents through the workflow's own training code
   (``histosynth.diffusion.train.fine_tune``, ``method: full``) with label prompts (or empty ones),
   and with ``train_text_encoder`` the tiny text encoder with it: a random CLIP text model maps
   "DAB-negative" and "DAB-positive" prompts to states that differ by a few per cent, too little for
   the UNet to learn a class condition in a few hundred steps.

The tiny base is built with a zero-terminal-SNR noise schedule and v-prediction (``base_model.py``):
the demo's classes differ mostly in overall colour, which Stable Diffusion's own schedule cannot
tie to the prompt (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed").

Everything lives under ``<work root>/<settings hash>-<data fingerprint>/``: the hash of the
``pretrain`` settings, resolution and untrained base, and a SHA-256 of the training patches' pixels
and labels, so a cache of other settings or data is never reused. Each stage's result is kept there;
a killed job redoes only the unfinished stage, and the UNet stage resumes from its newest
accelerate checkpoint. The output's ``histosynth_source.json`` names the key, so experiments'
checkpoints and trained folders (keyed by the base's source) never mix pretrained bases.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_dir, atomic_path
from ..config import default_config, settings_hash
from ..device import pick_device
from ..errors import InputError
from ..patchfile import PatchFile
from . import SOURCE_FILE
from .base_model import check_base_model_dir

log = logging.getLogger(__name__)


def patch_fingerprint(patch_h5) -> tuple[str, int]:
    """SHA-256 of every patch's pixels and label and of the label names; and the patch count."""
    with PatchFile(patch_h5) as pf:
        n = len(pf)
        if n == 0:
            raise InputError(f"{patch_h5}: the training split is empty; the tiny base cannot be pretrained")
        digest = hashlib.sha256(json.dumps(list(pf.label_names)).encode())
        digest.update(np.ascontiguousarray(pf.labels, np.int64).tobytes())
        for _, imgs in pf.iter_batches(256):
            digest.update(np.ascontiguousarray(imgs).tobytes())
    return digest.hexdigest(), n


def load_patches(patch_h5, resolution: int):
    """All training patches as a float tensor in [-1, 1] (the tiny base is for small demo data only)."""
    import torch

    from ..diffusion.latents import to_model_input

    with PatchFile(patch_h5) as pf:
        return torch.cat([to_model_input(imgs, resolution) for _, imgs in pf.iter_batches(256)])


def train_vae(base: Path, x, cfg: dict, device: str, out_dir: Path, progress: bool = True) -> dict:
    """Reconstruction training of the base's VAE on ``x``; saves it (with its new scaling_factor) to ``out_dir``."""
    import torch
    from diffusers import AutoencoderKL

    from ..progress import progress_bar

    torch.manual_seed(cfg["seed"])
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["vae_learning_rate"])
    g = torch.Generator().manual_seed(cfg["seed"])
    bs, losses, t0 = cfg["batch_size"], [], time.perf_counter()
    for step in progress_bar(
        range(cfg["vae_steps"]), desc="pretrain VAE", unit="step", disable=not progress, mininterval=2
    ):
        idx = torch.randint(0, len(x), (bs,), generator=g)
        # random crops: the VAE is convolutional, and crops cut the step's cost by (size / crop)^2 on a CPU
        c = min(cfg["vae_crop"], x.shape[-1])
        top, left = (int(v) for v in torch.randint(0, x.shape[-1] - c + 1, (2,), generator=g))
        batch = x[idx, :, top : top + c, left : left + c]
        flip = torch.rand(bs, generator=g) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(3), batch).to(device)
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=None)).sample
        rec = torch.nn.functional.l1_loss(recon, batch)
        kl = posterior.kl().mean() / batch[0].numel()  # per pixel, so kl_weight reads like the examples' 1e-6
        loss = rec + cfg["kl_weight"] * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(rec.item())
    vae.eval()
    with torch.inference_mode():
        lat = torch.cat([vae.encode(x[s : s + 64].to(device)).latent_dist.mean.cpu() for s in range(0, len(x), 64)])
    # as Stable Diffusion's 0.18215: unit-variance latents for the UNet
    scaling = float(1.0 / lat.flatten().std())
    vae.register_to_config(scaling_factor=scaling)
    with atomic_dir(out_dir) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
    summary = {
        "steps": cfg["vae_steps"],
        "first_l1": float(np.mean(losses[:10])),
        "last_l1": float(np.mean(losses[-10:])),
        "scaling_factor": scaling,
        "seconds": time.perf_counter() - t0,
    }
    log.info(
        "VAE pretraining: L1 %.4f -> %.4f in %.1f s; scaling_factor %.4f",
        summary["first_l1"],
        summary["last_l1"],
        summary["seconds"],
        scaling,
    )
    return summary


def unet_train_settings(cfg: dict, resolution: int) -> dict:
    """The ``train`` settings of the UNet stage: the schema defaults, full fine-tuning, the pretrain values."""
    steps = cfg["unet_steps"]
    return {
        **default_config()["train"],
        "method": "full",
        "train_text_encoder": cfg["train_text_encoder"],
        "resolution": resolution,
        "batch_size": cfg["batch_size"],
        "max_steps": steps,
        "learning_rate": cfg["unet_learning_rate"],
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 0,
        "snr_gamma": 5.0,
        "prompt_dropout": 0.1,
        "seed": cfg["seed"],
        "device": cfg["device"],
        "checkpoint_every": cfg["checkpoint_every"],
        "checkpoints_keep": 1,
        "validation_every": steps,
        "validation_images_per_class": 4,
    }


def pretrain_prompts(patch_h5, cfg: dict, prompts_cfg: dict, out_tsv: Path) -> None:
    """One prompt per training patch: its label prompt (``prompts.label_template``), or '' for ``prompts: empty``."""
    from ..text.prompts import PromptContext

    with PatchFile(patch_h5) as pf:
        ctx = PromptContext(str(patch_h5), pf.labels, list(pf.label_names), list(pf.case_ids), prompts_cfg)
    prompts = [ctx.label_prompt(i) if cfg["prompts"] == "label" else "" for i in range(len(ctx))]
    with atomic_path(out_tsv) as tmp:
        pd.DataFrame({"index": np.arange(len(prompts)), "prompt": prompts}).to_csv(tmp, sep="\t", index=False)


def pretrain_base(
    untrained_dir,
    patch_h5,
    out_dir,
    work_root,
    cfg: dict,
    prompts_cfg: dict,
    resolution: int,
    progress: bool = True,
    stop_after_step: int | None = None,
) -> dict:
    """Pretrain the tiny base ``untrained_dir`` on ``patch_h5`` (``cfg``: the ``pretrain`` settings) into ``out_dir``.

    ``work_root`` keeps each stage's result and the UNet's checkpoints under ``<settings hash>-<data fingerprint>/``
    (a rerun redoes only unfinished stages); ``prompts_cfg``: the label strategy's ``prompts`` settings (unused for
    ``prompts: empty``); returns a summary (per-stage numbers, seconds). ``stop_after_step`` ends the UNet stage
    after that checkpoint, as a killed job would (tests).
    """
    from ..diffusion.latents import cache_latents
    from ..diffusion.train import fine_tune
    from ..diffusion.trained import TEXT_ENCODER_DIR, UNET_CONFIG, UNET_WEIGHTS, base_fingerprint

    base = Path(untrained_dir)
    check_base_model_dir(base)
    source = json.loads((base / SOURCE_FILE).read_text()).get("base_model") if (base / SOURCE_FILE).is_file() else None
    if source != "tiny":
        raise InputError(
            f"pretrain_base: {base} is not an untrained tiny base (its {SOURCE_FILE} says {source!r}); only "
            "base_model: tiny is pretrained, hub models are used as they are"
        )
    fingerprint, n = patch_fingerprint(patch_h5)
    key = settings_hash(cfg, resolution, prompts_cfg if cfg["prompts"] == "label" else None, base_fingerprint(base))
    work = Path(work_root) / f"{key}-{fingerprint[:12]}"
    others = (
        sorted(d.name for d in Path(work_root).glob("*") if d.is_dir() and d != work)
        if Path(work_root).is_dir()
        else []
    )
    if others:  # another config's or data's pretraining: kept (switching back reuses it), never used for this one
        log.info("pretraining caches of other settings or training patches are kept, not used: %s", others)
    work.mkdir(parents=True, exist_ok=True)
    log.info(
        "pretraining the tiny base on %d patches in %s (settings hash %s, data fingerprint %s)",
        n,
        work,
        key,
        fingerprint[:12],
    )
    device = pick_device(cfg["device"])
    summary = {"key": work.name, "patches": n, "device": device}
    t0 = time.perf_counter()

    # stage 1: the VAE (kept once finished; a killed job redoes only this short stage)
    vae_dir, base_vae = work / "vae", work / "base_vae"
    if not (vae_dir / "config.json").is_file():
        summary["vae"] = train_vae(base, load_patches(patch_h5, resolution), cfg, device, vae_dir, progress)
    else:
        log.info("VAE stage already done in %s", vae_dir)
    if not (base_vae / "model_index.json").is_file():
        with atomic_dir(base_vae) as tmp:
            shutil.copytree(base, tmp, dirs_exist_ok=True)
            shutil.rmtree(tmp / "vae")
            shutil.copytree(vae_dir, tmp / "vae")

    # stage 2: the UNet, fully fine-tuned by the workflow's training code (which checkpoints and resumes)
    prompts_tsv, latents = work / "prompts.tsv", work / "latents.h5"
    if not prompts_tsv.is_file():
        pretrain_prompts(patch_h5, cfg, prompts_cfg, prompts_tsv)
    if not latents.is_file():
        cache_latents(
            patch_h5,
            prompts_tsv,
            base_vae,
            latents,
            resolution,
            random_flip=True,
            device=cfg["device"],
            progress=progress,
        )
    unet_dir = work / "unet"
    if not (unet_dir / UNET_CONFIG).is_file():
        summary["unet"] = fine_tune(
            latents,
            base_vae,
            unet_dir,
            work / "loss.tsv",
            work / "loss.png",
            work / "validation",
            work / "checkpoints",
            unet_train_settings(cfg, resolution),
            progress=progress,
            stop_after_step=stop_after_step,
        )
        if "stopped_at" in summary["unet"]:
            return summary
    else:
        log.info("UNet stage already done in %s", unet_dir)

    # the pretrained base: the untrained folder with both trained components
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(base_vae, tmp, dirs_exist_ok=True)
        shutil.rmtree(tmp / "unet")
        (tmp / "unet").mkdir()
        for name in (UNET_CONFIG, UNET_WEIGHTS):
            shutil.copy2(unet_dir / name, tmp / "unet" / name)
        if (unet_dir / TEXT_ENCODER_DIR).is_dir():  # the text encoder trained with the UNet
            shutil.rmtree(tmp / "text_encoder")
            shutil.copytree(unet_dir / TEXT_ENCODER_DIR, tmp / "text_encoder")
        (tmp / SOURCE_FILE).write_text(
            json.dumps(
                {
                    "base_model": f"tiny+pretrained:{work.name}",
                    "untrained": "tiny",
                    "pretrain": cfg,
                    "patches": n,
                    "data_fingerprint": fingerprint,
                },
                indent=2,
            )
        )
        for extra in ("loss.png",):
            if (work / extra).is_file():
                shutil.copy2(work / extra, tmp / f"pretrain_{extra}")
        check_base_model_dir(tmp)
    summary["seconds"] = time.perf_counter() - t0
    log.info("pretrained tiny base written to %s in %.1f s", out_dir, summary["seconds"])
    return summary
