"""Fidelity: brief training from the untrained tiny base must bring samples measurably closer to the real patches.

The other training tests check mechanics (files, resume, shapes); this one checks the math. It
pretrains the tiny base on the demo's real IHC patches (``pretrain_base``: VAE reconstruction, then
full UNet fine-tuning through ``fine_tune``) and compares, with the *same trained VAE*, samples of
the random UNet with samples of the trained UNet loaded back through the workflow's sampler
(``load_pipeline`` -> ``load_trained_pipeline``). Only the UNet's learning separates the two, so a
wrong loss target (epsilon vs v_prediction), latents not scaled by the VAE's ``scaling_factor``
during training, or a sampler that drops the trained weights all leave the distance where it was.
Measured by breaking each once locally (FD untrained -> trained; the assertion needs < 0.5x), with
the tiny base's zero-terminal-SNR v-prediction schedule and its text encoder trained with the UNet:
intact 0.0549 -> 0.0141 (passes); epsilon target for the v-prediction scheduler 0.0549 -> 0.0573,
latents not multiplied by scaling_factor (0.376) in the training step 0.0549 -> 0.0874, sampler
loading the base UNet instead of the trained one (the trained text encoder still loaded)
0.0549 -> 0.0567 (all three fail). With the earlier epsilon schedule the same three breaks failed too
(0.116 -> 0.041 intact; 0.129, 0.082, 0.116 broken).

Feature for the Fréchet distance: per-patch colour and texture statistics (RGB means and standard
deviations, mean absolute horizontal/vertical gradients per channel: 12 numbers). No weights are
needed, it is deterministic, and it is valid here because what separates the demo's tissue from a
random diffusion model's output is exactly colour (brown DAB, blue haematoxylin, pale stroma) and
texture scale; it is not a substitute for Inception/domain features on real data.
"""

import numpy as np
import pytest

from histosynth.config import default_config
from histosynth.diffusion.sample import generate, load_pipeline
from histosynth.evaluation.metrics import frechet
from histosynth.models.pretrain import pretrain_base
from histosynth.patchfile import PatchFile

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores

N_SAMPLES = 24


def colour_texture_features(imgs: np.ndarray) -> np.ndarray:
    x = imgs.astype(np.float64) / 255.0
    gx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
    gy = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2))
    return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2)), gx, gy], axis=1)


def draw(base, trained, prompts):
    pipe = load_pipeline(base, trained, "ddim", "cpu")
    cfg = {**default_config()["sampling"], "steps": 15, "guidance_scale": 2.0}
    return generate(pipe, prompts, list(range(len(prompts))), cfg, 32)


def test_training_brings_samples_close_to_the_real_patches(setup, tmp_path):  # noqa: F811
    cfg = {
        **default_config()["pretrain"],
        "vae_steps": 120,
        "vae_crop": 32,
        "unet_steps": 200,
        "batch_size": 8,
        "checkpoint_every": 200,
        "device": "cpu",
    }
    summary = pretrain_base(
        setup["base"],
        setup["split"]["train"],
        tmp_path / "base",
        tmp_path / "work",
        cfg,
        setup["cfg"]["prompts"],
        32,
        progress=False,
    )
    (work,) = [d for d in (tmp_path / "work").iterdir() if d.is_dir()]
    with PatchFile(setup["split"]["train"]) as pf:
        real = pf.read(np.arange(len(pf)))
    import pandas as pd

    prompts = pd.read_csv(work / "prompts.tsv", sep="\t", keep_default_na=False)["prompt"].tolist()
    prompts = [prompts[i % len(prompts)] for i in range(0, N_SAMPLES * 7, 7)]
    f_real = colour_texture_features(real)
    # same trained VAE in both: the random UNet vs the UNet trained by fine_tune, loaded by the sampler
    fd_untrained = frechet(f_real, colour_texture_features(draw(work / "base_vae", None, prompts)))
    fd_trained = frechet(f_real, colour_texture_features(draw(work / "base_vae", work / "unet", prompts)))
    print(
        f"FD colour/texture: untrained UNet {fd_untrained:.4f}, trained {fd_trained:.4f}; VAE scaling_factor "
        f"{summary['vae']['scaling_factor']:.3f}"
    )
    assert fd_trained < 0.5 * fd_untrained, (
        f"training did not bring samples close to the real patches: FD {fd_trained:.4f} after training, "
        f"{fd_untrained:.4f} before (needs < 0.5x)"
    )
