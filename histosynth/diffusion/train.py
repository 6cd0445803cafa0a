"""``train_lora``: PEFT LoRA on the UNet attention projections, as diffusers' text-to-image LoRA
example does it (accelerate for devices, mixed precision and gradient accumulation; diffusers'
noise and LR schedulers and min-SNR weighting; peft adapters), reading the latent cache.

Resumable: every ``checkpoint_every`` steps the LoRA weights, optimizer, LR scheduler and step are
saved under the checkpoint folder; a rerun continues from the newest one. Batches, latent noise
and timesteps are drawn from generators seeded by (seed, step), so a resumed run follows exactly
the same path as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..atomic import atomic_dir, atomic_path
from ..device import pick_device
from ..errors import InputError
from ..plots import image_grid

log = logging.getLogger(__name__)
LORA_FILE = "pytorch_lora_weights.safetensors"
LORA_META = "histosynth_lora.json"
VALIDATION_STEPS = 20
VALIDATION_GUIDANCE = 7.5


class LatentCache:
    """Cached latents and prompt embeddings; batches read lazily from the HDF5."""

    def __init__(self, path):
        self.h5 = h5py.File(path, "r")
        self.n = int(self.h5["latent_mean"].shape[0])
        self.flip = bool(self.h5.attrs["random_flip"])
        self.prompt_index = self.h5["prompt_index"][:]
        self.embeds = self.h5["prompt_embeds"][:]
        self.ids = self.h5["prompt_ids"][:]
        self.prompts = self.h5["prompts"].asstr()[:].tolist()
        self.labels = self.h5["labels"][:]
        self.label_names = [str(x) for x in self.h5["labels"].attrs["label_names"]]
        self.uncond = int(self.h5.attrs["uncond_index"])
        self.scaling_factor = float(self.h5.attrs["scaling_factor"])
        self.resolution = int(self.h5.attrs["resolution"])

    def read(self, idx: np.ndarray, flipped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of rows ``idx``, from the flipped view where ``flipped``."""
        mean = np.empty((len(idx), *self.h5["latent_mean"].shape[1:]), np.float32)
        std = np.empty_like(mean)
        for suffix, sel in (("", ~flipped), ("_flip", flipped)):
            pos = np.flatnonzero(sel)
            if pos.size:
                uniq, inv = np.unique(idx[pos], return_inverse=True)  # h5py wants sorted, unique rows
                mean[pos] = self.h5["latent_mean" + suffix][uniq][inv]
                std[pos] = self.h5["latent_std" + suffix][uniq][inv]
        return mean, std


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for d in folder.glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", d.name)
        if m and (d / "state.pt").is_file() and (d / "lora.safetensors").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def _micro_batch(cache: LatentCache, cfg: dict, micro_step: int, bs: int):
    """Deterministic in (seed, micro_step): which patches, flips, noise, timesteps and dropout."""
    import torch

    per_epoch = max(1, cache.n // bs) if cache.n >= bs else 1
    epoch, pos = divmod(micro_step, per_epoch)
    perm = torch.randperm(cache.n, generator=torch.Generator().manual_seed(cfg["seed"] * 7919 + epoch)).numpy()
    if cache.n >= bs:
        idx = perm[pos * bs : (pos + 1) * bs]
    else:
        idx = np.resize(perm, bs)
    g = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + micro_step + 1)
    flipped = (torch.rand(bs, generator=g) < 0.5).numpy() & cache.flip
    drop = (torch.rand(bs, generator=g) < cfg["prompt_dropout"]).numpy()
    return idx, flipped, drop, g


