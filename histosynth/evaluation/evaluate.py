"""Per-experiment evaluation: one JSON per metric, with the settings and sets that produced it.

Every generative metric JSON records the extractor (and whether it is a random network), the
pixel size / µm/px of both sets before and after harmonisation, the class make-up and N of both
sides, and warnings naming why a number is not comparable with published ones.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from ..classifier import describe_field, field_mismatch, load_classifier, predict_file, train_classifier
from ..errors import InputError
from ..patchfile import PatchBatch, PatchFile, PatchFileSpec, PatchWriter
from ..plots import coverage_plot
from .features import FOV_TOLERANCE, RANDOM_NOTE, file_features, make_extractor, pixel_geometry, read_features
from .metric_files import (
    KEY_EXTRACTOR,
    KEY_FILTER_CLASSIFIER,
    KEY_JUDGE,
    KEY_METRIC,
    KEY_OVERALL,
    KEY_REFERENCE,
    KEY_RESULTS,
    KEY_SETS,
    KEY_TEST,
    KEY_WARNINGS,
    read_classifier_metrics,
    read_interval,
    with_interval,
    write_metrics,
)
from .metrics import (
    class_counts,
    classifier_agreement,
    frechet,
    kid,
    macro_over_present,
    match_classes,
    per_class,
    prdc,
)

log = logging.getLogger(__name__)
SETS = ("raw", "filtered")
PUBLISHED_FID_MIN_N = 5000  # papers report FID on thousands of images; fewer inflate it
# metric -> (display name, better direction)
GENERATIVE = {"fd": ("FD", "lower"), "kid": ("KID", "lower"), "prdc": ("PRDC", "higher")}


def comparability(metric: str, extractor: dict, n_real: int, n_fake: int) -> list[str]:
    """Why a number is not comparable with published ones (or not a measurement at all)."""
    w = []
    if extractor.get("random_network"):
        w.append(
            f"{RANDOM_NOTE}: {extractor['name']} is randomly initialised, so this number measures nothing about the images"
        )
    if metric in ("fd", "kid") and extractor["kind"] != "inception":
        w.append("not Inception features: not comparable with published FID")
    if metric in ("fd", "kid") and min(n_real, n_fake) < PUBLISHED_FID_MIN_N:
        w.append(
            f"N = {min(n_real, n_fake)} < {PUBLISHED_FID_MIN_N}: small N inflates FD and KID; compare only runs with equal N"
        )
    return w


def harmonisation(real_geo: dict, fake_geo: dict) -> tuple[dict, list[str]]:
    """What ``harmonise`` does to a synthetic set, and warnings where the two fields of view differ."""
    px, fpx = real_geo["px"], fake_geo["px"]
    fmpp = fake_geo["mpp"]
    after = fmpp * fpx / px if fmpp else None
    rec = {
        "real_px": px,
        "real_mpp": real_geo["mpp"],
        "synthetic_px": fpx,
        "synthetic_mpp": fmpp,
        "resized_to_px": px,
        "synthetic_mpp_after": after,
        "method": "PIL Lanczos (antialiased)" if fpx != px else "none",
    }
    if real_geo.get("crop"):  # the reference was cut to the synthetic field of view (features.reference_crop)
        rec["real_crop"] = real_geo["crop"]
    w = []
    if fpx < px:
        w.append(
            f"synthetic images have {fpx} px over the field of view of {px} real px: upsampled, so they lack fine detail"
        )
    if real_geo["mpp"] and after:
        fov_real, fov_fake = px * real_geo["mpp"], fpx * fmpp
        rec["field_of_view_um"] = {"real": fov_real, "synthetic": fov_fake}
        if abs(fov_fake - fov_real) > FOV_TOLERANCE * fov_real:
            w.append(f"fields of view differ: real {fov_real:.0f} µm, synthetic {fov_fake:.0f} µm")
    else:
        w.append("µm/px unknown for one side: the same field of view is assumed, not checked")
    if real_geo.get("mpp_range"):
        w.append(f"real patches mix µm/px {real_geo['mpp_range'][0]:.3g}–{real_geo['mpp_range'][1]:.3g}")
    return rec, w


def evaluate_generation(
    sets: dict, reference_h5, cfg: dict, model_dir, pooling: str, outputs: dict, experiment: str
) -> dict:
    """FD, KID and PRDC of each synthetic set against the real reference, overall and per class.

    ``sets``: {"raw": h5, "filtered": h5}; ``reference_h5``: the cached reference features of the
    same extractor; ``outputs``: {"fd", "kid", "prdc", "coverage"} paths.
    """
    rf, rl, rattrs = read_features(reference_h5)
    kind = str(rattrs["kind"])
    extract, info = make_extractor(kind, cfg, model_dir, pooling)
    names = [str(n) for n in rattrs["label_names"]]
    real_geo = rattrs["geometry"]
    fake, set_info = {}, {}
    for set_name, path in sets.items():
        geo = pixel_geometry(path)
        harm, warn = harmonisation(real_geo, geo)
        ff, fl = file_features(extract, path, limit=cfg["max_synthetic"], seed=cfg["seed"], size=real_geo["px"])
        ridx, fidx, match = match_classes(rl, fl, cfg["match_classes"], cfg["seed"])
        absent = [n for c, n in enumerate(names) if c in set(rl.tolist()) and c not in set(fl.tolist())]
        if absent:
            warn.append(f"no synthetic images of {', '.join(absent)}")
        if match["only_real"] and cfg["match_classes"] != "off":
            warn.append(
                "left out of the overall numbers (absent from the synthetic set): "
                + ", ".join(names[c] if c >= 0 else "unlabelled" for c in match["only_real"])
            )
        fake[set_name] = (ff, fl, ridx, fidx)
        set_info[set_name] = {
            "harmonisation": harm,
            "class_matching": match,
            KEY_WARNINGS: warn,
            "n_real": int(len(ridx)),
            "n_synthetic": int(len(fidx)),
            "n_synthetic_available": int(len(ff)),
            "classes_absent": absent,
            "class_counts_real": class_counts(rl[ridx], names),
            "class_counts_synthetic": class_counts(fl[fidx], names),
        }
    fns = {
        "fd": lambda r, f: frechet(r, f),
        "kid": lambda r, f: kid(r, f, cfg["seed"]),
        "prdc": lambda r, f: prdc(r, f, cfg["prdc_k"]),
    }
    results = {}
    for metric, fn in fns.items():
        name, direction = GENERATIVE[metric]
        if metric == "fd" and kind == "inception":
            name = "FID"
        doc = {
            KEY_METRIC: metric,
            "name": name,
            "better": direction,
            "experiment": experiment,
            KEY_EXTRACTOR: info,
            KEY_REFERENCE: {
                "split": str(rattrs["split"]),
                "n_available": int(rattrs["n_available"]),
                "n_extracted": int(len(rf)),
                "geometry": real_geo,
                "class_counts": class_counts(rl, names),
            },
            KEY_SETS: {},
        }
        if metric == "prdc":
            doc["k"] = cfg["prdc_k"]
        for set_name in sets:
            ff, fl, ridx, fidx = fake[set_name]
            s = dict(set_info[set_name])
            s[KEY_WARNINGS] = s[KEY_WARNINGS] + comparability(metric, info, len(ridx), len(fidx))
            s[KEY_OVERALL] = fn(rf[ridx], ff[fidx])
            s["per_class"] = {k: v for k, v in per_class(fn, rf, rl, ff, fl, names).items() if k != "overall"}
            doc[KEY_SETS][set_name] = s
        write_metrics(outputs[metric], doc)
        results[metric] = doc
    coverage_plot(
        rf,
        {s: fake[s][0] for s in sets},
        outputs["coverage"],
        experiment,
        note=RANDOM_NOTE if info.get("random_network") else None,
        umap=cfg.get("umap", False),
        seed=cfg["seed"],
    )
    log.info(
        "generation metrics of %s (%s): %s",
        experiment,
        info["name"],
        {m: {s: d[KEY_SETS][s][KEY_OVERALL] for s in sets} for m, d in results.items()},
    )
    return results


def judge_description(cfg: dict, classifier_seed: int) -> str:
    """One line for the agreement JSON and the report: who the judge is (``cfg``: the ``evaluation`` settings) and
    why it is independent of the filter's classifier (seeded with ``classifier_seed``)."""
    cases = "a seeded half of the training cases" if cfg["judge_cases"] == "half" else "all training cases"
    return (
        f"independent ResNet-18 judge: seed {cfg['judge_seed']} (the filter's classifier: seed {classifier_seed}), "
        f"trained on {cases}; it never saw which images the filter accepted"
    )


