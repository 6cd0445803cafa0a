"""``fine_tune``: text-to-image fine-tuning of Stable Diffusion's UNet on the latent cache, as
diffusers' ``examples/text_to_image`` scripts do it and with the same library pieces:

- ``train.method: lora`` follows ``train_text_to_image_lora.py``: PEFT LoRA adapters on the UNet's
  attention projections (optionally on the text encoder), everything else frozen;
- ``train.method: full`` follows ``train_text_to_image.py``: the whole UNet, optionally with an EMA
  copy (``diffusers.training_utils.EMAModel``) and bitsandbytes' 8-bit AdamW.

accelerate handles the device, mixed precision (with its GradScaler under fp16) and gradient
accumulation; diffusers supplies the noise and LR schedulers and ``compute_snr`` for min-SNR weighting.

Checkpoints are accelerate ``save_state`` folders (optimizer, LR scheduler, GradScaler, RNG states),
whose model files are written by save/load hooks in the diffusers format of the final output
(``trained.py``). They live under ``<checkpoint root>/<settings hash>-<data fingerprint>/``: the hash
of the training settings and base model, and the latent cache's fingerprint of its data and prompts,
so a run resumes only a checkpoint of the same settings on the same data. Batches, latent noise and
timesteps are drawn from generators seeded by (seed, micro-batch number), so a resumed run follows exactly the
path of an uninterrupted one.

Several processes (``train.num_processes``, started by ``launch.py`` with ``accelerate launch``):
the micro-batch numbers are a DataLoader prepared by accelerate, which hands process r of N the
numbers r, r+N, … (one process: 0, 1, 2, …), so every process draws its own batches and DDP
averages their gradients. Checkpoints, validation grids, the loss table and the trained model are
written by the main process only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from ..atomic import atomic_dir, atomic_path
from ..config import settings_hash
from ..device import pick_device
from ..errors import InputError
from ..plots import image_grid, loss_curve
from .latents import LatentCache
from .text_encoding import encode, pipeline_embeds
from .trained import base_fingerprint, read_full, read_lora, save_trained, write_lora

log = logging.getLogger(__name__)
VALIDATION_STEPS = 20
VALIDATION_GUIDANCE = 7.5
CHECKPOINT_PREFIX = "checkpoint-"  # diffusers' examples name their save_state folders checkpoint-<step>
CHECKPOINT_META = "histosynth_checkpoint.json"
# a full fine-tuning checkpoint's model folders
CHECKPOINT_UNET, CHECKPOINT_EMA, CHECKPOINT_TEXT_ENCODER = "unet", "unet_ema", "text_encoder"
LOSS_FILE = "loss.tsv"
# options that only one method reads: set away from their defaults under the other method, they are errors
METHOD_OPTIONS = {
    "lora": ("rank", "alpha", "target_modules", "text_encoder_target_modules"),
    "full": ("use_ema", "use_8bit_adam"),
}
WARM_RESTARTS = "cosine_annealing_warm_restarts"


def check_train_settings(cfg: dict, experiment: str | None = None, strategy: str | None = None) -> None:
    """Refuse option combinations the schema cannot express; the message names the key."""
    from ..config import default_config

    defaults = default_config()["train"]
    where = f" (experiment {experiment!r})" if experiment else ""
    for method, keys in METHOD_OPTIONS.items():
        for key in keys:
            if cfg["method"] != method and cfg[key] != defaults[key]:
                raise InputError(
                    f"train.{key} = {cfg[key]!r} applies to train.method {method!r} only, but train.method is "
                    f"{cfg['method']!r}{where}; remove train.{key} or change train.method"
                )
    if cfg["prompt_dropout_low_til_only"] and strategy not in (None, "report"):
        raise InputError(
            f"train.prompt_dropout_low_til_only needs the TIL levels of the 'report' prompt strategy, but "
            f"the prompts are {strategy!r}{where}; set it for report experiments only "
            "(experiments.<name>.train)"
        )
    if cfg["lr_scheduler"] == WARM_RESTARTS and cfg["lr_warmup_steps"]:
        raise InputError(
            f"train.lr_warmup_steps = {cfg['lr_warmup_steps']} cannot be combined with train.lr_scheduler "
            f"{WARM_RESTARTS!r}{where} (torch's CosineAnnealingWarmRestarts has no warm-up); set it to 0"
        )


# ----- set-up ---------------------------------------------------------------------------------------


def make_accelerator(cfg: dict, device: str):
    """accelerate's Accelerator; mixed precision needs a GPU, so on other devices the run is fp32."""
    from accelerate import Accelerator

    mixed = cfg["mixed_precision"] if device == "cuda" else "no"
    return Accelerator(
        mixed_precision=mixed, gradient_accumulation_steps=cfg["gradient_accumulation_steps"], cpu=device == "cpu"
    )


