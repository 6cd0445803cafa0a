"""Patch embeddings with a DINO-style ViT: transformers (hub id / folder), timm, or ``tiny``.

``prepare_embedder`` saves the backbone and its image processor into one local folder with
``save_pretrained``; ``load_embedder`` loads that folder with ``AutoModel`` /
``AutoImageProcessor``. ``tiny`` is a small random ``ViTModel`` (the class of facebook/dino-vits16).
``classifier`` is no ViT: the penultimate layer (512-d) of the workflow's ResNet-18 trained on the
real training split (``results/classifier/model``), whose folder ``load_embedder`` reads directly:
features that carry the tissue's signal where no pretrained backbone can be downloaded (the demo).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_dir
from ..errors import InputError
from . import SOURCE_FILE

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
TIMM_PREFIX = "timm:"
CLASSIFIER = "classifier"  # embedding.backbone: the trained ResNet-18's penultimate layer


def prepare_embedder(name: str, out_dir: str | os.PathLike, image_size: int = 64) -> Path:
    """Save the backbone named in config as a local folder (atomically)."""
    out = Path(out_dir)
    if name == CLASSIFIER:
        raise InputError(
            f"backbone {CLASSIFIER!r} is the workflow's trained ResNet-18 (results/classifier/model), read as it "
            "is: it applies to embedding.backbone only, not to evaluation.backbone (use evaluation.feature_extractor: "
            "classifier there)"
        )
    with atomic_dir(out) as tmp:
        if name.startswith(TIMM_PREFIX):
            # timm keeps its own pretrained mechanism (hub or pretrained_cfg_overlay file); record the name only
            (tmp / "timm.json").write_text(json.dumps({"model_name": name[len(TIMM_PREFIX) :]}))
        else:
            import torch
            from transformers import AutoImageProcessor, AutoModel, ViTConfig, ViTImageProcessor, ViTModel

            if name == "tiny":
                torch.manual_seed(0)
                model = ViTModel(
                    ViTConfig(
                        hidden_size=64,
                        num_hidden_layers=2,
                        num_attention_heads=2,
                        intermediate_size=128,
                        image_size=image_size,
                        patch_size=8,
                    )
                )
                proc = ViTImageProcessor(
                    size={"height": image_size, "width": image_size}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
                )
            else:
                model, proc = AutoModel.from_pretrained(name), AutoImageProcessor.from_pretrained(name)
            model.save_pretrained(tmp, safe_serialization=True)
            proc.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({"backbone": name}))
    return out


@dataclass
class Embedder:
    model: object
    preprocess: Callable[[list[np.ndarray]], "torch.Tensor"]  # noqa: F821
    forward: Callable[["torch.Tensor"], "torch.Tensor"]  # noqa: F821
    meta: dict


def load_embedder(folder: str | os.PathLike, pooling: str, device: str) -> Embedder:
    import torch

    folder = Path(folder)
    from ..classifier import CONFIG_FILE

    if (folder / CONFIG_FILE).is_file():
        return _classifier_embedder(folder, device)
    source = json.loads((folder / SOURCE_FILE).read_text())["backbone"]
    if (folder / "timm.json").is_file():
        import timm

        name = json.loads((folder / "timm.json").read_text())["model_name"]
        model = timm.create_model(name, pretrained=True, num_classes=0).eval().to(device)
        cfg = timm.data.resolve_data_config({}, model=model)
        transform = timm.data.create_transform(**cfg)
        from PIL import Image

        def preprocess(imgs):
            return torch.stack([transform(Image.fromarray(im)) for im in imgs])

        def forward(x):
            tokens = model.forward_features(x)
            return tokens[:, 0] if pooling == "cls" else tokens[:, model.num_prefix_tokens :].mean(1)

        meta = {"backbone": source, "library": "timm", "preprocessing": json.dumps({k: str(v) for k, v in cfg.items()})}
        return Embedder(model, preprocess, forward, meta)

    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(folder).eval().to(device)
    proc = AutoImageProcessor.from_pretrained(folder)

    def preprocess(imgs):
        return proc(images=list(imgs), return_tensors="pt")["pixel_values"]

    def forward(x):
        hidden = model(pixel_values=x).last_hidden_state
        return hidden[:, 0] if pooling == "cls" else hidden[:, 1:].mean(1)

    meta = {
        "backbone": source,
        "library": "transformers",
        "model_class": type(model).__name__,
        "preprocessing": json.dumps(proc.to_dict(), default=str),
    }
    return Embedder(model, preprocess, forward, meta)


def _classifier_embedder(folder: Path, device: str) -> Embedder:
    """The penultimate (global-average-pooled, 512-d) layer of a ResNet-18 saved by ``train_classifier``."""
    import torch

    from ..classifier import load_classifier, to_tensor

    net, ccfg = load_classifier(folder, device)
    net.fc = torch.nn.Identity()
    size = ccfg["image_size"]

    def preprocess(imgs):
        return to_tensor(np.stack(list(imgs)), size)

    meta = {
        "backbone": CLASSIFIER,
        "library": "torchvision",
        "model_class": "resnet18 penultimate layer (512-d)",
        "trained_on": f"{folder} ({', '.join(ccfg['label_names'])})",
        "preprocessing": json.dumps({"image_size": size}),
    }
    return Embedder(net, preprocess, net, meta)
