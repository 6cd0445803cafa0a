"""``filter_synthetic``: the LoRA paper's quality loop, which its authors describe but never published.

Every synthetic image is classified by the ResNet-18 trained on real patches; it is accepted when
the predicted class equals its prompt's class (and, optionally, the probability of that class
reaches ``filter.min_confidence``). Rejected images are regenerated with the same prompt and new
seeds, for at most ``filter.max_rounds`` rounds, so the loop always terminates; classes that never
pass are reported, not hidden.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..classifier import load_classifier, predict_proba
from ..errors import InputError
from ..patchfile import PatchFile, PatchWriter
from .sample import class_grid, generate, load_pipeline, synthetic_spec, write_batches

log = logging.getLogger(__name__)
SEED_STRIDE = 1_000_003  # round r regenerates seed s as s + r * SEED_STRIDE


def accept(probs: np.ndarray, labels: np.ndarray, min_confidence: float) -> np.ndarray:
    return (probs.argmax(1) == labels) & (probs[np.arange(len(labels)), labels] >= min_confidence)


def filter_synthetic(raw_h5, classifier_dir, base_dir, model_dir, train_h5, out_h5, acceptance_tsv, plot_png, grid_png,
                     filter_cfg: dict, sample_cfg: dict, resolution: int, experiment: str) -> dict:
    net, ccfg = load_classifier(classifier_dir, sample_cfg["device"])
    size, device = ccfg["image_size"], ccfg["device"]
    with PatchFile(raw_h5) as raw:
        names = raw.label_names
        if ccfg["label_names"] != names:
            raise InputError(f"classifier {classifier_dir} knows classes {ccfg['label_names']}, the synthetic set {raw_h5} "
                             f"has {names}; rerun train_classifier")
        labels, prompts, seeds = raw.labels, raw.column("prompts"), raw.column("seeds")
        spec = synthetic_spec(train_h5, experiment, resolution, sample_cfg, model_dir)
        tried = {}  # round -> (indices tried, accepted mask)
        with PatchWriter(out_h5, spec) as w:

            def judge(rnd, idx, imgs, img_seeds):
                ok = accept(predict_proba(net, imgs, size, device), labels[idx], filter_cfg["min_confidence"])
                if ok.any():
                    write_batches(w, imgs[ok], labels[idx][ok], prompts[idx][ok], img_seeds[ok], rnd, experiment)
                prev_idx, prev_ok = tried.get(rnd, (np.zeros(0, int), np.zeros(0, bool)))
                tried[rnd] = (np.concatenate([prev_idx, idx]), np.concatenate([prev_ok, ok]))

            for idx, imgs in raw.iter_batches(sample_cfg["batch_size"] * 8):  # round 0: the raw set, streamed
                judge(0, idx, imgs, seeds[idx])
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
                    judge(rnd, idx, generate(pipe, list(prompts[idx]), list(new_seeds), sample_cfg, resolution), new_seeds)
    rows = []
    for rnd, (idx, ok) in sorted(tried.items()):
        for c, name in enumerate(names):
            sel = labels[idx] == c
            if sel.any():
                rows.append({"round": rnd, "label": c, "label_name": name, "tried": int(sel.sum()), "accepted": int(ok[sel].sum())})
    df = pd.DataFrame(rows)
    total = pd.Series(labels).value_counts().rename("requested")
    per_class = df.groupby(["label", "label_name"])["accepted"].sum().reset_index().merge(total, left_on="label", right_index=True)
    per_class["acceptance"] = per_class["accepted"] / per_class["requested"]
    never = per_class.loc[per_class["accepted"] == 0, "label_name"].tolist()
    if never:
        log.warning("filter: class(es) %s never passed the classifier in %d round(s)", never, filter_cfg["max_rounds"] + 1)
    first = df[df["round"] == 0].set_index("label")
    df["first_round_acceptance"] = df["label"].map(first["accepted"] / first["tried"])
    with atomic_path(acceptance_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    acceptance_plot(df, per_class, plot_png)
    class_grid(out_h5, grid_png)
    summary = {"requested": int(len(labels)), "accepted": int(per_class["accepted"].sum()), "rounds_run": int(df["round"].max()) + 1,
               "never_passed": never, "per_class": per_class.to_dict("records")}
    log.info("filter: %s", json.dumps({k: v for k, v in summary.items() if k != "per_class"}))
    return summary


def acceptance_plot(df: pd.DataFrame, per_class: pd.DataFrame, out_png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(per_class) + 2), 3.5))
    cum = df.pivot_table(index="label_name", columns="round", values="accepted", aggfunc="sum", fill_value=0).cumsum(axis=1)
    req = per_class.set_index("label_name")["requested"]
    frac = cum.div(req, axis=0)
    bottom = np.zeros(len(frac))
    prev = np.zeros(len(frac))
    for rnd in frac.columns:
        vals = frac[rnd].to_numpy()
        ax.bar(frac.index, vals - prev, bottom=bottom, label=f"round {rnd}")
        bottom = vals
        prev = vals
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accepted fraction (cumulative)")
    ax.set_title("classifier filter: acceptance per class and round")
    ax.legend(fontsize=7)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