def train_lora(latents_h5, base_dir, out_lora_dir, loss_tsv, curve_png, validation_dir, checkpoint_dir, cfg: dict,
               progress: bool = True, stop_after_step: int | None = None) -> dict:
    """Fine-tune; returns a summary. ``stop_after_step`` ends early after a checkpoint (tests)."""
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params, compute_snr
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm
    from transformers import AutoTokenizer, CLIPTextModel
    from diffusers import AutoencoderKL

    device = pick_device(cfg["device"])
    mixed = cfg["mixed_precision"] if device == "cuda" else "no"
    acc = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=cfg["gradient_accumulation_steps"], cpu=device == "cpu")
    cache = LatentCache(latents_h5)
    if cache.n == 0:
        raise InputError(f"{latents_h5}: no training latents")
    base = Path(base_dir)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(base, subfolder="tokenizer")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    for m in (unet, text_encoder, vae):
        m.requires_grad_(False)
    alpha = cfg["alpha"] or cfg["rank"]
    torch.manual_seed(cfg["seed"])  # LoRA's gaussian init draws from the global generator
    unet.add_adapter(LoraConfig(r=cfg["rank"], lora_alpha=alpha, init_lora_weights="gaussian", target_modules=cfg["target_modules"]))
    if cfg["train_text_encoder"]:
        text_encoder.add_adapter(LoraConfig(r=cfg["rank"], lora_alpha=alpha, init_lora_weights="gaussian",
                                            target_modules=cfg["text_encoder_target_modules"]))
    unet.to(acc.device, dtype=weight_dtype)
    text_encoder.to(acc.device, dtype=weight_dtype)
    vae.to(acc.device, dtype=torch.float32)
    trained = [unet] + ([text_encoder] if cfg["train_text_encoder"] else [])
    cast_training_params(trained, dtype=torch.float32)  # LoRA weights stay fp32 under mixed precision
    if cfg["gradient_checkpointing"]:
        unet.enable_gradient_checkpointing()
    params = [p for m in trained for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    lr_scheduler = get_scheduler(cfg["lr_scheduler"], optimizer, num_warmup_steps=cfg["lr_warmup_steps"],
                                 num_training_steps=cfg["max_steps"], num_cycles=cfg["lr_num_cycles"])

    ckpt_root = Path(checkpoint_dir)
    start, losses = 0, []
    existing = _checkpoints(ckpt_root)
    if existing:
        step0, d = existing[-1]
        set_peft_model_state_dict(unet, load_file(d / "lora.safetensors"))
        if cfg["train_text_encoder"] and (d / "lora_text_encoder.safetensors").is_file():
            set_peft_model_state_dict(text_encoder, load_file(d / "lora_text_encoder.safetensors"))
        state = torch.load(d / "state.pt", weights_only=True, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        start = int(state["step"])
        losses = pd.read_csv(d / "loss.tsv", sep="\t").to_dict("records") if (d / "loss.tsv").is_file() else []
        log.info("resuming from checkpoint %s (step %d of %d)", d, start, cfg["max_steps"])
    unet, optimizer, lr_scheduler = acc.prepare(unet, optimizer, lr_scheduler)
    if cfg["train_text_encoder"]:
        text_encoder = acc.prepare(text_encoder)

    embeds = torch.from_numpy(cache.embeds.astype(np.float32))
    ids = torch.from_numpy(cache.ids)
    bs, ga = cfg["batch_size"], cfg["gradient_accumulation_steps"]
    val_prompts = _validation_prompts(cache)

    def save_checkpoint(step: int) -> None:
        with atomic_dir(ckpt_root / f"step-{step:07d}") as tmp:
            save_file(get_peft_model_state_dict(acc.unwrap_model(unet)), tmp / "lora.safetensors")
            if cfg["train_text_encoder"]:
                save_file(get_peft_model_state_dict(acc.unwrap_model(text_encoder)), tmp / "lora_text_encoder.safetensors")
            torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(), "step": step}, tmp / "state.pt")
            pd.DataFrame(losses).to_csv(tmp / "loss.tsv", sep="\t", index=False)
        for _, old in _checkpoints(ckpt_root)[: -cfg["checkpoints_keep"]]:
            shutil.rmtree(old, ignore_errors=True)

    def validation(step: int) -> None:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=acc.unwrap_model(text_encoder), tokenizer=tokenizer,
                                       unet=acc.unwrap_model(unet), scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler"),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        rows = []
        for name, prompt in val_prompts:
            k = cfg["validation_images_per_class"]
            gens = [torch.Generator().manual_seed(cfg["seed"] + j) for j in range(k)]
            with torch.autocast(acc.device.type, enabled=mixed != "no"):
                out = pipe([prompt] * k, num_inference_steps=VALIDATION_STEPS, guidance_scale=VALIDATION_GUIDANCE, generator=gens,
                           height=cache.resolution, width=cache.resolution, output_type="np").images
            rows.append((f"{name}: {prompt}"[:34], (out * 255).round().astype(np.uint8)))
        image_grid(rows, Path(validation_dir) / f"step-{step:07d}.png", columns=cfg["validation_images_per_class"])

    unet.train()
    t0, first_loss = time.perf_counter(), None
    bar = tqdm(total=cfg["max_steps"], initial=start, desc="train LoRA", unit="step", disable=not progress, mininterval=2)
    for step in range(start + 1, cfg["max_steps"] + 1):
        step_loss = 0.0
        for micro in range(ga):
            idx, flipped, drop, g = _micro_batch(cache, cfg, (step - 1) * ga + micro, bs)
            mean, std = cache.read(idx, flipped)
            eps = torch.randn(mean.shape, generator=g)
            latents = (torch.from_numpy(mean) + torch.from_numpy(std) * eps) * cache.scaling_factor
            noise = torch.randn(latents.shape, generator=g)
            if cfg["noise_offset"]:
                noise = noise + cfg["noise_offset"] * torch.randn((bs, latents.shape[1], 1, 1), generator=g)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bs,), generator=g).long()
            pidx = torch.from_numpy(np.where(drop, cache.uncond, cache.prompt_index[idx]))
            latents, noise, t = latents.to(acc.device), noise.to(acc.device), t.to(acc.device)
            noisy = noise_scheduler.add_noise(latents, noise, t)
            with acc.accumulate(unet):
                if cfg["train_text_encoder"]:
                    hidden = text_encoder(ids[pidx].to(acc.device))[0]
                else:
                    hidden = embeds[pidx].to(acc.device, dtype=weight_dtype)
                target = noise if noise_scheduler.config.prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, t)
                pred = unet(noisy.to(weight_dtype), t, hidden).sample.float()
                if cfg["snr_gamma"] is None:
                    loss = F.mse_loss(pred, target.float())
                else:  # min-SNR weighting (Hang et al.), as in the diffusers example
                    snr = compute_snr(noise_scheduler, t)
                    w = torch.stack([snr, cfg["snr_gamma"] * torch.ones_like(t)], dim=1).min(dim=1)[0]
                    w = w / snr if noise_scheduler.config.prediction_type == "epsilon" else w / (snr + 1)
                    loss = (F.mse_loss(pred, target.float(), reduction="none").mean(dim=[1, 2, 3]) * w).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"train_lora: loss became {loss.item()} at step {step}; lower train.learning_rate "
                                             f"or use train.mixed_precision 'no'/'bf16' (no LoRA weights were saved)")
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, cfg["max_grad_norm"])
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            step_loss += loss.item() / ga
        first_loss = step_loss if first_loss is None else first_loss
        losses.append({"step": step, "loss": step_loss, "lr": lr_scheduler.get_last_lr()[0]})
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}")
        if step % cfg["validation_every"] == 0 or step == cfg["max_steps"]:
            validation(step)
        if step % cfg["checkpoint_every"] == 0 and step < cfg["max_steps"]:
            save_checkpoint(step)
            if stop_after_step is not None and step >= stop_after_step:
                bar.close()
                return {"stopped_at": step}
    bar.close()
    seconds = time.perf_counter() - t0
    done = cfg["max_steps"] - start
    _save_lora(acc.unwrap_model(unet), acc.unwrap_model(text_encoder) if cfg["train_text_encoder"] else None, out_lora_dir,
               base, cfg, convert_state_dict_to_diffusers, get_peft_model_state_dict)
    df = pd.DataFrame(losses)
    with atomic_path(loss_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    loss_curve(df, curve_png)
    summary = {"steps": cfg["max_steps"], "resumed_from": start, "seconds": seconds, "steps_per_s": done / max(seconds, 1e-9),
               "images_per_s": done * bs * ga / max(seconds, 1e-9), "device": device, "mixed_precision": mixed,
               "first_loss": float(df["loss"].iloc[:10].mean()), "last_loss": float(df["loss"].iloc[-10:].mean())}
    if device == "cuda":
        summary["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    log.info("LoRA: %d steps (%d resumed) in %.1f s = %.2f steps/s on %s; loss %.4f -> %.4f", cfg["max_steps"], start, seconds,
             summary["steps_per_s"], device, summary["first_loss"], summary["last_loss"])
    return summary


def _validation_prompts(cache: LatentCache) -> list[tuple[str, str]]:
    """The most frequent training prompt of each class."""
    out = []
    for lab in np.unique(cache.labels):
        pidx = cache.prompt_index[cache.labels == lab]
        top = np.bincount(pidx).argmax()
        out.append((cache.label_names[lab] if lab >= 0 else "unlabelled", cache.prompts[top]))
    return out


def _save_lora(unet, text_encoder, out_dir, base: Path, cfg: dict, convert, get_state) -> None:
    from diffusers import StableDiffusionPipeline

    with atomic_dir(out_dir) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            save_directory=tmp, unet_lora_layers=convert(get_state(unet)),
            text_encoder_lora_layers=convert(get_state(text_encoder)) if text_encoder is not None else None,
            safe_serialization=True,
        )
        (tmp / LORA_META).write_text(json.dumps({"base_model": base_fingerprint(base), "rank": cfg["rank"],
                                                 "alpha": cfg["alpha"] or cfg["rank"], "target_modules": cfg["target_modules"]}))


