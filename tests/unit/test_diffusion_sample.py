import numpy as np
import pytest
from _paper_setup import pathldm_train_cfg
from histosynth.config import default_config
from histosynth.errors import InputError
from histosynth.diffusion.sample import generate, load_pipeline

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


def test_sampling_is_reproducible_per_seed(setup, trained):
    """Each image has its own generator, so its starting noise depends on its seed only. The network then runs
    on a batch of 3 (x2 for CFG) or of 1, whose kernels may sum in another order: the same seed gives the same
    image up to float rounding (seen on 1 CPU thread: one pixel off by 1 of 255), a different seed another image
    (mean difference ~46 of 255)."""
    pipe = load_pipeline(setup["base"], trained[1] / "model", "dpmsolver++", "cpu")
    cfg = default_config(sampling={"steps": 4})["sampling"]
    prompt = "Histology image of DAB-positive tissue"
    batch = generate(pipe, [prompt, prompt, prompt], [5, 6, 7], cfg, 32).astype(int)
    alone = generate(pipe, [prompt], [6], cfg, 32).astype(int)
    same = np.abs(batch[1] - alone[0])
    assert same.max() <= 2 and same.mean() <= 0.05  # rounding: at most 2 levels, on a few pixels
    assert np.abs(batch[0] - batch[1]).mean() > 10


def test_pndm_with_fewer_steps_than_its_warm_up_is_a_clear_error(tmp_path):
    from histosynth.diffusion.sample import sample
    from histosynth.errors import InputError

    cfg = {"scheduler": "pndm", "steps": 2}
    with pytest.raises(InputError, match=r"sampling\.scheduler pndm needs sampling\.steps >= 4, got 2"):
        sample(tmp_path, tmp_path, tmp_path / "p.tsv", tmp_path / "t.h5", tmp_path / "o.h5", None, cfg, 32, "e")


def test_training_and_sampling_encode_prompts_alike(pathldm, tmp_path):
    from histosynth.diffusion.sample import generate, load_pipeline, synthetic_spec
    from histosynth.diffusion.train import fine_tune

    d = tmp_path
    cfg = pathldm_train_cfg(validation_every=2)
    fine_tune(
        pathldm["latents"],
        pathldm["base"],
        d / "model",
        d / "loss.tsv",
        d / "loss.png",
        d / "val",
        d / "ckpt",
        cfg,
        progress=False,
    )
    pipe = load_pipeline(pathldm["base"], d / "model", "ddim", "cpu")
    assert pipe.text_chunks == 2
    scfg = {**default_config()["sampling"], "steps": 2}
    img = generate(pipe, ["high tumor; high til; lobular carcinoma"], [0], scfg, 32)
    assert img.shape == (1, 32, 32, 3)
    # a crop keeps the patches' scale: the synthetic images carry the real µm/px
    assert synthetic_spec(pathldm["train"], "x", 32, scfg, d / "model").coords_attrs["mpp"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="rerun cache_latents"):
        fine_tune(
            pathldm["latents"],
            pathldm["base"],
            d / "m2",
            d / "l2.tsv",
            d / "l2.png",
            d / "v2",
            d / "c2",
            pathldm_train_cfg(text_chunks=1),
            progress=False,
        )


def test_every_scheduler_samples_the_tiny_base(tmp_path):
    """Each sampling.scheduler name loads on the tiny base's zero-terminal-SNR v-prediction schedule and draws
    finite images (first-order DPM-Solver needs final_sigmas_type sigma_min, which diffusers does not default to)."""
    from histosynth.diffusion.sample import scheduler_class
    from histosynth.models.base_model import prepare_base_model

    import yaml
    from histosynth.config import CONFIG_SCHEMA

    schema = yaml.safe_load(CONFIG_SCHEMA.read_text())
    names = schema["properties"]["sampling"]["properties"]["scheduler"]["enum"]  # every name the config accepts
    base = prepare_base_model("tiny", tmp_path / "base")
    for name in names:
        cfg = default_config(sampling={"scheduler": name, "steps": 4, "guidance_scale": 2.0})["sampling"]
        img = generate(load_pipeline(base, None, name, "cpu"), ["an H&E patch"] * 2, [0, 1], cfg, 32)
        assert img.shape == (2, 32, 32, 3) and 0 < img.mean() < 255, name
    with pytest.raises(InputError, match="sampling.scheduler 'magic'"):
        scheduler_class("magic")
