import h5py
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


def test_latent_cache_holds_both_orientations_and_prompts(setup):
    with h5py.File(setup["latents"], "r") as h:
        assert h["latent_mean"].shape[1:] == (4, 8, 8) and "latent_mean_flip" in h
        assert not np.allclose(h["latent_mean"][0], h["latent_mean_flip"][0])
        assert h["prompt_embeds"].shape[0] == len(set(pd.read_csv(setup["prompts"], sep="\t")["prompt"])) + 1
        assert h["prompts"].asstr()[-1] == ""  # the unconditional prompt for CFG dropout