def base_fingerprint(base: Path) -> dict:
    """What identifies a base model for LoRA compatibility: its source and UNet architecture."""
    unet_cfg = json.loads((Path(base) / "unet" / "config.json").read_text())
    src = Path(base) / "histosynth_source.json"
    return {"source": json.loads(src.read_text()).get("base_model") if src.is_file() else str(base),
            "cross_attention_dim": unet_cfg.get("cross_attention_dim"), "block_out_channels": unet_cfg.get("block_out_channels")}


def loss_curve(df: pd.DataFrame, out_png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(df["step"], df["loss"], color="tab:blue", alpha=0.3, lw=0.8, label="loss")
    win = max(1, len(df) // 20)
    ax.plot(df["step"], df["loss"].rolling(win, min_periods=1).mean(), color="tab:blue", label=f"mean of {win}")
    ax.set_xlabel("step")
    ax.set_ylabel("diffusion loss")
    ax.legend()
    ax.set_title("LoRA fine-tuning")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)




def fixed_batch_loss(latents_h5, base_dir, lora_dir=None, n: int = 32, seed: int = 1234) -> float:
    """Denoising loss of the (LoRA-adapted) UNet on a fixed set of patches, noise and timesteps.

    A diagnostic that does not depend on training randomness: lower after training = it learned.
    """
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base_dir, safety_checker=None, requires_safety_checker=False)
    if lora_dir is not None:
        pipe.load_lora_weights(lora_dir)
    sched = DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler")
    cache = LatentCache(latents_h5)
    idx = np.arange(min(n, cache.n))
    mean, _ = cache.read(idx, np.zeros(len(idx), bool))
    g = torch.Generator().manual_seed(seed)
    lat = torch.from_numpy(mean) * cache.scaling_factor
    noise = torch.randn(lat.shape, generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
    hidden = torch.from_numpy(cache.embeds[cache.prompt_index[idx]].astype(np.float32))
    with torch.inference_mode():
        pred = pipe.unet(sched.add_noise(lat, noise, t), t, hidden).sample
    return float(F.mse_loss(pred, noise))
