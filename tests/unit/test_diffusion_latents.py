import h5py
import numpy as np
import pandas as pd
import pytest

from histosynth.errors import InputError

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


def test_latent_cache_holds_both_orientations_and_prompts(setup):
    with h5py.File(setup["latents"], "r") as h:
        assert h["latent_mean"].shape[1:] == (4, 8, 8) and "latent_mean_flip" in h
        assert not np.allclose(h["latent_mean"][0], h["latent_mean_flip"][0])
        assert h["prompt_embeds"].shape[0] == len(set(pd.read_csv(setup["prompts"], sep="\t")["prompt"])) + 1
        assert h["prompts"].asstr()[-1] == ""  # the unconditional prompt for CFG dropout


def test_cache_holds_every_flip_and_whole_patches_for_cropping(pathldm):
    import h5py

    from histosynth.diffusion.latents import LatentCache

    with h5py.File(pathldm["latents"], "r") as h:
        views = [h[f"latent_mean{s}"][0] for s in ("", "_flip", "_vflip", "_hvflip")]
        assert views[0].shape == (4, 12, 12)  # the whole 48 px patch, cropped to 32 px (8 latent px) per step
        assert all(not np.allclose(views[0], v) for v in views[1:])
        assert h["prompt_embeds"].shape[1] == 154 and h.attrs["resolution"] == 32 and h.attrs["latent_crop"] == 8
    with LatentCache(pathldm["latents"]) as cache:
        assert (
            cache.views == ["", "_flip", "_vflip", "_hvflip"]
            and cache.til_level.tolist() == pathldm["til_level"].tolist()
        )


def test_flip_and_crop_settings_key_the_cache(pathldm, tmp_path):
    from histosynth.diffusion.latents import LatentCache, cache_latents

    p = pathldm
    cache_latents(
        p["train"], p["prompts"], p["base"], tmp_path / "h.h5", 32, True, progress=False, crop=32, text_chunks=2
    )
    with LatentCache(p["latents"]) as a, LatentCache(tmp_path / "h.h5") as b:
        assert a.fingerprint != b.fingerprint and b.views == ["", "_flip"]
    with pytest.raises(InputError, match="train.crop 40 and train.resolution 32"):
        cache_latents(p["train"], p["prompts"], p["base"], tmp_path / "x.h5", 32, True, progress=False, crop=40)