def train_judge(
    train_h5,
    val_h5,
    test_h5,
    out_dir,
    metrics_json,
    classifier_cfg: dict,
    cfg: dict,
    image_size: int,
    field_px: int | None = None,
) -> dict:
    """The independent classifier that judges the filtered set: another seed, optionally half the cases; at
    the synthetic field of view ``field_px`` like the filter's classifier (``train_classifier``)."""
    if cfg["judge_seed"] == classifier_cfg["seed"] and cfg["judge_cases"] == "all":
        raise InputError(
            f"evaluation.judge_seed ({cfg['judge_seed']}) equals classifier.seed with evaluation.judge_cases: all: "
            "the judge would be the filter's own classifier; choose another seed or judge_cases: half"
        )
    ccfg = {**classifier_cfg, "seed": cfg["judge_seed"]}
    with tempfile.TemporaryDirectory(prefix="histosynth-judge-") as tmp:
        train = (
            train_h5
            if cfg["judge_cases"] == "all"
            else case_half(train_h5, Path(tmp) / "train_half.h5", cfg["judge_seed"])
        )
        metrics = train_classifier(
            train, val_h5, test_h5, out_dir, metrics_json, ccfg, image_size, name="judge", field_px=field_px
        )
    return metrics


def case_half(patch_h5, out_h5, seed: int) -> Path:
    """A copy of a patch file with a seeded half of its cases (every class keeps some patches)."""
    with PatchFile(patch_h5) as pf:
        cases = np.unique(pf.case_ids.astype(str))
        chosen = set(np.random.default_rng(seed).permutation(cases)[: max(1, len(cases) // 2)].tolist())
        rows = np.flatnonzero(np.isin(pf.case_ids.astype(str), list(chosen)))
        lacking = sorted(set(pf.labels.tolist()) - set(pf.labels[rows].tolist()))
        if lacking:
            raise InputError(
                f"{patch_h5}: half of the {len(cases)} training cases (seed {seed}) has no patches of "
                f"{', '.join(pf.label_names[c] if c >= 0 else 'unlabelled' for c in lacking)}; set "
                "evaluation.judge_cases: all (with another judge_seed) or another evaluation.judge_seed"
            )
        spec = PatchFileSpec(pf.patch_size, pf.label_names, coords_attrs=pf.coords_attrs)
        with PatchWriter(out_h5, spec) as w:
            for idx, imgs in pf.iter_batches(256, rows):
                w.append(
                    PatchBatch(imgs, pf.coords[idx], pf.labels[idx], pf.slide_ids[idx], pf.case_ids[idx], pf.mpp[idx])
                )
    log.info("judge: %d of %d training cases, %d patches", len(chosen), len(cases), len(rows))
    return Path(out_h5)


def evaluate_agreement(
    sets: dict,
    filter_classifier_dir,
    judge_dir,
    judge_note: str,
    device: str,
    out_json,
    experiment: str,
    synthetic_field: int | None = None,
) -> dict:
    """Classifier agreement (the LoRA paper's P/R/F1 vs each image's prompt class).

    The independent judge scores both sets; the filter's own classifier scores the raw set only:
    on the set it accepted, its agreement is high by construction and is not a result. Each scores at
    the field of view it was trained at (its ``field_px``); ``synthetic_field`` is the experiment's
    ``train.crop``: where it differs, the JSON says the numbers are not like with like.
    """
    doc = {
        KEY_METRIC: "agreement",
        "experiment": experiment,
        "definition": "ResNet-18 predictions vs the prompt's class (LoRA paper); macro means over the classes the set contains",
        KEY_JUDGE: {"classifier": str(judge_dir), "description": judge_note, KEY_SETS: {}},
        KEY_FILTER_CLASSIFIER: {
            "classifier": str(filter_classifier_dir),
            KEY_SETS: {},
            "note": "the filter's own classifier, raw set only: on the filtered set it agrees by construction",
        },
        "synthetic_field_px": synthetic_field,
        KEY_WARNINGS: [],
    }
    for role, folder, names in (
        (KEY_JUDGE, judge_dir, list(sets)),
        (KEY_FILTER_CLASSIFIER, filter_classifier_dir, ["raw"]),
    ):
        net, ccfg = load_classifier(folder, device)
        doc[role]["field_px"] = ccfg["field_px"]
        mismatch = field_mismatch(ccfg["field_px"], synthetic_field, f"{role} {folder}")
        if mismatch:
            log.warning("agreement of %s: %s", experiment, mismatch)
            doc[KEY_WARNINGS].append(mismatch)
        for name in names:
            probs, labels = predict_file(net, sets[name], ccfg["image_size"], ccfg["device"], field_px=ccfg["field_px"])
            doc[role][KEY_SETS][name] = classifier_agreement(
                labels, probs.argmax(1) if len(probs) else labels, ccfg["label_names"]
            )
    write_metrics(out_json, doc)
    return doc


def evaluate_downstream(
    synthetic_h5,
    real: dict,
    cfg: dict,
    classifier_cfg: dict,
    image_size: int,
    real_metrics_json,
    models_dir,
    out_json,
    experiment: str,
    field_px: int | None = None,
    synthetic_field: int | None = None,
) -> dict:
    """Osorio et al.'s utility test: a classifier trained on synthetic only and on real + synthetic,
    tested on the real test split, next to the real-only classifier of ``train_classifier``.
    Writes both classifiers (and their metrics) under ``models_dir``.

    ``field_px`` is the classifiers' field of view (the global ``train.crop``, as the real-only one's):
    real tiles larger than it are cut to it (random windows in training, the centre for validation and
    test), so all three classifiers are tested on the same central field of the real test tiles.
    ``synthetic_field`` is the experiment's own ``train.crop``; where it differs, the JSON says so."""
    ccfg = {**classifier_cfg, "epochs": cfg["downstream_epochs"] or classifier_cfg["epochs"]}
    real_doc = read_classifier_metrics(real_metrics_json)
    names = real_doc["label_names"]
    doc = {
        KEY_METRIC: "downstream",
        "experiment": experiment,
        "test_split": str(real["test"]),
        "synthetic_set": cfg["downstream_set"],
        "classifier": "torchvision resnet18",
        "epochs": ccfg["epochs"],
        KEY_RESULTS: {"real_only": _brief(real_doc[KEY_TEST], names)},
        "field_px": field_px,
        "synthetic_field_px": synthetic_field,
    }
    with PatchFile(synthetic_h5) as pf:
        n_syn, present = len(pf), sorted(set(pf.labels.tolist()))
    lacking = [names[c] for c in range(len(names)) if c not in present]
    doc[KEY_WARNINGS] = (
        [
            f"the synthetic set has no images of {', '.join(lacking)}: a classifier trained on it alone cannot "
            "learn those classes, so its AUC is not meaningful"
        ]
        if lacking
        else []
    )
    # the real-only baseline is the filter's classifier: trained at the same field unless its metrics are stale
    real_field = real_doc.get("field_px")  # absent from metrics written before the key: whole patches
    problems = []
    if (real_field or None) != (field_px or None):
        problems.append(
            f"the real-only classifier ({real_metrics_json}) saw {describe_field(real_field)}, the downstream ones "
            f"{describe_field(field_px)}: rerun train_classifier before comparing them"
        )
    mismatch = field_mismatch(field_px, synthetic_field, "the downstream classifiers")
    if mismatch:
        problems.append(mismatch)
    for problem in problems:
        log.warning("downstream of %s: %s", experiment, problem)
    doc[KEY_WARNINGS] += problems
    doc["like_for_like"] = (
        "no: " + "; ".join(problems)
        if problems
        else f"yes: all three classifiers are trained on {describe_field(field_px)} and tested on "
        + (f"the central {field_px} px of the real test tiles (the synthetic field of view)" if field_px else "them")
    )
    absent = doc[KEY_RESULTS]["real_only"]["classes_absent_from_test"]
    if absent:
        doc[KEY_WARNINGS].append(
            f"the real test split has no patches of {', '.join(absent)}: macro F1 runs over the other classes"
        )
    runs = {"synthetic_only": [synthetic_h5], "real_plus_synthetic": [real["train"], synthetic_h5]}
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    for name, files in runs.items():
        if n_syn == 0:
            doc[KEY_RESULTS][name] = {"n_train": 0, "note": "the synthetic set is empty (every image was rejected)"}
            continue
        d = Path(models_dir) / name
        m = train_classifier(
            files,
            real["val"],
            real["test"],
            d / "model",
            d / "metrics.json",
            ccfg,
            image_size,
            name=f"downstream {experiment} ({name.replace('_', ' ')})",
            field_px=field_px,
        )
        doc[KEY_RESULTS][name] = {**_brief(m[KEY_TEST], names), "n_train": m["n_train"]}
    write_metrics(out_json, doc)
    log.info("downstream %s: %s", experiment, {k: v.get("macro_auc") for k, v in doc[KEY_RESULTS].items()})
    return doc


def _brief(test: dict, names: list[str]) -> dict:
    brief = {**{k: test.get(k) for k in ("n", "accuracy", "macro_auc")}, **macro_over_present(test, names)}
    for key in ("macro_auc", "macro_f1"):  # their intervals, where the classifier's metrics.json has them
        brief.update(with_interval(key, brief[key], read_interval(test, key)))
    return brief