def load_models(base: Path) -> SimpleNamespace:
    """The base model's components, all frozen; ``set_up_*`` decides what trains."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    m = SimpleNamespace(
        noise_scheduler=DDPMScheduler.from_pretrained(base, subfolder="scheduler"),
        unet=UNet2DConditionModel.from_pretrained(base, subfolder="unet"),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
        tokenizer=AutoTokenizer.from_pretrained(base, subfolder="tokenizer"),
        vae=AutoencoderKL.from_pretrained(base, subfolder="vae"),
        ema=None,
    )
    for model in (m.unet, m.text_encoder, m.vae):
        model.requires_grad_(False)
    return m


def set_up_lora(m: SimpleNamespace, cfg: dict, device, weight_dtype) -> list:
    """LoRA adapters on the frozen UNet (and text encoder); the frozen weights in ``weight_dtype``, the adapters fp32."""
    import torch
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    alpha = cfg["alpha"] or cfg["rank"]
    torch.manual_seed(cfg["seed"])  # the gaussian init of LoRA draws from the global generator
    m.unet.add_adapter(
        LoraConfig(r=cfg["rank"], lora_alpha=alpha, init_lora_weights="gaussian", target_modules=cfg["target_modules"])
    )
    if cfg["train_text_encoder"]:
        m.text_encoder.add_adapter(
            LoraConfig(
                r=cfg["rank"],
                lora_alpha=alpha,
                init_lora_weights="gaussian",
                target_modules=cfg["text_encoder_target_modules"],
            )
        )
    m.unet.to(device, dtype=weight_dtype)
    m.text_encoder.to(device, dtype=weight_dtype)
    trained = [m.unet] + ([m.text_encoder] if cfg["train_text_encoder"] else [])
    cast_training_params(trained, dtype=torch.float32)
    return trained


def set_up_full(m: SimpleNamespace, cfg: dict, device, weight_dtype) -> list:
    """The whole UNet (and, with ``train_text_encoder``, the whole text encoder) trains in fp32 (accelerate
    autocasts the forward pass); optionally an EMA copy of the UNet."""
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    m.unet.requires_grad_(True)
    m.unet.to(device)
    if cfg["train_text_encoder"]:
        m.text_encoder.requires_grad_(True)
        m.text_encoder.to(device)
    else:
        m.text_encoder.to(device, dtype=weight_dtype)
    if cfg["use_ema"]:
        m.ema = EMAModel(m.unet.parameters(), model_cls=UNet2DConditionModel, model_config=m.unet.config)
        m.ema.to(device)
    return [m.unet] + ([m.text_encoder] if cfg["train_text_encoder"] else [])


def make_optimizer(params: list, cfg: dict, device: str):
    """AdamW, or bitsandbytes' 8-bit AdamW (CUDA only) when ``train.use_8bit_adam``."""
    import torch

    optimizer_cls = torch.optim.AdamW
    if cfg["use_8bit_adam"]:
        if device != "cuda":
            raise InputError(
                f"train.use_8bit_adam needs a CUDA GPU (bitsandbytes), but this run is on {device}; set it to false"
            )
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise InputError(
                "train.use_8bit_adam needs bitsandbytes: pip install bitsandbytes, or set it to false"
            ) from e
        optimizer_cls = bnb.optim.AdamW8bit
    return optimizer_cls(params, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])


def make_lr_scheduler(optimizer, cfg: dict):
    """diffusers' ``get_scheduler``, or torch's CosineAnnealingWarmRestarts (the LoRA paper's T_0/T_mult schedule)."""
    import torch
    from diffusers.optimization import get_scheduler

    if cfg["lr_scheduler"] == WARM_RESTARTS:
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=cfg["lr_t0"], T_mult=cfg["lr_t_mult"]
        )
    return get_scheduler(
        cfg["lr_scheduler"],
        optimizer,
        num_warmup_steps=cfg["lr_warmup_steps"],
        num_training_steps=cfg["max_steps"],
        num_cycles=cfg["lr_num_cycles"],
    )


