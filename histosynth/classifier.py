"""``train_classifier``: torchvision ResNet-18 on the real train split (the LoRA paper's filter).

ImageNet weights come from a local file when ``classifier.weights`` names one (torchvision's
``resnet18-f37072fd.pth`` or a safetensors copy), otherwise the network starts from random init.
Model selection keeps the epoch with the best validation macro AUC, as the paper does; among epochs
tied on it (a small validation split reaches AUC 1.0 within epochs) the one with the best validation
macro F1 of its argmax decisions, which is what the filter acts on, then the later one. AUC alone kept
the first epoch at 1.0 in the demo, whose 0.5 threshold still called 80 % of the DAB-negative test
patches positive. Test metrics (accuracy, macro AUC, macro F1, per-class report) come from scikit-learn.

Field of view (``field_px``, the workflow's ``train.crop``): synthetic images of PathLDM's preset cover
256 px of the 448 px real tiles at the same µm/px. With ``field_px`` set, every image larger than the
field (beyond ``FOV_TOLERANCE``; in practice the real tiles) is cut to ``field_px`` before the resize:
a random window per image and epoch in training, the central window when validating, testing and
predicting. Images at the field (the synthetic ones) pass whole. ``classifier.json`` records the
field, so whoever loads the model crops as training did.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from .progress import progress_bar

from .atomic import atomic_dir
from .device import pick_device
from .errors import InputError
from .evaluation.features import centre_crop, field_crop, random_crop
from .evaluation.metric_files import KEY_TEST, with_interval, write_classifier_metrics
from .evaluation.metrics import BOOTSTRAP_METHOD, bootstrap_interval
from .patchfile import PatchFile

log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "classifier.json"
# the training crops draw from their own seeded stream, so the order and flips stay those of an uncropped run
CROP_STREAM = 1


def build_resnet18(n_classes: int, weights: str = ""):
    import torch
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    if weights:
        p = Path(weights)
        if not p.is_file():
            raise InputError(f"classifier.weights {p} does not exist")
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(p)
        else:
            state = torch.load(p, weights_only=True, map_location="cpu")
        net.load_state_dict(state)
    net.fc = torch.nn.Linear(net.fc.in_features, n_classes)
    return net


def to_tensor(imgs: np.ndarray, size: int):
    """uint8 (B,S,S,3) -> normalised float (B,3,size,size)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def fit_field(imgs: np.ndarray, field_px: int | None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Images larger than the field cut to ``field_px`` (``field_crop``): a random window per image with ``rng``
    (training), else the centre; images at the field, or without one, are returned as they are."""
    crop = field_crop(imgs.shape[1], field_px)
    if crop is None:
        return imgs
    return centre_crop(imgs, crop) if rng is None else random_crop(imgs, crop, rng)


def field_description(field_px: int | None, sizes: dict, image_size: int) -> str:
    """One sentence for the metrics JSON: what the classifier saw of each patch file (``sizes``: file -> px)."""
    if not field_px:
        return f"whole patches, resized to {image_size} px (no field of view set)"
    cut = {f: px for f, px in sizes.items() if field_crop(px, field_px)}
    whole = [f for f in sizes if f not in cut]
    parts = [
        f"{f}: {px} px patches cut to {field_px} px (a random window per epoch in training, the centre in "
        "validation and test: the synthetic field of view, same µm/px)"
        for f, px in cut.items()
    ] + [f"{f}: whole {sizes[f]} px images (at the {field_px} px field already)" for f in whole]
    return "; ".join(parts) + f"; then resized to {image_size} px"


def describe_field(px: int | None) -> str:
    return f"{px} px fields of view" if px else "whole patches"


def field_mismatch(classifier_field: int | None, synthetic_field: int | None, classifier: str) -> str | None:
    """Why a classifier shared by every experiment (trained at the global ``train.crop``) does not see an
    experiment's synthetic images at its own field of view; None when the two agree."""
    if (classifier_field or None) == (synthetic_field or None):
        return None
    return (
        f"{classifier} was trained on {describe_field(classifier_field)} (the global train.crop) but this "
        f"experiment's synthetic images cover {describe_field(synthetic_field)} (its own train.crop): its numbers do not compare like "
        "with like; larger images are centre-cropped to the classifier's field, smaller ones only resized"
    )


def predict_proba(
    net, imgs: np.ndarray, size: int, device: str, batch: int = 128, field_px: int | None = None
) -> np.ndarray:
    """Class probabilities; images larger than ``field_px`` are centre-cropped to it first (``fit_field``)."""
    import torch

    net.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(imgs), batch):
            x = to_tensor(fit_field(imgs[s : s + batch], field_px), size)
            out.append(torch.softmax(net(x.to(device)), dim=1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.fc.out_features), np.float32)


