"""Shared set-up of test_classifier.py, test_diffusion_filtering.py, test_diffusion_latents.py, test_diffusion_sample.py, test_diffusion_train.py (split from test_diffusion.py)."""

import pytest
from histosynth.config import default_config
from histosynth.diffusion.latents import cache_latents
from histosynth.diffusion.train import fine_tune, list_checkpoints
from histosynth.models.base_model import prepare_base_model
from histosynth.models.clip_tokenizer import load_tokenizer
from histosynth.patchfile import PatchFile
from histosynth.split import split_patches
from histosynth.text.prompts import build_prompts, token_counter
from histosynth.tiling import TilingParams, tile_slide


@pytest.fixture(scope="session")
def setup(tmp_path_factory, demo_slide):
    """Demo slide -> DAB-labelled 32 px patches -> split -> label prompts -> latent cache."""
    d = tmp_path_factory.mktemp("diff")
    cfg = default_config(
        tiling={"patch_size": 32, "mpp": 1.0, "labels": {"method": "dab"}, "tissue": {"max_saturation": 12}}
    )
    tile_slide(
        demo_slide, "d", "c", d / "tiles.h5", d / "t.png", TilingParams.from_config(cfg["tiling"]), progress=False
    )
    split = {s: d / f"{s}.h5" for s in ("train", "val", "test")}
    with PatchFile(d / "tiles.h5") as pf:
        assert len(pf) >= 20
    split_patches([d / "tiles.h5"], split, d / "m.tsv", None, 0, 0, 0)
    base = prepare_base_model("tiny", d / "base")
    tok = load_tokenizer(str(base / "tokenizer"))
    build_prompts("label", split["train"], cfg["prompts"], token_counter(tok), 77, out_tsv=d / "prompts.tsv")
    cache_latents(split["train"], d / "prompts.tsv", base, d / "latents.h5", 32, True, progress=False)
    return {
        "dir": d,
        "base": base,
        "split": split,
        "prompts": d / "prompts.tsv",
        "latents": d / "latents.h5",
        "cfg": cfg,
    }


def train_cfg(**kw):
    return default_config(
        train={
            "max_steps": 30,
            "batch_size": 8,
            "learning_rate": 2e-3,
            "checkpoint_every": 10,
            "validation_every": 30,
            "validation_images_per_class": 2,
            **kw,
        }
    )["train"]


def run_training(setup, name, cfg, latents=None, **kw):
    d = setup["dir"] / name
    return fine_tune(
        latents or setup["latents"],
        setup["base"],
        d / "model",
        d / "loss.tsv",
        d / "loss.png",
        d / "val",
        d / "ckpt",
        cfg,
        progress=False,
        **kw,
    ), d


def checkpoint_steps(d):
    """Steps of the checkpoints under a run's checkpoint root (one keyed folder)."""
    folders = [f for f in (d / "ckpt").iterdir() if f.is_dir()]
    assert len(folders) == 1, folders
    return [s for s, _ in list_checkpoints(folders[0])]


@pytest.fixture(scope="session")
def trained(setup):
    summary, d = run_training(setup, "lora", train_cfg())
    return summary, d