# ----- checkpoints ----------------------------------------------------------------------------------


def checkpoint_folder(root, cfg: dict, base, cache: LatentCache) -> tuple[Path, str]:
    """``root/<settings hash>-<data fingerprint>`` and the settings hash."""
    key = settings_hash(cfg, base_fingerprint(base))
    return Path(root) / f"{key}-{cache.fingerprint[:12]}", key


def list_checkpoints(folder) -> list[tuple[int, Path]]:
    """Finished checkpoints, oldest first (unfinished ones are hidden ``.partial`` folders)."""
    found = []
    for d in Path(folder).glob(f"{CHECKPOINT_PREFIX}*"):
        m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", d.name)
        if m and (d / CHECKPOINT_META).is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def register_checkpoint_hooks(acc, m: SimpleNamespace, cfg: dict) -> None:
    """``save_state``/``load_state`` write and read the models in diffusers' formats, as diffusers' examples do."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel, cast_training_params

    unet_cls, te_cls = type(acc.unwrap_model(m.unet)), type(acc.unwrap_model(m.text_encoder))

    def split(models):
        unet = next((acc.unwrap_model(x) for x in models if isinstance(acc.unwrap_model(x), unet_cls)), None)
        te = next((acc.unwrap_model(x) for x in models if isinstance(acc.unwrap_model(x), te_cls)), None)
        return unet, te

    def save_model_hook(models, weights, output_dir):
        unet, te = split(models)
        if cfg["method"] == "lora":
            write_lora(output_dir, unet, te)
        else:
            unet.save_pretrained(Path(output_dir) / CHECKPOINT_UNET)
            if te is not None:
                te.save_pretrained(Path(output_dir) / CHECKPOINT_TEXT_ENCODER)
            if m.ema is not None:
                m.ema.save_pretrained(Path(output_dir) / CHECKPOINT_EMA)
        weights.clear()  # written above; accelerate must not save them again

    def load_model_hook(models, input_dir):
        unet, te = split(models)
        models.clear()  # loaded here; accelerate must not load them again
        if cfg["method"] == "lora":
            read_lora(input_dir, unet, te)
            if acc.mixed_precision == "fp16":
                cast_training_params([x for x in (unet, te) if x is not None], dtype=torch.float32)
        else:
            read_full(Path(input_dir) / CHECKPOINT_UNET, unet)
            if te is not None:
                te.load_state_dict(te_cls.from_pretrained(Path(input_dir) / CHECKPOINT_TEXT_ENCODER).state_dict())
            if m.ema is not None:
                m.ema.load_state_dict(
                    EMAModel.from_pretrained(Path(input_dir) / CHECKPOINT_EMA, UNet2DConditionModel).state_dict()
                )
                m.ema.to(acc.device)

    acc.register_save_state_pre_hook(save_model_hook)
    acc.register_load_state_pre_hook(load_model_hook)


def save_checkpoint(acc, folder: Path, step: int, losses: list, meta: dict, keep: int) -> None:
    """One ``save_state`` folder with the loss history; then only the newest ``keep`` remain."""
    with atomic_dir(folder / f"{CHECKPOINT_PREFIX}{step}") as tmp:
        acc.save_state(tmp)
        pd.DataFrame(losses).to_csv(tmp / LOSS_FILE, sep="\t", index=False)
        (tmp / CHECKPOINT_META).write_text(json.dumps({**meta, "step": step}, indent=2))
    for _, old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resume(acc, folder: Path, meta: dict, max_steps: int) -> tuple[int, list]:
    """Load the newest checkpoint of ``folder``: returns its step and loss history (0, [] for a fresh start)."""
    found = list_checkpoints(folder)
    others = [d.name for d in folder.parent.glob("*") if d.is_dir() and d != folder] if folder.parent.is_dir() else []
    if not found:
        log.info(
            "no checkpoint in %s: training from step 0 (settings hash %s, data fingerprint %s)%s",
            folder,
            meta["settings_hash"],
            meta["data_fingerprint"][:12],
            f"; checkpoints of other settings or data are kept in {sorted(others)}" if others else "",
        )
        return 0, []
    step, d = found[-1]
    saved = json.loads((d / CHECKPOINT_META).read_text())
    if saved.get("method") != meta["method"]:
        raise InputError(
            f"checkpoint {d} was written by train.method {saved.get('method')!r}, but this run uses "
            f"{meta['method']!r}; delete {d.parent} to start afresh"
        )
    acc.load_state(d)
    losses = pd.read_csv(d / LOSS_FILE, sep="\t").to_dict("records")
    log.info(
        "resuming from checkpoint %s (step %d of %d): it matches this run's settings hash %s (training settings and "
        "base model) and latent-cache data fingerprint %s (patches, labels and prompts)",
        d,
        step,
        max_steps,
        saved["settings_hash"],
        saved["data_fingerprint"][:12],
    )
    return step, losses


# ----- one step -------------------------------------------------------------------------------------


def micro_batch_numbers(acc, first: int, stop: int):
    """This process's micro-batch numbers, ``first`` to ``stop`` counted per process (a resumed run
    skips the first ones): a DataLoader of all processes' numbers prepared by accelerate, whose
    batch sampler gives process r of N the numbers r, r+N, … (one process: all, in order)."""
    from torch.utils.data import DataLoader

    n = acc.num_processes
    return acc.prepare(DataLoader(range(first * n, stop * n), batch_size=1))


def draw_batch(cache: LatentCache, cfg: dict, micro_step: int, num_train_timesteps: int):
    """Latents, noise, timesteps and prompt rows of one micro-batch, fixed by (seed, micro_step)."""
    import torch

    bs = cfg["batch_size"]
    per_epoch = max(1, cache.n // bs)
    epoch, pos = divmod(micro_step, per_epoch)
    perm = torch.randperm(cache.n, generator=torch.Generator().manual_seed(cfg["seed"] * 7919 + epoch)).numpy()
    idx = perm[pos * bs : (pos + 1) * bs] if cache.n >= bs else np.resize(perm, bs)
    g = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + micro_step + 1)
    flipped = (torch.rand(bs, generator=g) < 0.5).numpy() & cache.flip
    drop = (torch.rand(bs, generator=g) < cfg["prompt_dropout"]).numpy()
    # drawn only when on, so runs without them keep their exact random path
    vflipped = (torch.rand(bs, generator=g) < 0.5).numpy() if cache.vflip else np.zeros(bs, bool)
    if cfg["prompt_dropout_low_til_only"]:  # PathLDM keeps the prompt of a patch with high TIL
        drop &= cache.til_level[idx] <= 0
    mean, std = cache.read(idx, cache.view(flipped, vflipped))
    if cache.latent_crop:  # a random crop of each whole-patch latent, fresh every step
        c = cache.latent_crop
        offsets = torch.randint(0, mean.shape[-1] - c + 1, (bs, 2), generator=g).numpy()
        mean = np.stack([m[:, y : y + c, x : x + c] for m, (y, x) in zip(mean, offsets)])
        std = np.stack([s[:, y : y + c, x : x + c] for s, (y, x) in zip(std, offsets)])
    latents = (
        torch.from_numpy(mean) + torch.from_numpy(std) * torch.randn(mean.shape, generator=g)
    ) * cache.scaling_factor
    noise = torch.randn(latents.shape, generator=g)
    if cfg["noise_offset"]:  # https://www.crosslabs.org/blog/diffusion-with-offset-noise
        noise = noise + cfg["noise_offset"] * torch.randn((bs, latents.shape[1], 1, 1), generator=g)
    timesteps = torch.randint(0, num_train_timesteps, (bs,), generator=g).long()
    prompt_rows = torch.from_numpy(np.where(drop, cache.uncond, cache.prompt_index[idx]))
    return latents, noise, timesteps, prompt_rows


def batches_ahead(cache: LatentCache, cfg: dict, numbers, num_train_timesteps: int):
    """(number, draw_batch(...)) for each micro-batch number, the next one drawn in a background thread
    while the GPU runs this one: the HDF5 read and the noise are CPU work that otherwise leaves the GPU
    idle (14 % of a step at 512 px on an H200, README "GPU"). Each batch depends only on its number, so
    the batches are those drawn inline."""
    from concurrent.futures import ThreadPoolExecutor

    numbers = iter(numbers)

    def submit(pool):
        k = next(numbers, None)
        return None if k is None else (int(k[0]), pool.submit(draw_batch, cache, cfg, int(k[0]), num_train_timesteps))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="draw_batch") as pool:
        ahead = submit(pool)
        while ahead is not None:
            k, batch = ahead
            ahead = submit(pool)
            yield k, batch.result()


def diffusion_loss(noise_scheduler, pred, latents, noise, timesteps, snr_gamma: float | None):
    """MSE between the UNet's prediction and the scheduler's target (epsilon: the noise; v_prediction:
    the velocity), weighted per sample by min-SNR-gamma (Hang et al. 2023) when ``snr_gamma`` is set."""
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import compute_snr

    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise InputError(f"the base model's scheduler predicts {kind!r}; training supports epsilon and v_prediction")
    if snr_gamma is None:
        return F.mse_loss(pred.float(), target.float())
    snr = compute_snr(noise_scheduler, timesteps)
    if kind == "v_prediction":
        snr = snr + 1  # the velocity objective divides by SNR + 1
    weights = torch.clamp(snr, max=snr_gamma) / snr
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
    return (per_sample * weights).mean()


# ----- the run --------------------------------------------------------------------------------------


def fine_tune(
    latents_h5,
    base_dir,
    out_dir,
    loss_tsv,
    curve_png,
    validation_dir,
    checkpoint_root,
    cfg: dict,
    progress: bool = True,
    stop_after_step: int | None = None,
) -> dict:
    """Train per ``cfg`` (the ``train`` settings) and write ``out_dir`` (see ``trained.py``); returns a summary.

    ``stop_after_step`` ends the run after the checkpoint of that step, as a killed job would (tests).
    """
    check_train_settings(cfg)
    with LatentCache(latents_h5) as cache:
        if cache.n == 0:
            raise InputError(f"{latents_h5}: no training latents")
        made = {
            "random_flip": cache.flip,
            "vertical_flip": cache.vflip,
            "text_chunks": cache.text_chunks,
            "crop": cache.crop,
        }
        stale = {k: v for k, v in made.items() if v != cfg[k]}
        if stale:
            raise InputError(
                f"{latents_h5} was cached with {stale}, but train has "
                f"{ {k: cfg[k] for k in stale} }; rerun cache_latents"
            )
        if cfg["prompt_dropout_low_til_only"] and cache.til_level is None:
            raise InputError(
                f"train.prompt_dropout_low_til_only needs per-patch TIL levels, but {latents_h5} has none: use the "
                "'report' prompt strategy with prompts.patch_scores, or set it to false"
            )
        return _train(
            cache,
            Path(base_dir),
            out_dir,
            loss_tsv,
            curve_png,
            validation_dir,
            checkpoint_root,
            cfg,
            progress,
            stop_after_step,
        )


def _train(
    cache: LatentCache,
    base: Path,
    out_dir,
    loss_tsv,
    curve_png,
    validation_dir,
    checkpoint_root,
    cfg: dict,
    progress: bool,
    stop_after_step: int | None,
) -> dict:
    import torch
    from ..progress import progress_bar

    device = pick_device(cfg["device"])
    acc = make_accelerator(cfg, device)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision, torch.float32)

    # models: LoRA adapters or the whole UNet trainable; the optimizer and LR schedule over those parameters
    m = load_models(base)
    trained = (set_up_lora if cfg["method"] == "lora" else set_up_full)(m, cfg, acc.device, weight_dtype)
    m.vae.to(acc.device, dtype=torch.float32)
    if cfg["gradient_checkpointing"]:
        m.unet.enable_gradient_checkpointing()
    params = [p for model in trained for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg, device)
    lr_scheduler = make_lr_scheduler(optimizer, cfg)
    register_checkpoint_hooks(acc, m, cfg)
    m.unet, optimizer, lr_scheduler = acc.prepare(m.unet, optimizer, lr_scheduler)
    if cfg["train_text_encoder"]:
        m.text_encoder = acc.prepare(m.text_encoder)

    # resume the newest checkpoint of these settings on this data, if any
    folder, key = checkpoint_folder(checkpoint_root, cfg, base, cache)
    meta = {"method": cfg["method"], "settings_hash": key, "data_fingerprint": cache.fingerprint}
    start, losses = resume(acc, folder, meta, cfg["max_steps"])
    main = acc.is_main_process

    ga = cfg["gradient_accumulation_steps"]
    micro_batches = micro_batch_numbers(acc, start * ga, cfg["max_steps"] * ga)

    embeds = torch.from_numpy(cache.embeds.astype(np.float32))
    ids = torch.from_numpy(cache.ids)
    encode_text = cfg["train_text_encoder"]
    m.unet.train()
    t0, aside = time.perf_counter(), 0.0
    bar = progress_bar(
        total=cfg["max_steps"],
        initial=start,
        desc=f"train ({cfg['method']})",
        unit="step",
        disable=not (progress and main),
        mininterval=2,
    )
    batches = batches_ahead(cache, cfg, micro_batches, m.noise_scheduler.config.num_train_timesteps)
    for step in range(start + 1, cfg["max_steps"] + 1):
        step_loss = 0.0
        for micro in range(ga):
            # a micro-batch of cached posteriors sampled to latents, with noise and timesteps, fixed by (seed, its number)
            k, (latents, noise, t, rows) = next(batches)
            if step == start + 1 and micro == 0:
                log.info(
                    "process %d of %d: first micro-batch %d, patches %s",
                    acc.process_index,
                    acc.num_processes,
                    k,
                    rows.tolist(),
                )
            latents, noise, t = latents.to(acc.device), noise.to(acc.device), t.to(acc.device)
            with acc.accumulate(m.unet):
                # the prompt condition: cached embeddings, or the text encoder's output when it trains
                if encode_text:
                    hidden = encode(m.text_encoder, ids[rows], m.tokenizer.eos_token_id)
                else:
                    hidden = embeds[rows].to(acc.device, weight_dtype)
                # forward diffusion, then the UNet's prediction of the scheduler's target
                noisy = m.noise_scheduler.add_noise(latents, noise, t)
                pred = m.unet(noisy.to(weight_dtype), t, hidden).sample
                loss = diffusion_loss(m.noise_scheduler, pred, latents, noise, t, cfg["snr_gamma"])
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training: loss became {loss.item()} at step {step}; lower train.learning_rate "
                        f"or use train.mixed_precision 'no'/'bf16' (no trained weights were saved)"
                    )
                # backward (scaled by the GradScaler under fp16); accelerate clips and steps on the last micro-batch only
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, cfg["max_grad_norm"])
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            step_loss += acc.reduce(loss.detach(), "mean").item() / ga  # the mean over processes
        # the EMA follows every optimizer step
        if m.ema is not None:
            m.ema.step(acc.unwrap_model(m.unet).parameters())
        losses.append({"step": step, "loss": step_loss, "lr": lr_scheduler.get_last_lr()[0]})
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}")
        # a validation grid and a resumable checkpoint every so many steps (the main process's);
        # their time is not training time, so steps/s leaves it out
        t_aside = time.perf_counter()
        if main and (step % cfg["validation_every"] == 0 or step == cfg["max_steps"]):
            validation_grid(acc, m, cache, cfg, base, weight_dtype, Path(validation_dir) / f"step-{step:07d}.png")
        if step % cfg["checkpoint_every"] == 0 and step < cfg["max_steps"]:
            if main:
                save_checkpoint(acc, folder, step, losses, meta, cfg["checkpoints_keep"])
            acc.wait_for_everyone()
            if stop_after_step is not None and step >= stop_after_step:
                bar.close()
                batches.close()
                return {"stopped_at": step}
        aside += time.perf_counter() - t_aside
    bar.close()
    seconds = time.perf_counter() - t0 - aside
    acc.wait_for_everyone()
    if not main:
        acc.end_training()
        return {"process": acc.process_index}

    # the final weights (the EMA's when kept) in diffusers' format, the loss table and curve
    unet = acc.unwrap_model(m.unet)
    if m.ema is not None:
        m.ema.copy_to(unet.parameters())
    save_trained(out_dir, cfg["method"], unet, acc.unwrap_model(m.text_encoder) if encode_text else None, base, cfg)
    df = pd.DataFrame(losses)
    with atomic_path(loss_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    loss_curve(df, curve_png, cfg["method"])
    summary = run_summary(cfg, acc, df, start, seconds, str(folder), sum(p.numel() for p in params), device)
    acc.end_training()
    return summary


def run_summary(
    cfg: dict, acc, losses: pd.DataFrame, start: int, seconds: float, checkpoints: str, n_params: int, device
):
    """The run's numbers for ``train_summary.json`` (speed, loss at the start and the end), also logged."""
    import torch

    done = cfg["max_steps"] - start
    images = done * cfg["batch_size"] * cfg["gradient_accumulation_steps"] * acc.num_processes
    summary = {
        "method": cfg["method"],
        "steps": cfg["max_steps"],
        "resumed_from": start,
        "checkpoints": checkpoints,
        "trainable_parameters": n_params,
        "seconds": seconds,
        "steps_per_s": done / max(seconds, 1e-9),
        "images_per_s": images / max(seconds, 1e-9),
        "device": device,
        "num_processes": acc.num_processes,
        "mixed_precision": acc.mixed_precision,
        "first_loss": float(losses["loss"].iloc[:10].mean()),
        "last_loss": float(losses["loss"].iloc[-10:].mean()),
    }
    if device == "cuda":
        summary["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    log.info(
        "%s: %d steps (%d resumed) in %.1f s = %.2f steps/s on %s; loss %.4f -> %.4f",
        cfg["method"],
        cfg["max_steps"],
        start,
        seconds,
        summary["steps_per_s"],
        device,
        summary["first_loss"],
        summary["last_loss"],
    )
    return summary