def predict_file(
    net, patch_h5, size: int, device: str, batch: int = 128, field_px: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities for every patch of a file (streamed; centre-cropped to ``field_px``) and its labels."""
    probs = []
    with PatchFile(patch_h5) as pf:
        labels = pf.labels
        for _, imgs in pf.iter_batches(batch):
            probs.append(predict_proba(net, imgs, size, device, batch, field_px))
    return (np.concatenate(probs) if probs else np.zeros((0, net.fc.out_features), np.float32)), labels


def macro_auc(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> float:
    """One-vs-rest macro AUC over the classes present (sklearn); NaN when fewer than two are."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    p = probs[:, present]
    p = p / p.sum(axis=1, keepdims=True)
    if len(present) == 2:
        return float(roc_auc_score(labels == present[1], p[:, 1]))
    return float(roc_auc_score(labels, p, multi_class="ovr", average="macro", labels=present))


def macro_f1(labels: np.ndarray, pred: np.ndarray) -> float:
    """Macro F1 over the classes present in ``labels`` (sklearn would count an absent class as 0)."""
    from sklearn.metrics import f1_score

    return float(
        f1_score(labels, pred, labels=sorted(set(np.asarray(labels).tolist())), average="macro", zero_division=0)
    )


def evaluate(labels, probs, label_names) -> dict:
    from sklearn.metrics import accuracy_score, classification_report

    pred = probs.argmax(1)
    idx = list(range(len(label_names)))
    # macro F1 over the classes the split contains: sklearn would count an absent class as F1 = 0
    present = sorted(set(np.asarray(labels).tolist()))
    absent = [label_names[c] for c in idx if c not in present]

    def auc(y, p):
        return macro_auc(y, p, len(label_names))

    def f1(y, pr):  # the bootstrap's resamples are class-stratified: the same classes are present
        return macro_f1(y, pr)

    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, pred)) if len(labels) else float("nan"),
        # each with its bootstrap interval over the test patches: a difference inside it is noise
        **with_interval("macro_auc", auc(labels, probs), bootstrap_interval(auc, labels, probs)),
        **with_interval(
            "macro_f1",
            f1(labels, pred) if len(labels) else float("nan"),
            bootstrap_interval(f1, labels, pred),
        ),
        "interval_method": BOOTSTRAP_METHOD,
        "macro_over": f"{len(present)} of {len(label_names)} classes",
        "classes_absent": absent,
        "warnings": [
            f"no patches of {', '.join(absent)} in this split: macro F1 and AUC run over the other "
            f"{len(present)} class(es), not counting the absent ones as 0"
        ]
        if absent
        else [],
        "per_class": classification_report(
            labels, pred, labels=idx, target_names=label_names, output_dict=True, zero_division=0
        )
        if len(labels)
        else {},
    }


