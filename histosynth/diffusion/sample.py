"""``sample``: synthetic patches from the base model with the trained LoRA or UNet, and a diffusers
scheduler by name.

Image i gets seed ``sampling.seed + i`` through its own ``torch.Generator``, so the same seed gives
the same image whatever the batch (or shard) it lands in. Output: a patch HDF5 (the contract, plus
``prompts``, ``seeds`` and ``round`` columns) and a PNG grid with a row per class.

Sharding (``sampling.shards``): shard k of N samples the k-th of N consecutive ranges of the plan
(``shard_rows``), each its own job and file; ``gather_shards`` copies the shard files into one
patch file (stored chunks copied as they are), which stands alone: a lost shard file changes
nothing in it.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pandas as pd
from ..progress import progress_bar

from ..device import pick_device
from ..errors import InputError
from ..patchfile import NO_COORD, PatchBatch, PatchFile, PatchFileSpec, PatchWriter, magnification_for_mpp
from ..plots import image_grid
from .text_encoding import pipeline_embeds
from .trained import load_trained_pipeline, trained_settings

log = logging.getLogger(__name__)
SYNTHETIC_COLUMNS = {"prompts": "str", "seeds": "int", "round": "int"}


def scheduler_class(name: str):
    import diffusers

    table = {
        "ddim": ("DDIMScheduler", {}),
        "ddpm": ("DDPMScheduler", {}),
        "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
        # first-order DPM-Solver cannot step to sigma 0 (diffusers refuses its default final_sigmas_type)
        "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
        "euler": ("EulerDiscreteScheduler", {}),
        "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
        "pndm": ("PNDMScheduler", {}),
        "unipc": ("UniPCMultistepScheduler", {}),
        "lms": ("LMSDiscreteScheduler", {}),
        "heun": ("HeunDiscreteScheduler", {}),
    }
    if name not in table:
        raise InputError(f"sampling.scheduler {name!r} is not one of {sorted(table)}")
    cls, kwargs = table[name]
    return getattr(diffusers, cls), kwargs


def load_pipeline(base_dir, model_dir, scheduler: str, device: str):
    """Plain diffusers: the base pipeline with the trained LoRA or UNet of ``model_dir`` (see ``trained.py``)."""
    import torch

    pipe = load_trained_pipeline(base_dir, model_dir)
    cls, kwargs = scheduler_class(scheduler)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **kwargs)
    device = pick_device(device)
    pipe.to(device, torch.float16 if device == "cuda" else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    # prompts are encoded as the model was trained (train.text_chunks), read from its metadata
    pipe.text_chunks = int(trained_settings(model_dir).get("text_chunks", 1))
    return pipe


def plan_samples(prompts_tsv, cfg: dict) -> pd.DataFrame:
    """Which prompt and seed each synthetic image gets.

    ``per_prompt``: every distinct training prompt N times. Otherwise ``per_class`` images per
    class, spread over that class's training prompts in proportion to how often they occur
    (largest remainders), so a class's synthetic set mirrors its prompt mix.
    """
    p = pd.read_csv(prompts_tsv, sep="\t", keep_default_na=False)
    freq = p.groupby(["label", "label_name", "prompt"]).size().rename("n").reset_index()
    rows = []
    if cfg.get("per_prompt"):
        for r in freq.itertuples():
            rows += [(r.label, r.label_name, r.prompt)] * cfg["per_prompt"]
    else:
        for (lab, name), part in freq.groupby(["label", "label_name"], sort=True):
            share = part["n"].to_numpy() / part["n"].sum() * cfg["per_class"]
            count = np.floor(share).astype(int)
            for j in np.argsort(-(share - count), kind="stable")[: cfg["per_class"] - count.sum()]:
                count[j] += 1
            for prompt, c in zip(part["prompt"], count):
                rows += [(lab, name, prompt)] * int(c)
    plan = pd.DataFrame(rows, columns=["label", "label_name", "prompt"])
    plan["seed"] = cfg["seed"] + np.arange(len(plan))
    return plan


PNDM_MIN_STEPS = 4


def generate(pipe, prompts: list[str], seeds: list[int], cfg: dict, resolution: int) -> np.ndarray:
    """uint8 (N, R, R, 3); one generator per image; prompts encoded by ``text_encoding`` as in training."""
    import torch

    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    kwargs = dict(
        num_inference_steps=cfg["steps"],
        guidance_scale=cfg["guidance_scale"],
        generator=gens,
        height=resolution,
        width=resolution,
        output_type="np",
        eta=cfg["eta"],
    )
    negative = [cfg["negative_prompt"]] * len(prompts) if cfg["negative_prompt"] else None
    out = pipe(**pipeline_embeds(pipe, list(prompts), negative, getattr(pipe, "text_chunks", 1)), **kwargs).images
    if not np.isfinite(out).all():
        raise FloatingPointError(
            "sampling produced NaN pixels (fp16 overflow?); try sampling.device cpu or another scheduler"
        )
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def synthetic_spec(train_h5, experiment: str, resolution: int, sample_cfg: dict, model_dir=None) -> PatchFileSpec:
    """Patch-file spec of a synthetic set; its µm/px is that of the real pixels one generated image stands for:
    a whole training patch resized to ``resolution``, or a ``train.crop`` of one at its own scale."""
    with PatchFile(train_h5) as pf:
        names, mpp = pf.label_names, float(pf.coords_attrs.get("mpp", np.nan))
    field_px = trained_settings(model_dir).get("crop") or pf.patch_size
    stored = mpp * field_px / resolution if np.isfinite(mpp) else np.nan
    return PatchFileSpec(
        resolution,
        names,
        coords_attrs=dict(
            patch_size=resolution,
            patch_level=-1,
            downsample=np.array([1.0, 1.0]),
            mpp=stored,
            magnification=magnification_for_mpp(stored),
            name=experiment,
        ),
        root_attrs=dict(source="synthetic", experiment=experiment, sample_settings=json.dumps(sample_cfg)),
        extra=SYNTHETIC_COLUMNS,
    )


def write_batches(writer: PatchWriter, imgs, labels, prompts, seeds, round_no: int, experiment: str) -> None:
    n = len(imgs)
    writer.append(
        PatchBatch(
            imgs,
            np.full((n, 2), NO_COORD),
            labels,
            [f"synthetic:{experiment}"] * n,
            [f"synthetic:{experiment}:{s}" for s in seeds],
            np.full(n, writer.spec.coords_attrs["mpp"]),
            extra={"prompts": list(prompts), "seeds": list(seeds), "round": [round_no] * n},
        )
    )


def class_grid(h5, out_png, per_class: int = 8) -> None:
    rows = []
    with PatchFile(h5) as pf:
        for lab in np.unique(pf.labels):
            idx = np.flatnonzero(pf.labels == lab)[:per_class]
            rows.append((f"{pf.label_names[lab]} (n={(pf.labels == lab).sum()})", pf.read(idx)))
    image_grid(rows, out_png, columns=per_class)


def shard_rows(n: int, shards: int, shard: int) -> np.ndarray:
    """Rows of shard ``shard`` (0-based) of ``shards``: consecutive, sizes differing by at most one."""
    if not 0 <= shard < shards:
        raise InputError(f"shard {shard} does not exist with sampling.shards={shards}")
    return np.array_split(np.arange(n), shards)[shard]


def sample(
    base_dir,
    model_dir,
    prompts_tsv,
    train_h5,
    out_h5,
    grid_png,
    cfg: dict,
    resolution: int,
    experiment: str,
    progress: bool = True,
    shard: int = 0,
    shards: int = 1,
) -> dict:
    """Generate (shard ``shard`` of ``shards`` of) the synthetic set with the trained model in ``model_dir`` on ``base_dir``.

    ``cfg`` is the experiment's ``sampling:`` settings: images are planned per class (or per prompt)
    from ``prompts_tsv``, image i gets seed ``cfg["seed"] + i``; a shard takes consecutive rows of
    that plan. Writes ``out_h5`` (images, labels, prompts, seeds; label names from ``train_h5``) and
    ``grid_png`` (None: no grid); returns a summary. Nothing is cached.
    """
    if cfg["scheduler"] == "pndm" and cfg["steps"] < PNDM_MIN_STEPS:
        # diffusers' PNDM runs 4 Runge-Kutta warm-up steps; fewer fail deep inside set_timesteps
        raise InputError(f"sampling.scheduler pndm needs sampling.steps >= {PNDM_MIN_STEPS}, got {cfg['steps']}")
    plan = plan_samples(prompts_tsv, cfg)
    if plan.empty:
        raise InputError(f"{prompts_tsv}: no prompts to sample from")
    plan = plan.iloc[shard_rows(len(plan), shards, shard)]
    pipe = load_pipeline(base_dir, model_dir, cfg["scheduler"], cfg["device"]) if len(plan) else None
    spec = synthetic_spec(train_h5, experiment, resolution, cfg, model_dir)
    t0 = time.perf_counter()
    with PatchWriter(out_h5, spec) as w:
        for s in progress_bar(
            range(0, len(plan), cfg["batch_size"]),
            desc=f"sample {experiment}",
            unit="batch",
            disable=not progress,
            mininterval=2,
        ):
            part = plan.iloc[s : s + cfg["batch_size"]]
            imgs = generate(pipe, part["prompt"].tolist(), part["seed"].tolist(), cfg, resolution)
            write_batches(w, imgs, part["label"].to_numpy(), part["prompt"], part["seed"].to_numpy(), 0, experiment)
        seconds = time.perf_counter() - t0
        w.set_attrs(seconds=seconds, device=str(pipe.device) if pipe else "")  # for the gathered summary
    if grid_png is not None:
        class_grid(out_h5, grid_png)
    rate = len(plan) / max(seconds, 1e-9)
    log.info(
        "sampled %d images (%d classes, %d distinct prompts) with %s, %d steps, CFG %.1f at %d px: %.2f images/s on %s",
        len(plan),
        plan["label"].nunique(),
        plan["prompt"].nunique(),
        cfg["scheduler"],
        cfg["steps"],
        cfg["guidance_scale"],
        resolution,
        rate,
        pipe.device if pipe else "-",
    )
    return {"n": len(plan), "seconds": seconds, "images_per_s": rate, "device": str(pipe.device) if pipe else ""}


def gather_shards(pieces: list[tuple[str, np.ndarray]], out_h5) -> None:
    """One synthetic patch file of the given rows of shard files, in the order given. The pixels
    are copied (chunk by chunk, not re-encoded): Snakemake does not remake a deleted intermediate
    file whose consumers are up to date, so a file that only referenced its shards would read a
    lost shard as black images."""
    paths = [p for p, _ in pieces]
    with PatchFile(paths[0]) as first:
        attrs = {
            k: v for k, v in first.attrs.items() if k not in ("n_patches", "output_patch_size", "seconds", "device")
        }
        spec = PatchFileSpec(first.patch_size, first.label_names, first.coords_attrs, attrs, extra=SYNTHETIC_COLUMNS)
    with PatchWriter(out_h5, spec) as w:
        for path, rows in pieces:
            rows = np.asarray(rows, np.int64)
            if rows.size == 0:
                continue
            with PatchFile(path) as pf:
                if pf.label_names != spec.label_names:
                    raise InputError(
                        f"{path} has classes {pf.label_names}, {paths[0]} has {spec.label_names}; rerun its shard"
                    )
                batch = PatchBatch(
                    None,
                    pf.coords[rows],
                    pf.labels[rows],
                    pf.slide_ids[rows],
                    pf.case_ids[rows],
                    pf.mpp[rows],
                    extra={c: pf.column(c)[rows] for c in SYNTHETIC_COLUMNS},
                )
            w.append_copy(path, rows, batch)


def gather_samples(shard_h5s: list, out_h5, grid_png) -> dict:
    """``raw.h5`` from the sample shards in shard order (= the unsharded order), its grid and summary."""
    pieces, n, seconds, devices = [], 0, 0.0, set()
    for path in shard_h5s:
        with PatchFile(path) as pf:
            pieces.append((path, np.arange(len(pf))))
            n += len(pf)
            seconds += float(pf.attrs.get("seconds", 0.0))
            devices |= {str(pf.attrs.get("device", ""))} - {""}
    gather_shards(pieces, out_h5)
    class_grid(out_h5, grid_png)
    # images per second of GPU time (summed over shards), comparable with an unsharded run
    return {
        "n": n,
        "seconds": seconds,
        "images_per_s": n / max(seconds, 1e-9),
        "device": ",".join(sorted(devices)),
        "shards": len(shard_h5s),
    }
