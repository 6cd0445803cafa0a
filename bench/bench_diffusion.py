"""LoRA training with vs without the latent cache, and sampling throughput per scheduler.

Same tiny model, same patches, same step count, measured in one run and printed as ratios:
- "no cache": each step reads patch pixels, runs the VAE encoder and the text encoder, then the
  same UNet forward/backward as LoRA training (what a trainer without a cache does);
- "latent cache": fine_tune (train.method lora) itself, reading cached posteriors and prompt embeddings.
Sampling: images/s of the same prompts and seeds with each scheduler, relative to DDIM.

    .venv/bin/python bench/bench_diffusion.py [--steps 40] [--size 64] [--base tiny|PATH] [--device auto]

On a GPU, pass --base with a real SD folder and --size 256/512 for the figures that matter.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from histosynth.config import default_config  # noqa: E402
from histosynth.demo import make_demo_slide  # noqa: E402
from histosynth.device import pick_device  # noqa: E402
from histosynth.diffusion.latents import cache_latents, to_model_input  # noqa: E402
from histosynth.diffusion.sample import generate, load_pipeline  # noqa: E402
from histosynth.diffusion.train import fine_tune  # noqa: E402
from histosynth.models.base_model import prepare_base_model  # noqa: E402
from histosynth.models.clip_tokenizer import load_tokenizer  # noqa: E402
from histosynth.patchfile import PatchFile  # noqa: E402
from histosynth.text.prompts import build_prompts, token_counter  # noqa: E402
from histosynth.tiling import TilingParams, tile_slide  # noqa: E402


def demo_tiling(size: int) -> dict:
    """The ``tiling:`` overrides of the benchmarks' one demo slide: DAB labels, ``size`` px at 0.5 um/px."""
    return {"patch_size": size, "mpp": 0.5, "labels": {"method": "dab"}, "tissue": {"max_saturation": 12}}


def prepare_training_data(d: Path, cfg: dict, base_name: str, size: int, device: str) -> tuple[Path, float]:
    """In ``d``: one demo slide tiled (``p.h5``), the base (``base/``), label prompts (``prompts.tsv``) and the
    latent cache (``lat.h5``) that LoRA training reads; returns the base folder and the caching seconds."""
    slide = make_demo_slide(d / "s.tiff", 0, size=2048)
    tile_slide(slide, "s", "c", d / "p.h5", d / "t.png", TilingParams.from_config(cfg["tiling"]), progress=False)
    base = prepare_base_model(base_name, d / "base")
    tok = load_tokenizer(str(base / "tokenizer"))
    build_prompts("label", d / "p.h5", cfg["prompts"], token_counter(tok), 77, out_tsv=d / "prompts.tsv")
    t0 = time.perf_counter()
    cache_latents(d / "p.h5", d / "prompts.tsv", base, d / "lat.h5", size, True, device=device, progress=False)
    return base, time.perf_counter() - t0


def no_cache_steps(patch_h5, prompts_tsv, base, cfg, size, steps, device) -> float:
    """steps/s of a LoRA trainer that encodes images and prompts every step."""
    import pandas as pd
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import AutoTokenizer, CLIPTextModel

    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").to(device).eval()
    te = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(device).eval()
    tok = AutoTokenizer.from_pretrained(base, subfolder="tokenizer")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").to(device)
    sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    unet.requires_grad_(False)
    torch.manual_seed(0)
    unet.add_adapter(
        LoraConfig(
            r=cfg["rank"], lora_alpha=cfg["rank"], init_lora_weights="gaussian", target_modules=cfg["target_modules"]
        )
    )
    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=cfg["learning_rate"])
    prompts = pd.read_csv(prompts_tsv, sep="\t")["prompt"].tolist()
    bs = cfg["batch_size"]
    rng = np.random.default_rng(0)
    with PatchFile(patch_h5) as pf:
        t0 = time.perf_counter()
        for _ in range(steps):
            rows = np.sort(rng.choice(len(pf), bs, replace=False))
            with torch.no_grad():
                lat = (
                    vae.encode(to_model_input(pf.read(rows), size).to(device)).latent_dist.sample()
                    * vae.config.scaling_factor
                )
                ids = tok(
                    [prompts[i] for i in rows],
                    padding="max_length",
                    max_length=77,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids
                hidden = te(ids.to(device))[0]
            noise = torch.randn_like(lat)
            t = torch.randint(0, sched.config.num_train_timesteps, (bs,), device=device)
            loss = F.mse_loss(unet(sched.add_noise(lat, noise, t), t, hidden).sample, noise)
            loss.backward()
            opt.step()
            opt.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        return steps / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--base", default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--json", default="results/bench/diffusion.json")
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cfg = default_config(
            tiling=demo_tiling(a.size),
            train={
                "max_steps": a.steps,
                "batch_size": 8,
                "checkpoint_every": 10**6,
                "validation_every": 10**6,
                "device": device,
            },
        )
        base, cache_s = prepare_training_data(d, cfg, a.base, a.size, device)
        rate_nocache = no_cache_steps(d / "p.h5", d / "prompts.tsv", base, cfg["train"], a.size, a.steps, device)
        s = fine_tune(
            d / "lat.h5", base, d / "lora", d / "l.tsv", d / "l.png", d / "v", d / "c", cfg["train"], progress=False
        )
        rates = {}
        pipe = None
        for name in ("ddim", "dpmsolver++", "euler", "unipc"):
            pipe = load_pipeline(base, d / "lora", name, device)
            scfg = default_config(sampling={"steps": a.sample_steps})["sampling"]
            generate(pipe, ["warm-up"], [0], scfg, a.size)
            t0 = time.perf_counter()
            generate(
                pipe, ["Histology image of DAB-positive tissue"] * a.n_images, list(range(a.n_images)), scfg, a.size
            )
            rates[name] = a.n_images / (time.perf_counter() - t0)
        with PatchFile(d / "p.h5") as pf:
            n_patches = len(pf)
    print(
        f"device {device}; base {a.base}; {a.size} px; batch 8; {n_patches} patches; caching them once took {cache_s:.1f} s"
    )
    print(f"{'LoRA training':40s} {'steps/s':>9s} {'ratio':>7s}")
    print(f"{'no cache (VAE + text encoder each step)':40s} {rate_nocache:9.2f} {1.0:6.2f}x")
    print(f"{'latent cache (train_diffusion)':40s} {s['steps_per_s']:9.2f} {s['steps_per_s'] / rate_nocache:6.2f}x")
    print(f"{'sampling, ' + str(a.sample_steps) + ' steps, CFG 7.5':40s} {'images/s':>9s} {'vs DDIM':>7s}")
    for name, r in rates.items():
        print(f"{name:40s} {r:9.2f} {r / rates['ddim']:6.2f}x")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(
        json.dumps(
            {
                "device": device,
                "size": a.size,
                "base": a.base,
                "lora_steps_per_s": {"no_cache": rate_nocache, "latent_cache": s["steps_per_s"]},
                "cache_seconds": cache_s,
                "sampling_images_per_s": rates,
                "peak_gpu_mem_gb": s.get("peak_gpu_mem_gb"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