def train_classifier(
    train_h5,
    val_h5,
    test_h5,
    out_dir,
    metrics_json,
    cfg: dict,
    image_size: int,
    progress: bool = True,
    name: str = "classifier",
    field_px: int | None = None,
) -> dict:
    """Train on one patch file or several (e.g. real + synthetic); select on ``val_h5``; test on ``test_h5``.

    ``cfg`` is the ``classifier:`` section, ``image_size`` the input size, ``field_px`` the field of view
    (``train.crop``; None: whole patches) larger patches are cut to (``fit_field``). Writes the best model to
    ``out_dir`` (safetensors + config, read by :func:`load_classifier`) and the metrics to
    ``metrics_json``; returns the metrics. ``name`` heads its progress lines (the judge's and the
    downstream ones run beside the filter's). Nothing is cached between runs.
    """
    import torch

    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    crop_rng = np.random.default_rng([cfg["seed"], CROP_STREAM]) if field_px else None  # fresh windows every epoch
    device = pick_device(cfg["device"])
    train_files = [train_h5] if isinstance(train_h5, (str, os.PathLike)) else list(train_h5)
    sources = [PatchFile(p) for p in train_files]
    try:
        names = sources[0].label_names
        for pf in sources[1:]:
            if pf.label_names != names:
                raise InputError(f"{pf.path} has classes {pf.label_names}, {sources[0].path} has {names}")
        rows = np.concatenate([np.stack([np.full(len(pf), i), np.arange(len(pf))], 1) for i, pf in enumerate(sources)])
        labels = np.concatenate([pf.labels for pf in sources])
        n = len(rows)
        sizes = {str(p): pf.patch_size for p, pf in zip(train_files, sources)}
        if n == 0:
            raise InputError(f"{', '.join(map(str, train_files))}: no training patches; cannot train the classifier")
        if (labels < 0).any():
            raise InputError(f"{(labels < 0).sum()} unlabelled training patches; the classifier needs labels")
        missing = [names[c] for c in range(len(names)) if not (labels == c).any()]
        if missing:
            log.warning("classifier: no training patches for class(es) %s; it can never predict them", missing)
        net = build_resnet18(len(names), cfg["weights"]).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=cfg["learning_rate"])
        loss_fn = torch.nn.CrossEntropyLoss()
        best, best_score, history = None, (-np.inf, -np.inf), []
        t0 = time.perf_counter()
        for epoch in range(1, cfg["epochs"] + 1):
            net.train()
            order = rng.permutation(n)
            total = 0.0
            for s in progress_bar(
                range(0, n, cfg["batch_size"]), desc=f"{name} epoch {epoch}", disable=not progress, mininterval=2
            ):
                batch = order[s : s + cfg["batch_size"]]
                parts = []
                for i, pf in enumerate(sources):  # read each file's rows together, resize to one size
                    sel = batch[rows[batch, 0] == i]
                    if len(sel):
                        parts.append((sel, to_tensor(fit_field(pf.read(rows[sel, 1]), field_px, crop_rng), image_size)))
                x = torch.cat([t for _, t in parts])
                y = torch.from_numpy(np.concatenate([labels[sel] for sel, _ in parts]))
                flip = torch.from_numpy(rng.random(len(x)) < 0.5)
                x[flip] = x[flip].flip(-1)  # horizontal flips
                opt.zero_grad()
                loss = loss_fn(net(x.to(device)), y.to(device))
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
            vprobs, vlabels = predict_file(net, val_h5, image_size, device, field_px=field_px)
            vauc = macro_auc(vlabels, vprobs, len(names))
            vf1 = macro_f1(vlabels, vprobs.argmax(1)) if len(vlabels) else float("nan")
            # best validation AUC (the paper), ties broken by macro F1, then by the later epoch (>=);
            # no usable validation: the lowest training loss
            score = (vauc, vf1 if np.isfinite(vf1) else 0.0) if np.isfinite(vauc) else (-np.inf, -total)
            history.append({"epoch": epoch, "train_loss": total / n, "val_macro_auc": vauc, "val_macro_f1": vf1})
            log.info(
                "classifier epoch %d: train loss %.4f, val macro AUC %.4f, val macro F1 %.4f",
                epoch,
                total / n,
                vauc,
                vf1,
            )
            if score >= best_score:
                best_score, best_epoch = score, epoch
                best = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    finally:
        for pf in sources:
            pf.close()
    net.load_state_dict(best)
    seconds = time.perf_counter() - t0
    tprobs, tlabels = predict_file(net, test_h5, image_size, device, field_px=field_px)
    for p in (val_h5, test_h5):
        with PatchFile(p) as pf:
            sizes.setdefault(str(p), pf.patch_size)
    metrics = {
        KEY_TEST: evaluate(tlabels, tprobs, names),
        "history": history,
        "best_epoch": best_epoch,
        "image_size": image_size,
        "field_px": field_px,
        "crop": field_description(field_px, sizes, image_size),
        "weights": cfg["weights"] or "random init",
        "seconds": seconds,
        "device": device,
        "label_names": names,
        "train_files": [str(p) for p in train_files],
        "n_train": int(n),
        "test_file": str(test_h5),
    }
    save_classifier(net, out_dir, names, image_size, field_px)
    write_classifier_metrics(metrics_json, metrics)
    log.info(
        "classifier: test accuracy %.4f, macro AUC %.4f (best epoch %d) in %.1f s",
        metrics["test"]["accuracy"],
        metrics["test"]["macro_auc"],
        best_epoch,
        seconds,
    )
    return metrics


def save_classifier(net, out_dir, names, image_size: int, field_px: int | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_dir(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp / MODEL_FILE)
        (tmp / CONFIG_FILE).write_text(
            json.dumps(
                {
                    "architecture": "torchvision.resnet18",
                    "label_names": names,
                    "image_size": image_size,
                    # the field of view (px) larger inputs are centre-cropped to before the resize; None: whole
                    "field_px": field_px,
                    "mean": IMAGENET_MEAN,
                    "std": IMAGENET_STD,
                }
            )
        )


def load_classifier(folder, device: str = "auto"):
    """(network, config) from a folder written by ``train_classifier`` (safetensors, no pickle). The config's
    ``field_px`` is what ``predict_proba`` / ``predict_file`` crop larger images to (None, also for a model
    saved before the key existed: whole images)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    net = build_resnet18(len(cfg["label_names"]))
    net.load_state_dict(load_file(folder / MODEL_FILE))
    device = pick_device(device)
    return net.to(device).eval(), {"field_px": None, **cfg, "device": device}
