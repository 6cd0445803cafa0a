"""The trained-model folder: written by ``train_diffusion`` (and inside its checkpoints), read by
sampling and the filter. Two plain diffusers formats, one per ``train.method``:

- ``lora``: ``pytorch_lora_weights.safetensors`` from ``StableDiffusionPipeline.save_lora_weights``
  (UNet and, when trained, text-encoder adapters); load with ``pipe.load_lora_weights(folder)``;
- ``full``: a UNet folder from ``UNet2DConditionModel.save_pretrained``; load with
  ``StableDiffusionPipeline.from_pretrained(base, unet=UNet2DConditionModel.from_pretrained(folder))``.
  With ``train.train_text_encoder`` it also holds the trained text encoder in ``text_encoder/``
  (``CLIPTextModel.save_pretrained``): add ``text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")``.

Both carry ``histosynth_training.json`` with the method and the base model they were trained on,
so a folder is never applied to a base model it does not fit.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_dir
from ..errors import InputError
from ..models import SOURCE_FILE

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name for save/load_lora_weights
UNET_CONFIG = "config.json"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"  # save_pretrained's weights file
META_FILE = "histosynth_training.json"
TEXT_ENCODER_DIR = "text_encoder"  # a full fine-tune's trained text encoder, when it trained one
METHODS = ("lora", "full")


def base_fingerprint(base) -> dict:
    """What identifies a base model for compatibility: its source and UNet architecture."""
    unet_cfg = json.loads((Path(base) / "unet" / UNET_CONFIG).read_text())
    src = Path(base) / SOURCE_FILE
    return {
        "source": json.loads(src.read_text()).get("base_model") if src.is_file() else str(base),
        "cross_attention_dim": unet_cfg.get("cross_attention_dim"),
        "block_out_channels": unet_cfg.get("block_out_channels"),
    }


def write_lora(folder, unet, text_encoder=None) -> None:
    """The PEFT adapters of ``unet`` (and ``text_encoder``) in diffusers' LoRA format."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    def layers(model):
        return convert_state_dict_to_diffusers(get_peft_model_state_dict(model)) if model is not None else None

    StableDiffusionPipeline.save_lora_weights(
        save_directory=folder,
        unet_lora_layers=layers(unet),
        text_encoder_lora_layers=layers(text_encoder),
        safe_serialization=True,
    )


def read_lora(folder, unet, text_encoder=None) -> None:
    """Load a ``write_lora`` folder into models that already carry the same adapters (resuming)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.training_utils import _set_state_dict_into_text_encoder
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict

    state, _ = StableDiffusionPipeline.lora_state_dict(folder)
    unet_state = convert_unet_state_dict_to_peft(
        {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    )
    incompatible = set_peft_model_state_dict(unet, unet_state, adapter_name="default")
    if getattr(incompatible, "unexpected_keys", None):
        raise InputError(
            f"LoRA weights in {folder} do not fit the adapters of this run: unexpected keys "
            f"{incompatible.unexpected_keys[:3]}..."
        )
    if text_encoder is not None:
        _set_state_dict_into_text_encoder(state, prefix="text_encoder.", text_encoder=text_encoder)


def read_full(folder, unet) -> None:
    """Load a ``save_pretrained`` UNet folder into ``unet`` in place (resuming)."""
    from diffusers import UNet2DConditionModel

    saved = UNet2DConditionModel.from_pretrained(folder)
    unet.register_to_config(**saved.config)
    unet.load_state_dict(saved.state_dict())


def save_trained(out_dir, method: str, unet, text_encoder, base, settings: dict) -> None:
    """The final folder of a run, atomically: the weights in ``method``'s format and the metadata."""
    with atomic_dir(out_dir) as tmp:
        if method == "lora":
            write_lora(tmp, unet, text_encoder)
        else:
            unet.save_pretrained(tmp)
            if text_encoder is not None:
                text_encoder.save_pretrained(tmp / TEXT_ENCODER_DIR)
        (tmp / META_FILE).write_text(
            json.dumps(
                {"method": method, "base_model": base_fingerprint(base), "settings": settings}, indent=2, default=str
            )
        )


def trained_method(folder) -> str:
    """``lora`` or ``full``, from the folder's metadata, else from which diffusers files it holds."""
    folder = Path(folder)
    meta = folder / META_FILE
    if meta.is_file():
        return json.loads(meta.read_text())["method"]
    if (folder / LORA_FILE).is_file():
        return "lora"
    if (folder / UNET_CONFIG).is_file():
        return "full"
    raise InputError(f"trained-model folder {folder} has neither {LORA_FILE} (LoRA) nor {UNET_CONFIG} (a full UNet)")


def trained_settings(folder) -> dict:
    """The ``train`` settings a model folder was trained with ({} for the base model or a folder without metadata)."""
    meta = Path(folder) / META_FILE if folder is not None else None
    return json.loads(meta.read_text()).get("settings", {}) if meta is not None and meta.is_file() else {}


def load_trained_pipeline(base_dir, folder=None):
    """``StableDiffusionPipeline`` of the base model with the trained LoRA or UNet of ``folder`` (None: the base alone)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    base = Path(base_dir)
    kwargs = dict(safety_checker=None, requires_safety_checker=False)
    if folder is None:
        return StableDiffusionPipeline.from_pretrained(base, **kwargs)
    folder = Path(folder)
    method = trained_method(folder)
    meta = folder / META_FILE
    if meta.is_file():
        trained_on, here = json.loads(meta.read_text())["base_model"], base_fingerprint(base)
        if trained_on != here:
            raise InputError(f"{folder} was trained on base model {trained_on}, not on {base} ({here}); retrain it")
    if method == "lora" and not (folder / LORA_FILE).is_file():
        raise InputError(f"LoRA folder {folder} has no {LORA_FILE}")
    try:
        if method == "full":
            if (folder / TEXT_ENCODER_DIR / UNET_CONFIG).is_file():
                from transformers import CLIPTextModel

                kwargs["text_encoder"] = CLIPTextModel.from_pretrained(folder, subfolder=TEXT_ENCODER_DIR)
            return StableDiffusionPipeline.from_pretrained(
                base, unet=UNet2DConditionModel.from_pretrained(folder), **kwargs
            )
        pipe = StableDiffusionPipeline.from_pretrained(base, **kwargs)
        pipe.load_lora_weights(folder)
        return pipe
    except (ValueError, RuntimeError, KeyError, OSError) as e:
        raise InputError(f"trained {method} model {folder} does not fit base model {base}: {e}") from e
