"""train.num_processes: training in 2 CPU processes (gloo) started by accelerate launch, as the rule
does it. Tiny model, 4 steps."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from _diffusion_setup import train_cfg

from histosynth.diffusion.latents import cache_latents
from histosynth.diffusion.launch import launch_fine_tune
from histosynth.diffusion.trained import LORA_FILE
from histosynth.models.base_model import prepare_base_model
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """16 random 32 px patches of 2 classes, their label prompts and latent cache on the tiny base model."""
    d = tmp_path_factory.mktemp("processes")
    rng = np.random.default_rng(0)
    spec = PatchFileSpec(
        32, ["a", "b"], dict(patch_size=32, patch_level=0, downsample=np.array([1.0, 1.0]), mpp=1.0, magnification=10.0)
    )
    with PatchWriter(d / "train.h5", spec) as w:
        w.append(
            PatchBatch(
                rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
                np.zeros((16, 2)),
                np.arange(16) % 2,
                ["s"] * 16,
                ["c"] * 16,
                np.ones(16),
            )
        )
    pd.DataFrame({"prompt": [f"class {'ab'[i % 2]}" for i in range(16)]}).to_csv(
        d / "prompts.tsv", sep="\t", index=False
    )
    base = prepare_base_model("tiny", d / "base")
    cache_latents(d / "train.h5", d / "prompts.tsv", base, d / "latents.h5", 32, True, progress=False)
    return {"base": base, "latents": d / "latents.h5"}


def run(setup, d, cfg):
    return launch_fine_tune(
        setup["latents"],
        setup["base"],
        d / "model",
        d / "loss.tsv",
        d / "loss.png",
        d / "val",
        d / "ckpt",
        cfg,
        progress=False,
        threads=2,
    )


def test_two_processes_draw_their_own_batches_and_only_the_main_one_writes(setup, tmp_path, capfd):
    cfg = train_cfg(
        max_steps=4,
        checkpoint_every=2,
        validation_every=4,
        validation_images_per_class=1,
        device="cpu",
        checkpoints_keep=5,
    )
    summary = run(setup, tmp_path / "two", {**cfg, "num_processes": 2})
    err = capfd.readouterr().err
    # accelerate's dataloader gave process 0 micro-batches 0, 2, ... and process 1 micro-batches 1, 3, ...
    assert sorted(re.findall(r"process (\d) of 2: first micro-batch (\d+)", err)) == [("0", "0"), ("1", "1")], err[
        -3000:
    ]
    assert summary["num_processes"] == 2 and summary["steps"] == 4
    # only the main process wrote: one summary line, one checkpoint (rank 0's RNG state only), one model, 4 loss rows
    assert len(re.findall(r"lora: 4 steps", err)) == 1
    (folder,) = [f for f in (tmp_path / "two" / "ckpt").iterdir() if f.is_dir()]
    ckpt = folder / "checkpoint-2"
    assert (ckpt / "random_states_0.pkl").is_file() and not list(ckpt.glob("random_states_1*"))
    assert sorted(p.name for p in (tmp_path / "two" / "val").iterdir()) == ["step-0000004.png"]
    assert len((tmp_path / "two" / "loss.tsv").read_text().splitlines()) == 1 + 4
    assert all(torch.isfinite(v).all() for v in load_file(tmp_path / "two" / "model" / LORA_FILE).values())
    # the same settings in one process: at step 1 (same initial weights) its loss is that of micro-batch 0, the
    # two processes' is the mean over micro-batches 0 and 1; were both on the same batch, these would be equal
    run(setup, tmp_path / "one", cfg)
    first = [
        pd.read_csv(tmp_path / name / "loss.tsv", sep="\t").set_index("step").loc[1, "loss"] for name in ("one", "two")
    ]
    assert abs(first[0] - first[1]) > 1e-4, first  # float noise between runs is ~1e-6
