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


def test_the_vae_encodes_a_bounded_number_of_pixels_per_batch(setup, tmp_path, monkeypatch):
    """512 px patches go 8 to a VAE batch where 256 px go 32: the encoder's activations grow with the
    pixels (SD 1.5's VAE needs ~5 GB for 32 patches at 256 px on the CPU, bench_memory.py --stage sd)."""
    from diffusers import AutoencoderKL

    from histosynth.diffusion import latents

    assert [latents.encode_batch_size(px) for px in (32, 256, 512, 1024, 4096)] == [32, 32, 8, 2, 1]
    seen, encode = [], AutoencoderKL.encode

    def recording(self, x, *a, **k):
        seen.append(x.shape[0])
        return encode(self, x, *a, **k)

    monkeypatch.setattr(AutoencoderKL, "encode", recording)
    monkeypatch.setattr(latents, "ENCODE_PIXELS_PER_BATCH", 5 * 32 * 32)  # 5 patches of 32 px
    n = latents.cache_image_latents(
        setup["split"]["train"], setup["base"], tmp_path / "i.h5", 32, False, progress=False
    )
    assert n > 5 and sum(seen) == n and max(seen) == 5
