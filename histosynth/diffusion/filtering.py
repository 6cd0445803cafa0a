"""``filter_synthetic``: the LoRA paper's quality loop, which its authors describe but never published.

Every synthetic image is classified by the ResNet-18 trained on real patches; it is accepted when
the predicted class equals its prompt's class (and, optionally, the probability of that class
reaches ``filter.min_confidence``). Rejected images are regenerated with the same prompt and new
seeds, for at most ``filter.max_rounds`` rounds, so the loop always terminates; classes that never
pass are reported, not hidden.

Sharded like ``sample``: ``filter_shard`` filters one raw shard (its rejects regenerate from their
own seeds, so a shard does not depend on the others), ``gather_filtered`` joins the shards.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..classifier import field_mismatch, load_classifier, predict_proba
from ..errors import InputError
from ..patchfile import PatchFile, PatchWriter
from ..plots import acceptance_plot
from .sample import class_grid, gather_shards, generate, load_pipeline, synthetic_spec, write_batches

log = logging.getLogger(__name__)
SEED_STRIDE = 1_000_003  # round r regenerates seed s as s + r * SEED_STRIDE


def accept(probs: np.ndarray, labels: np.ndarray, min_confidence: float) -> np.ndarray:
    return (probs.argmax(1) == labels) & (probs[np.arange(len(labels)), labels] >= min_confidence)


def filter_shard(
    *,
    raw_h5,
    classifier_dir,
    base_dir,
    model_dir,
    train_h5,
    out_h5,
    filter_cfg: dict,
    classifier_cfg: dict,
    sample_cfg: dict,
    resolution: int,
    experiment: str,
    synthetic_field: int | None = None,
) -> pd.DataFrame:
    """Filter one (shard of a) raw set into ``out_h5``, rows ordered by round; return its tried/accepted
    counts per round and class (``round``, ``label``, ``label_name``, ``tried``, ``accepted``).

    ``filter_cfg`` is the ``filter:`` section; ``classifier_cfg`` needs ``device`` and ``batch_size`` (the
    classifier's own section: scoring runs where and in batches as the classifier is configured);
    ``sample_cfg`` (the experiment's ``sampling:`` settings) drives regeneration with the trained model
    in ``model_dir`` on ``base_dir``. Nothing is cached: every run starts from the raw set. The classifier
    scores at the field of view it was trained at (its ``field_px``); ``synthetic_field`` is the experiment's
    ``train.crop``, and a warning is logged where the two differ.
    """
    net, ccfg = load_classifier(classifier_dir, classifier_cfg["device"])
    size, device, field = ccfg["image_size"], ccfg["device"], ccfg["field_px"]
    mismatch = field_mismatch(field, synthetic_field, f"the filter's classifier {classifier_dir}")
    if mismatch:
        log.warning("filter of %s: %s", experiment, mismatch)
    with PatchFile(raw_h5) as raw:
        names = raw.label_names
        if ccfg["label_names"] != names:
            raise InputError(
                f"classifier {classifier_dir} knows classes {ccfg['label_names']}, the synthetic set {raw_h5} "
                f"has {names}; rerun train_classifier"
            )
        labels, prompts, seeds = raw.labels, raw.column("prompts"), raw.column("seeds")
        spec = synthetic_spec(train_h5, experiment, resolution, sample_cfg, model_dir)
        tried = {}  # round -> (indices tried, accepted mask)
        with PatchWriter(out_h5, spec) as w:

            def judge(rnd, idx, imgs, img_seeds):
                probs = predict_proba(net, imgs, size, device, field_px=field)
                ok = accept(probs, labels[idx], filter_cfg["min_confidence"])
                if ok.any():
                    write_batches(w, imgs[ok], labels[idx][ok], prompts[idx][ok], img_seeds[ok], rnd, experiment)
                prev_idx, prev_ok = tried.get(rnd, (np.zeros(0, int), np.zeros(0, bool)))
                tried[rnd] = (np.concatenate([prev_idx, idx]), np.concatenate([prev_ok, ok]))

            for idx, imgs in raw.iter_batches(classifier_cfg["batch_size"]):  # round 0: the raw set, streamed
                judge(0, idx, imgs, seeds[idx])
            tried.setdefault(0, (np.zeros(0, int), np.zeros(0, bool)))
            pipe = None
            for rnd in range(1, filter_cfg["max_rounds"] + 1):
                idx_prev, ok_prev = tried[rnd - 1]
                pending = idx_prev[~ok_prev]
                log.info("filter round %d: %d of %d accepted", rnd - 1, ok_prev.sum(), len(idx_prev))
                if len(pending) == 0:
                    break
                pipe = pipe or load_pipeline(base_dir, model_dir, sample_cfg["scheduler"], sample_cfg["device"])
                for s in range(0, len(pending), sample_cfg["batch_size"]):
                    idx = pending[s : s + sample_cfg["batch_size"]]
                    new_seeds = seeds[idx] + rnd * SEED_STRIDE
                    judge(
                        rnd, idx, generate(pipe, list(prompts[idx]), list(new_seeds), sample_cfg, resolution), new_seeds
                    )
    rows = []
    for rnd, (idx, ok) in sorted(tried.items()):
        for c, name in enumerate(names):
            sel = labels[idx] == c
            if sel.any():
                rows.append(
                    {
                        "round": rnd,
                        "label": c,
                        "label_name": name,
                        "tried": int(sel.sum()),
                        "accepted": int(ok[sel].sum()),
                    }
                )
    return pd.DataFrame(rows, columns=["round", "label", "label_name", "tried", "accepted"])


def gather_filtered(
    shard_h5s: list, tables: list[pd.DataFrame], out_h5, acceptance_tsv, plot_png, grid_png, filter_cfg: dict
) -> dict:
    """``filtered.h5`` from the filter shards, round by round and within a round shard by shard (the
    unsharded order), with the acceptance table, plot, grid and summary over all shards."""
    pieces = []
    for path in shard_h5s:
        with PatchFile(path) as pf:
            rounds = pf.column("round")
        pieces.append((path, rounds))
    order = [
        (path, np.flatnonzero(rounds == rnd))
        for rnd in sorted(set().union(*(set(r.tolist()) for _, r in pieces)))
        for path, rounds in pieces
    ]
    gather_shards(order or [(shard_h5s[0], np.zeros(0, np.int64))], out_h5)
    df = (
        pd.concat(tables, ignore_index=True)
        .groupby(["round", "label", "label_name"], as_index=False)[["tried", "accepted"]]
        .sum()
    )
    first = df[df["round"] == 0].set_index("label")
    total = first["tried"].rename("requested")  # every raw image is tried in round 0
    per_class = (
        df.groupby(["label", "label_name"])["accepted"]
        .sum()
        .reset_index()
        .merge(total, left_on="label", right_index=True)
    )
    per_class["acceptance"] = per_class["accepted"] / per_class["requested"]
    never = per_class.loc[per_class["accepted"] == 0, "label_name"].tolist()
    if never:
        log.warning(
            "filter: class(es) %s never passed the classifier in %d round(s)", never, filter_cfg["max_rounds"] + 1
        )
    df["first_round_acceptance"] = df["label"].map(first["accepted"] / first["tried"])
    with atomic_path(acceptance_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    acceptance_plot(df, per_class, plot_png)
    class_grid(out_h5, grid_png)
    summary = {
        "requested": int(total.sum()),
        "accepted": int(per_class["accepted"].sum()),
        "rounds_run": int(df["round"].max()) + 1,
        "never_passed": never,
        "per_class": per_class.to_dict("records"),
        "shards": len(shard_h5s),
    }
    log.info("filter: %s", json.dumps({k: v for k, v in summary.items() if k != "per_class"}))
    return summary


def filter_synthetic(
    *,
    raw_h5,
    classifier_dir,
    base_dir,
    model_dir,
    train_h5,
    out_h5,
    acceptance_tsv,
    plot_png,
    grid_png,
    filter_cfg: dict,
    classifier_cfg: dict,
    sample_cfg: dict,
    resolution: int,
    experiment: str,
    synthetic_field: int | None = None,
) -> dict:
    """The unsharded loop: one shard, gathered (arguments as ``filter_shard``; ``acceptance_tsv``,
    ``plot_png`` and ``grid_png`` as ``gather_filtered``). ``out_h5`` references ``<out_h5>.shard.h5`` beside it."""
    shard = Path(out_h5).with_suffix(".shard.h5")
    table = filter_shard(
        raw_h5=raw_h5,
        classifier_dir=classifier_dir,
        base_dir=base_dir,
        model_dir=model_dir,
        train_h5=train_h5,
        out_h5=shard,
        filter_cfg=filter_cfg,
        classifier_cfg=classifier_cfg,
        sample_cfg=sample_cfg,
        resolution=resolution,
        experiment=experiment,
        synthetic_field=synthetic_field,
    )
    return gather_filtered([shard], [table], out_h5, acceptance_tsv, plot_png, grid_png, filter_cfg)
