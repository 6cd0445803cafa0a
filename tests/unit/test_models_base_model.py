"""The offline 'tiny' models go through the same from_pretrained code as real ones."""

import json
import pytest
from histosynth.embed import embed_patches, load_embeddings
from histosynth.errors import InputError
from histosynth.models.base_model import check_base_model_dir, prepare_base_model
from histosynth.models.embedder import prepare_embedder


def test_classifier_backbone_embeds_with_the_trained_resnet(patches, tmp_path):
    from histosynth.classifier import build_resnet18, save_classifier

    folder = tmp_path / "classifier"
    save_classifier(build_resnet18(2), folder, ["pink", "blue"], 32)
    assert embed_patches(patches["val"], folder, tmp_path / "v.h5", "cls", 4, 0, progress=False) == 10
    feats, attrs = load_embeddings(tmp_path / "v.h5", patches["val"])
    assert feats.shape == (10, 512) and attrs["backbone"] == "classifier" and str(folder) in attrs["trained_on"]
    # it is read where train_classifier wrote it, never prepared as a ViT
    with pytest.raises(InputError, match="embedding.backbone only, not to evaluation.backbone"):
        prepare_embedder("classifier", tmp_path / "embedder")


def test_tiny_base_model_is_a_loadable_diffusers_folder(tmp_path):
    from diffusers import StableDiffusionPipeline

    out = prepare_base_model("tiny", tmp_path / "base")
    check_base_model_dir(out)
    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert pipe.tokenizer("histology")["input_ids"][0] == 49406
    assert json.loads((out / "histosynth_source.json").read_text()) == {"base_model": "tiny"}
    # zero terminal SNR (the last timestep is pure noise) with v-prediction, so colour can follow the prompt
    sched = pipe.scheduler.config
    assert sched.prediction_type == "v_prediction" and sched.rescale_betas_zero_snr
    assert pipe.scheduler.alphas_cumprod[-1] == 0 and sched.timestep_spacing == "trailing"
    (out / "vae" / "config.json").unlink()
    (out / "vae").rename(tmp_path / "vae_moved")
    with pytest.raises(InputError, match=r"missing component folder\(s\) \['vae'\]"):
        check_base_model_dir(out)


def test_diffusers_empty_float32_warning_is_silenced_and_others_are_not(tmp_path):
    """diffusers' "should be kept in float32: []" on every .to(dtype) says nothing; real warnings stay."""
    import logging

    import torch

    import histosynth  # noqa: F401  (installs the filter)
    from histosynth.models.base_model import build_tiny_pipeline

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    source = logging.getLogger("diffusers.models.modeling_utils")
    keep = Keep()
    source.addHandler(keep)
    try:
        pipe = build_tiny_pipeline(tmp_path / "tok")
        pipe.unet.to(torch.float32)
        source.warning("another warning")
    finally:
        source.removeHandler(keep)
    assert keep.messages == ["another warning"]
