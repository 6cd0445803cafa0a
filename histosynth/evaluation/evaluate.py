"""Per-experiment evaluation: one JSON per metric, with the settings that produced it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..classifier import load_classifier, predict_file, train_classifier
from ..patchfile import PatchFile
from .features import file_features, make_extractor, read_features
from .metrics import classifier_agreement, frechet, kid, per_class, prdc

log = logging.getLogger(__name__)
SETS = ("raw", "filtered")
PUBLISHED_FID_MIN_N = 5000  # papers report FID on thousands of images; fewer inflate it


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=lambda v: float(v) if np.isscalar(v) else str(v)))


def comparability(kind: str, n_real: int, n_fake: int, res_real, res_fake) -> list[str]:
    """Why a number is not comparable with published ones."""
    w = []
    if kind != "inception":
        w.append("not Inception features: not comparable with published FID")
    if min(n_real, n_fake) < PUBLISHED_FID_MIN_N:
        w.append(f"N = {min(n_real, n_fake)} < {PUBLISHED_FID_MIN_N}: small N inflates FID; compare only runs with equal N")
    if res_real != res_fake:
        w.append(f"real {res_real} px vs synthetic {res_fake} px")
    return w


def evaluate_generation(sets: dict, references: dict, cfg: dict, embedder_dir, pooling: str, outputs: dict, experiment: str) -> dict:
    """FID (configured extractor), FD on the embedding backbone, KID and PRDC on the FID features.

    ``sets``: {"raw": h5, "filtered": h5}; ``references``: {kind: reference-features h5}.
    """
    kind = cfg["fid_extractor"]
    ref = {k: read_features(p) for k, p in references.items()}
    extractors = {k: make_extractor(k, cfg, embedder_dir, pooling) for k in {kind, "embedding"}}
    names = list(ref[kind][2]["label_names"])
    fake = {}
    for set_name, path in sets.items():
        with PatchFile(path) as pf:
            size = pf.patch_size
        for k, (extract, _) in extractors.items():
            fake[set_name, k] = (*file_features(extract, path, limit=cfg["max_synthetic"], seed=cfg["seed"]), size)
    results = {}
    specs = {
        "fid": (kind, lambda r, f: frechet(r, f)),
        "fd_embedding": ("embedding", lambda r, f: frechet(r, f)),
        "kid": (kind, lambda r, f: kid(r, f, cfg["seed"])),
        "prdc": (kind, lambda r, f: prdc(r, f, cfg["prdc_k"])),
    }
    for metric, (k, fn) in specs.items():
        rf, rl, rattrs = ref[k]
        doc = {"metric": metric, "experiment": experiment, "extractor": extractors[k][1], "feature_kind": k,
               "reference_split": rattrs["split"], "n_real": int(len(rf)), "resolution_real": int(rattrs["resolution"]), "sets": {}}
        for set_name in sets:
            ff, fl, size = fake[set_name, k]
            doc["sets"][set_name] = {"n": int(len(ff)), "resolution": int(size), **per_class(fn, rf, rl, ff, fl, names)}
            doc["sets"][set_name]["warnings"] = comparability(k, len(rf), len(ff), int(rattrs["resolution"]), int(size)) \
                if metric in ("fid", "fd_embedding", "kid") else []
        write_json(outputs[metric], doc)
        results[metric] = doc
    coverage_plot(ref["embedding"], {s: fake[s, "embedding"] for s in sets}, outputs["coverage"], experiment)
    log.info("generation metrics of %s: %s", experiment, {m: {s: d["sets"][s]["overall"] for s in sets} for m, d in results.items()})
    return results


def coverage_plot(real, fakes: dict, out_png, experiment: str) -> None:
    """PCA of real vs synthetic embeddings (Osorio et al., Fig. 3-4): where the synthetic set covers the real one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    rf = real[0]
    fig, axes = plt.subplots(1, len(fakes), figsize=(4.2 * len(fakes), 4), squeeze=False)
    pca = PCA(n_components=2, random_state=0).fit(rf) if len(rf) >= 2 else None
    for ax, (name, (ff, _, _)) in zip(axes[0], fakes.items()):
        if pca is not None:
            r2 = pca.transform(rf)
            ax.scatter(r2[:, 0], r2[:, 1], s=6, alpha=0.5, label=f"real ({len(rf)})", color="tab:blue")
            if len(ff):
                f2 = pca.transform(ff)
                ax.scatter(f2[:, 0], f2[:, 1], s=6, alpha=0.5, label=f"synthetic {name} ({len(ff)})", color="tab:red")
        ax.set_title(f"{experiment}: {name}")
        ax.set_xlabel("PC 1 (fitted on real)")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def evaluate_agreement(sets: dict, classifier_dir, device: str, out_json, experiment: str) -> dict:
    net, ccfg = load_classifier(classifier_dir, device)
    doc = {"metric": "classifier_agreement", "experiment": experiment, "classifier": str(classifier_dir),
           "definition": "ResNet-18 predictions vs the prompt's class (LoRA paper); macro means of per-class values", "sets": {}}
    for name, path in sets.items():
        probs, labels = predict_file(net, path, ccfg["image_size"], ccfg["device"])
        doc["sets"][name] = classifier_agreement(labels, probs.argmax(1) if len(probs) else labels, ccfg["label_names"])
    write_json(out_json, doc)
    return doc


def evaluate_downstream(synthetic_h5, real: dict, cfg: dict, classifier_cfg: dict, image_size: int, real_metrics_json,
                        workdir, out_json, experiment: str) -> dict:
    """Osorio et al.'s utility test: a classifier trained on synthetic only and on real + synthetic,
    tested on the real test split, next to the real-only classifier of ``train_classifier``."""
    ccfg = {**classifier_cfg, "epochs": cfg["downstream_epochs"] or classifier_cfg["epochs"]}
    real_only = json.loads(Path(real_metrics_json).read_text())["test"]
    doc = {"metric": "downstream", "experiment": experiment, "test_split": str(real["test"]), "synthetic_set": cfg["downstream_set"],
           "classifier": "torchvision resnet18", "epochs": ccfg["epochs"], "results": {"real_only": _brief(real_only)}}
    with PatchFile(synthetic_h5) as pf:
        n_syn, present, names = len(pf), sorted(set(pf.labels.tolist())), pf.label_names
    lacking = [names[c] for c in range(len(names)) if c not in present]
    doc["warnings"] = [f"the synthetic set has no images of {', '.join(lacking)}: a classifier trained on it alone cannot "
                       "learn those classes, so its AUC is not meaningful"] if lacking else []
    runs = {"synthetic_only": [synthetic_h5], "real_plus_synthetic": [real["train"], synthetic_h5]}
    for name, files in runs.items():
        if n_syn == 0:
            doc["results"][name] = {"n_train": 0, "note": "the synthetic set is empty (every image was rejected)"}
            continue
        d = Path(workdir) / name
        m = train_classifier(files, real["val"], real["test"], d / "model", d / "metrics.json", ccfg, image_size, progress=False)
        doc["results"][name] = {**_brief(m["test"]), "n_train": m["n_train"]}
    write_json(out_json, doc)
    log.info("downstream %s: %s", experiment, {k: v.get("macro_auc") for k, v in doc["results"].items()})
    return doc


def _brief(test: dict) -> dict:
    return {k: test.get(k) for k in ("n", "accuracy", "macro_auc", "macro_f1")}
