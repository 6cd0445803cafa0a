"""Pretraining of the tiny base (``pretrain_base``): stages kept and resumed after a kill, caches keyed
by settings and data, and the bad inputs of issue #10 (a non-tiny base, a model of another base).
Runs are a few steps long; tests/test_fidelity.py checks that pretraining actually learns."""

import json
import logging
import shutil

import h5py
import pytest

from histosynth.config import default_config
from histosynth.diffusion.trained import META_FILE, base_fingerprint, load_trained_pipeline
from histosynth.errors import InputError
from histosynth.models.pretrain import SOURCE_FILE, pretrain_base
from histosynth.text.prompts import strategy_settings

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


def short(**kw):
    return {
        **default_config()["pretrain"],
        "vae_steps": 2,
        "vae_crop": 16,
        "unet_steps": 4,
        "batch_size": 4,
        "checkpoint_every": 2,
        "device": "cpu",
        **kw,
    }


def run(setup, tmp_path, cfg, out="base", **kw):  # noqa: F811
    prompts = strategy_settings("label", setup["cfg"]["prompts"])
    return pretrain_base(
        setup["base"],
        setup["split"]["train"],
        tmp_path / out,
        tmp_path / "work",
        cfg,
        prompts,
        32,
        progress=False,
        **kw,
    )


def test_killed_pretraining_keeps_the_vae_and_resumes_the_unet(setup, tmp_path, caplog):  # noqa: F811
    stopped = run(setup, tmp_path, short(), stop_after_step=2)
    assert stopped["unet"] == {"stopped_at": 2} and not (tmp_path / "base").exists()
    with caplog.at_level(logging.INFO):
        done = run(setup, tmp_path, short())
    assert "VAE stage already done" in caplog.text
    assert done["unet"]["resumed_from"] == 2
    src = json.loads((tmp_path / "base" / SOURCE_FILE).read_text())
    assert src["base_model"] == f"tiny+pretrained:{done['key']}" and src["untrained"] == "tiny"
    # the text encoder trained with the UNet (pretrain.train_text_encoder, on by default) is the base's
    from safetensors.torch import load_file

    def text_encoder(base):
        return load_file(base / "text_encoder" / "model.safetensors")

    trained, untrained = text_encoder(tmp_path / "base"), text_encoder(setup["base"])
    assert trained.keys() == untrained.keys() and any(not (trained[k] == untrained[k]).all() for k in trained)
    assert load_trained_pipeline(tmp_path / "base").scheduler.config.prediction_type == "v_prediction"


def test_other_settings_or_data_never_reuse_a_cache_and_models_of_another_base_are_refused(setup, tmp_path, caplog):  # noqa: F811
    a = run(setup, tmp_path, short(unet_steps=2), out="a")
    with caplog.at_level(logging.INFO):
        b = run(setup, tmp_path, short(unet_steps=2, prompts="empty"), out="b")
    assert a["key"] != b["key"] and "unet" in b  # trained afresh, not taken from a's folder
    assert f"pretraining caches of other settings or training patches are kept, not used: ['{a['key']}']" in caplog.text
    # another training split (another demo config's patches): another key
    other = tmp_path / "other_train.h5"
    shutil.copy(setup["split"]["train"], other)
    with h5py.File(setup["split"]["train"], "r") as h:  # the pixels, read where the split's references resolve
        imgs = h["imgs"][:]
    imgs[0, 0, 0] = 255 - imgs[0, 0, 0]
    with h5py.File(other, "r+") as h:  # split files reference the tile files' pixels: the copy gets its own
        del h["imgs"]
        h.create_dataset("imgs", data=imgs, chunks=(1, *imgs.shape[1:]))
    prompts = strategy_settings("label", setup["cfg"]["prompts"])
    c = pretrain_base(
        setup["base"], other, tmp_path / "c", tmp_path / "work", short(unet_steps=2), prompts, 32, progress=False
    )
    assert c["key"].split("-")[0] == a["key"].split("-")[0] and c["key"] != a["key"]
    # a model trained on pretrained base a is not applied to pretrained base b; the error names both folders
    lora = tmp_path / "lora_on_a"
    lora.mkdir()
    (lora / META_FILE).write_text(json.dumps({"method": "lora", "base_model": base_fingerprint(tmp_path / "a")}))
    with pytest.raises(
        InputError, match=f"{lora} was trained on base model .*tiny\\+pretrained:{a['key']}.*not on {tmp_path / 'b'}"
    ):
        load_trained_pipeline(tmp_path / "b", lora)


def test_only_the_untrained_tiny_base_is_pretrained(setup, tmp_path):  # noqa: F811
    hub_like = tmp_path / "hub_like"
    shutil.copytree(setup["base"], hub_like)
    (hub_like / SOURCE_FILE).write_text(json.dumps({"base_model": "runwayml/stable-diffusion-v1-5"}))
    with pytest.raises(
        InputError, match=f"pretrain_base: {hub_like} is not an untrained tiny base .*'runwayml/stable-diffusion-v1-5'"
    ):
        pretrain_base(
            hub_like, setup["split"]["train"], tmp_path / "out", tmp_path / "work", short(), {}, 32, progress=False
        )