def validation_grid(
    acc, m: SimpleNamespace, cache: LatentCache, cfg: dict, base: Path, weight_dtype, out_png: Path
) -> None:
    """A few images per class from each class's most frequent prompt (with the EMA weights when kept)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    unet = acc.unwrap_model(m.unet)
    if m.ema is not None:  # sample with the EMA weights, then put the trained ones back
        m.ema.store(unet.parameters())
        m.ema.copy_to(unet.parameters())
    pipe = StableDiffusionPipeline(
        vae=m.vae,
        text_encoder=acc.unwrap_model(m.text_encoder),
        tokenizer=m.tokenizer,
        unet=unet,
        scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    k, rows = cfg["validation_images_per_class"], []
    for name, prompt in validation_prompts(cache):
        gens = [torch.Generator().manual_seed(cfg["seed"] + j) for j in range(k)]
        # under mixed precision, autocast to the dtype of the frozen weights
        with (
            torch.autocast(acc.device.type, dtype=weight_dtype)
            if acc.mixed_precision != "no"
            else contextlib.nullcontext()
        ):
            out = pipe(
                **pipeline_embeds(pipe, [prompt] * k, None, cache.text_chunks),
                num_inference_steps=VALIDATION_STEPS,
                guidance_scale=VALIDATION_GUIDANCE,
                generator=gens,
                height=cache.resolution,
                width=cache.resolution,
                output_type="np",
            ).images
        # the whole prompt: image_grid wraps it (two classes whose prompts share a prefix must not read the same)
        rows.append((f"{name}: {prompt}", (out * 255).round().astype(np.uint8)))
    if m.ema is not None:
        m.ema.restore(unet.parameters())
    image_grid(rows, out_png, columns=k)


def validation_prompts(cache: LatentCache) -> list[tuple[str, str]]:
    """The most frequent training prompt of each class."""
    out = []
    for lab in np.unique(cache.labels):
        pidx = cache.prompt_index[cache.labels == lab]
        top = np.bincount(pidx).argmax()
        out.append((cache.label_names[lab] if lab >= 0 else "unlabelled", cache.prompts[top]))
    return out


def fixed_batch_loss(latents_h5, base_dir, trained_dir=None, n: int = 32, seed: int = 1234) -> float:
    """Denoising loss of the base or trained UNet on a fixed set of patches, noise and timesteps.

    A diagnostic that does not depend on training randomness: lower after training = it learned.
    """
    import torch
    from diffusers import DDPMScheduler

    from .trained import load_trained_pipeline

    pipe = load_trained_pipeline(base_dir, trained_dir)
    sched = DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler")
    with LatentCache(latents_h5) as cache:
        idx = np.arange(min(n, cache.n))
        mean, _ = cache.read(idx, np.zeros(len(idx), np.int64))
        if cache.latent_crop:  # the centre crop, at the training size
            y = (mean.shape[-1] - cache.latent_crop) // 2
            mean = mean[..., y : y + cache.latent_crop, y : y + cache.latent_crop]
        hidden = torch.from_numpy(cache.embeds[cache.prompt_index[idx]].astype(np.float32))
        lat = torch.from_numpy(np.ascontiguousarray(mean)) * cache.scaling_factor
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(lat.shape, generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
    with torch.inference_mode():
        pred = pipe.unet(sched.add_noise(lat, noise, t), t, hidden).sample
    return float(diffusion_loss(sched, pred, lat, noise, t, None))
