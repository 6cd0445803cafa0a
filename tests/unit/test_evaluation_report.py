import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histosynth.config import default_config
from histosynth.errors import InputError
from histosynth.evaluation.features import inception_extractor
from histosynth.evaluation.report import build_report


EVIL = "<script>alert('x')</script>"
LONG_PROMPT = (
    "Histology image of DAB-positive tissue, morphology type three, with a long tail that a grid caption "
    "would cut off: glands, stroma and lymphocytes"
)


def _extract(imgs):
    x = imgs.astype(np.float32) / 255
    return np.concatenate([x.mean((1, 2)), x.std((1, 2))], axis=1)


def _patches(path, labels, prompts=None, size=16, shift=0):
    from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter

    n = len(labels)
    rng = np.random.default_rng(len(labels) + shift)
    imgs = np.clip(
        rng.normal(120 + 40 * np.asarray(labels)[:, None, None, None] + shift, 20, (n, size, size, 3)), 0, 255
    )
    extra = {"prompts": "str"} if prompts is not None else {}
    with PatchWriter(path, PatchFileSpec(size, ["neg", "pos"], coords_attrs={"mpp": 1.0}, extra=extra)) as w:
        w.append(
            PatchBatch(
                imgs.astype(np.uint8),
                np.full((n, 2), -1),
                np.asarray(labels),
                ["s"] * n,
                [f"c{i}" for i in range(n)],
                np.full(n, 1.0, np.float32),
                extra={"prompts": list(prompts)} if prompts is not None else {},
            )
        )
    return str(path)


def _agreement(f1_raw, f1_filtered, absent=()):
    def one(f1):
        return {
            "macro_f1": f1,
            "macro_over": f"{2 - len(absent)} of 2 classes",
            "classes_absent": list(absent),
            "per_class": {"neg": {"f1": f1}, "pos": {"f1": f1}},
        }

    return {
        "metric": "agreement",
        "judge": {
            "description": "independent ResNet-18 judge: seed 1",
            "sets": {"raw": one(f1_raw), "filtered": one(f1_filtered)},
        },
        "filter_classifier": {"sets": {"raw": one(f1_raw + 0.1)}},
    }


@pytest.fixture()
def report_inputs(tmp_path, monkeypatch):
    """Every input the report rule declares, for two experiments; ``morphology`` lacks synthetic ``pos``
    images after filtering and its synthetic-only AUC is below chance."""
    import json

    from PIL import Image

    from histosynth.evaluation import evaluate, features

    info = {"kind": "backbone", "name": "tiny (cls token)", "random_network": True}
    monkeypatch.setattr(features, "make_extractor", lambda *a, **k: (_extract, info))
    monkeypatch.setattr(evaluate, "make_extractor", lambda *a, **k: (_extract, info))
    cfg = default_config(
        experiments={"label_only": {"prompts": "label"}, "morphology": {"prompts": "morphology"}}, base_model=EVIL
    )
    ev = {**cfg["evaluation"], "device": "cpu"}
    real = _patches(tmp_path / "test.h5", [0] * 10 + [1] * 10)
    features.reference_features(real, tmp_path / "ref.h5", "backbone", ev, None, "cls", "test")
    png = tmp_path / "pic.png"
    Image.new("RGB", (40, 20), (200, 100, 100)).save(png)
    inputs = {
        k: []
        for k in (
            "fd",
            "kid",
            "prdc",
            "agreement",
            "downstream",
            "coverage",
            "raw",
            "filtered",
            "raw_grid",
            "filtered_grid",
            "acceptance",
            "acceptance_plot",
            "filter_summary",
            "loss_curve",
            "validation",
            "prompt_frequencies",
        )
    }
    for i, (exp, filtered_labels, auc) in enumerate(
        [("label_only", [0] * 6 + [1] * 6, 0.9), ("morphology", [0] * 6, 0.3)]
    ):
        d = tmp_path / exp
        d.mkdir()
        raw = _patches(
            d / "raw.h5", [0] * 6 + [1] * 6, [LONG_PROMPT + f" {j} {EVIL}" for j in range(12)], 32, shift=10 * i
        )
        filtered = _patches(d / "filtered.h5", filtered_labels, ["p"] * len(filtered_labels), 32, shift=10 * i)
        outs = {m: d / f"{m}.json" for m in ("fd", "kid", "prdc")} | {"coverage": d / "coverage.png"}
        evaluate.evaluate_generation(
            {"raw": raw, "filtered": filtered}, tmp_path / "ref.h5", ev, None, "cls", outs, exp
        )
        (d / "agreement.json").write_text(json.dumps(_agreement(0.5 + 0.1 * i, 0.6 + 0.1 * i)))
        (d / "downstream.json").write_text(
            json.dumps(
                {
                    "metric": "downstream",
                    "synthetic_set": "filtered",
                    "warnings": [],
                    "results": {
                        "real_only": {"macro_auc": 0.8},
                        "synthetic_only": {"macro_auc": auc},
                        "real_plus_synthetic": {"macro_auc": 0.82 + 0.02 * i},
                    },
                }
            )
        )
        (d / "validation").mkdir()
        Image.new("RGB", (40, 20)).save(d / "validation" / "step-000006.png")
        pd.DataFrame({"prompt": [LONG_PROMPT], "label_name": ["pos"], "count": [3]}).to_csv(
            d / "freq.tsv", sep="\t", index=False
        )
        pd.DataFrame({"round": [0], "class": ["pos"], "accepted": [1]}).to_csv(
            d / "acceptance.tsv", sep="\t", index=False
        )
        (d / "filter_summary.json").write_text(json.dumps({"never_passed": ["pos"] if exp == "morphology" else []}))
        for k, v in {
            **{m: str(d / f"{m}.json") for m in ("fd", "kid", "prdc", "agreement", "downstream")},
            "coverage": str(png),
            "raw": raw,
            "filtered": filtered,
            "raw_grid": str(png),
            "filtered_grid": str(png),
            "acceptance": str(d / "acceptance.tsv"),
            "acceptance_plot": str(png),
            "filter_summary": str(d / "filter_summary.json"),
            "loss_curve": str(png),
            "validation": str(d / "validation"),
            "prompt_frequencies": str(d / "freq.tsv"),
        }.items():
            inputs[k].append(v)
    (tmp_path / "classifier.json").write_text(
        json.dumps(
            {
                "test": {
                    "n": 20,
                    "accuracy": 0.9,
                    "macro_auc": 0.8,
                    "per_class": {"neg": {"f1-score": 0.9, "support": 20}, "pos": {"f1-score": 0.0, "support": 0}},
                },
                "weights": "random init",
                "label_names": ["neg", "pos"],
                "n_train": 40,
            }
        )
    )
    thumbs = [tmp_path / f"slide{i}.thumbnail.png" for i in range(5)]
    for t in thumbs:
        Image.new("RGB", (40, 20)).save(t)
    summaries = tmp_path / "summaries.tsv"
    pd.DataFrame({"case_id": [EVIL], "summary": [EVIL]}).to_csv(summaries, sep="\t", index=False)
    inputs |= {
        "classifier": str(tmp_path / "classifier.json"),
        "judge": str(tmp_path / "classifier.json"),
        "real": real,
        "split_examples": str(png),
        "split_summary": [],
        "thumbnails": [str(t) for t in thumbs],
        "summaries": [str(summaries)],
        "morphology": [str(png), str(png)],
    }
    return inputs, cfg


def test_report_leads_with_the_answer_and_flags_numbers_in_place(report_inputs, tmp_path):
    inputs, cfg = report_inputs
    out = tmp_path / "out"
    build_report(inputs, cfg, out / "index.html", out / "metrics.tsv", out / "verdicts.tsv")
    html = (out / "index.html").read_text()
    # the verdicts come first, one per comparison, with numbers
    assert html.index('id="answer"') < html.index('id="metrics"') < html.index('id="images"')
    for comparison in (
        "Prompts: label_only (label), morphology (morphology)",
        "Raw vs filtered",
        "Real only vs real + synthetic",
    ):
        assert comparison in html
    assert "adding synthetic images raised the macro AUC in 2 of 2 experiments; most with morphology (+0.040)" in html
    # one column per metric, with its direction; the FD appears once
    head = html[html.index('id="metrics"') : html.index("</tr>", html.index('id="metrics"'))]
    # each head: the name with its arrow on one unbreakable line, the qualifier under it
    for name, sub in (("FD ↓", "(backbone)"), ("AUC ↑", "real + synthetic"), ("density", "(≈ 1)")):
        assert f'<span class="h">{name}</span><span class="sub">{sub}</span>' in head
    assert head.count("FD ↓") == 1 and '<span class="h">KID ↓</span></th>' in head
    assert re.search(r"th \.h\{white-space:nowrap\}", html)
    assert "FD-embedding" not in html and "not FID)" not in html
    assert html.count('<span class="star"') >= 5
    # implausible numbers are flagged where they stand, and the random network on every such number
    assert "⚠ below chance" in html and "⚠ no synthetic pos" in html
    # metric files from before intervals: rendered, each AUC / F1 saying it has none
    assert '<span class="ci">no interval</span>' in html and "macro AUC 0.800 no interval" in html
    assert "two numbers differ only when their 95 % intervals do not overlap" in html
    assert html.count('<span class="rnd">random network: mechanics only</span>') >= 4 * 6
    # every warning names its experiment and set
    assert "morphology / filtered:</span> classes that never passed the filter: pos" in html
    assert "label_only / raw" in html
    # class absent from the real test split: said, not counted as 0
    assert "absent from the test split, not counted: pos" in html and "over 1 of 2 classes" in html
    # full prompts, escaped; every slide thumbnail
    assert LONG_PROMPT + " 0 &lt;script&gt;" in html and "<script>" not in html
    assert all(f'alt="slide{i}"' in html for i in range(5))
    # Settings: text left (class "l"), numbers right
    settings = html[html.index('id="settings"') : html.index("</table>", html.index('id="settings"'))]
    cells = re.findall(r'<td class="(l?)">([^<]*)</td>', settings)
    assert (
        ("l", "LoRA rank 4") in cells and ("l", "label_only") in cells and ("l", cfg["train"]["lr_scheduler"]) in cells
    )
    assert ("", str(cfg["train"]["max_steps"])) in cells
    for cls, text in cells:
        assert (cls == "") == bool(re.fullmatch(r"[-+\d.e]+", text)), (cls, text)
    tsv = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert "FD (backbone) ↓" in tsv.columns and "AUC synthetic only ↑" in tsv.columns and len(tsv) == 4
    assert tsv["AUC real + synthetic ↑"].tolist() == ["–", "0.820 (no interval)", "–", "0.840 (no interval) ★"]
    assert len(pd.read_csv(out / "verdicts.tsv", sep="\t")) == 3


def test_report_reads_only_its_declared_inputs(report_inputs, tmp_path):
    """The page is the same when every declared file is moved elsewhere and nothing else exists."""
    import shutil

    inputs, cfg = report_inputs
    build_report(inputs, cfg, tmp_path / "a.html")
    moved = tmp_path / "moved"

    def move(p):
        target = moved / Path(p).relative_to(tmp_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if Path(p).is_dir() else shutil.copy)(p, target)
        return str(target)

    relocated = {k: [move(p) for p in v] if isinstance(v, list) else move(v) for k, v in inputs.items()}
    build_report(relocated, cfg, tmp_path / "b.html")
    strip_date = lambda t: re.sub(r"Generated [\d: -]+", "", t)  # noqa: E731
    assert strip_date((tmp_path / "a.html").read_text()) == strip_date((tmp_path / "b.html").read_text())


def test_fid_without_inception_weights_stops_with_a_clear_message(tmp_path):
    with pytest.raises(InputError, match="evaluation.inception_weights.*feature_extractor: backbone"):
        inception_extractor(str(tmp_path / "missing.pt"), "cpu")


def test_inception_weights_under_another_name_leave_no_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    import torch

    class StandIn(torch.nn.Module):  # clean-fid reads `.layers` from the TorchScript file; only loading is exercised
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Identity()

        def forward(self, x):
            return self.layers(x)

    weights = tmp_path / "my-inception.pt"
    torch.jit.save(torch.jit.script(StandIn()), str(weights))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    _, info = inception_extractor(str(weights), "cpu")
    assert info["kind"] == "inception"
    assert not list(scratch.glob("histosynth-inception-*"))


def _docs(fd_by_set, warn_sets):
    """Minimal metric documents for one experiment: FD per set, a warning on the sets in ``warn_sets``."""
    sets = {
        s: {"overall": fd_by_set[s], "n_real": 4, "n_synthetic": 4, "warnings": ["small N"] if s in warn_sets else []}
        for s in ("raw", "filtered")
    }
    one = {"macro_f1": 0.5}
    return {
        "fd": {"name": "FD", "extractor": {"kind": "classifier"}, "sets": sets},
        "kid": {"sets": {s: {"overall": 0.1} for s in sets}},
        "prdc": {"sets": {s: {"overall": {}} for s in sets}},
        "agreement": {"judge": {"sets": {s: one for s in sets}}, "filter_classifier": {"sets": {"raw": one}}},
        "downstream": {"synthetic_set": "filtered", "results": {}},
    }


def test_a_column_of_ties_has_no_best_and_a_warning_everywhere_says_so_once():
    from histosynth.evaluation.report import metric_rows, warnings

    docs = {
        "a": _docs({"raw": 1.0, "filtered": 2.0}, {"raw", "filtered"}),
        "b": _docs({"raw": 3.0, "filtered": 4.0}, {"raw", "filtered"}),
    }
    rows, _ = metric_rows(["a", "b"], docs)
    assert [r["cells"]["fd"]["best"] for r in rows] == [True, False, False, False]
    assert not any(r["cells"]["kid"]["best"] for r in rows)  # every KID is 0.1: no star
    assert warnings(["a", "b"], docs, {}) == [{"text": "small N", "where": ["every experiment / set"]}]
    docs["b"] = _docs({"raw": 3.0, "filtered": 4.0}, {"raw"})
    assert warnings(["a", "b"], docs, {}) == [{"text": "small N", "where": ["a / raw", "a / filtered", "b / raw"]}]


def test_a_flagged_number_never_gets_the_star():
    """The best value is picked among unflagged numbers only: a judge F1 over fewer classes, or a
    synthetic-only AUC from a set that lacks a class, is not a result even when it is the highest."""
    from histosynth.evaluation.report import metric_rows

    docs = {e: _docs({"raw": fd, "filtered": fd + 1}, set()) for e, fd in (("a", 1.0), ("b", 2.0), ("c", 3.0))}
    for e, f1, auc in (("a", 1.0, 0.9), ("b", 0.7, 0.8), ("c", 0.6, 0.7)):
        docs[e]["agreement"]["judge"]["sets"]["filtered"] = {"macro_f1": f1}
        docs[e]["downstream"]["results"] = {"synthetic_only": {"macro_auc": auc}}
    # a: the highest judge F1 and AUC, from a filtered set without class "pos"
    docs["a"]["agreement"]["judge"]["sets"]["filtered"] |= {"classes_absent": ["pos"], "macro_over": "1 of 2 classes"}
    docs["a"]["fd"]["sets"]["filtered"]["classes_absent"] = ["pos"]
    rows, _ = metric_rows(["a", "b", "c"], docs)
    filtered = {r["experiment"]: r["cells"] for r in rows if r["set"] == "filtered"}
    assert filtered["a"]["judge_f1"]["flags"] == ["macro over 1 of 2 classes"] and not filtered["a"]["judge_f1"]["best"]
    assert filtered["a"]["auc_syn"]["flags"] == ["not meaningful: no synthetic pos"]
    assert not filtered["a"]["auc_syn"]["best"]
    assert filtered["b"]["judge_f1"]["best"] and filtered["b"]["auc_syn"]["best"]
    assert not any(c["best"] for r in rows for c in r["cells"].values() if c["flags"])
    # below chance is flagged too: with a and b flagged, c's AUC is the only ranked one, so no star at all
    docs["b"]["downstream"]["results"]["synthetic_only"]["macro_auc"] = 0.45
    rows, _ = metric_rows(["a", "b", "c"], docs)
    assert not any(r["cells"]["auc_syn"]["best"] for r in rows)


def test_verdicts_are_decided_by_unflagged_numbers_only():
    """A judge F1 over fewer classes is listed (with its ⚠) but neither wins nor counts as "raised"."""
    from histosynth.evaluation.report import _cell, metric_rows, verdicts

    docs = {e: _docs({"raw": fd, "filtered": fd + 1}, set()) for e, fd in (("a", 1.0), ("b", 2.0))}
    for e, f1, absent in (("a", 1.0, ["pos"]), ("b", 0.7, [])):
        docs[e]["agreement"]["judge"]["sets"]["filtered"] = {
            "macro_f1": f1,
            "classes_absent": absent,
            "macro_over": f"{2 - len(absent)} of 2 classes",
        }
    exps = {"a": {"prompts": "label"}, "b": {"prompts": "morphology"}}
    rows, _ = metric_rows(list(exps), docs)
    prompts, raw_vs_filtered, _ = verdicts(exps, rows, _cell(0.8), "filtered", "FD")
    # one unflagged judge F1 is left: nothing to compare it with, so it decides nothing; FD still does
    assert prompts["verdict"] == "a wins on FD; judge F1 not compared (⚠ macro over 1 of 2 classes)"
    assert "judge F1 (↑): a 1.000 ⚠, b 0.700" in prompts["numbers"]
    # raw 0.5 -> filtered 0.7 for b counts; a's 0.5 -> 1.000 (over 1 class) does not
    assert "raised the independent judge's F1 in 1 of 1" in raw_vs_filtered["verdict"]
    assert "judge F1 0.500 → 1.000 ⚠" in raw_vs_filtered["numbers"]


def test_distances_of_a_set_without_some_class_are_flagged_and_decide_nothing():
    """A filtered set that never got a "pos" image compares another class mix than the real set: its FD, KID
    and PRDC carry ⚠ (like the synthetic-only AUC), get no star, and the verdicts list but do not count them."""
    from histosynth.evaluation.report import _cell, metric_rows, verdicts

    docs = {e: _docs({"raw": fd, "filtered": fd_f}, set()) for e, fd, fd_f in (("a", 3.0, 0.5), ("b", 2.0, 1.5))}
    for e in docs:
        docs[e]["prdc"]["sets"]["filtered"]["overall"] = {"precision": 0.9 if e == "a" else 0.6}
    docs["a"]["fd"]["sets"]["filtered"]["classes_absent"] = ["pos"]
    rows, _ = metric_rows(["a", "b"], docs)
    a = next(r["cells"] for r in rows if r["experiment"] == "a" and r["set"] == "filtered")
    for key in ("fd", "kid", "precision"):
        assert a[key]["flags"] == ["not comparable: no synthetic pos"] and not a[key]["best"], key
    assert not a["recall"]["flags"]  # no number, nothing to flag
    b = next(r["cells"] for r in rows if r["experiment"] == "b" and r["set"] == "filtered")
    assert not b["fd"]["flags"] and not b["precision"]["best"]  # the only unflagged precision: nothing to rank
    exps = {"a": {"prompts": "label"}, "b": {"prompts": "morphology"}}
    prompts, raw_vs_filtered, _ = verdicts(exps, rows, _cell(0.8), "filtered", "FD")
    # a's filtered FD 0.50 is the lowest but flagged: b's is the only comparable one, so FD decides nothing
    assert prompts["verdict"].startswith("no winner")
    assert "FD not compared (⚠ not comparable: no synthetic pos)" in prompts["verdict"]
    assert "FD (↓): a 0.50 ⚠, b 1.50" in prompts["numbers"]
    assert "filtering lowered FD in 1 of 1 experiments" in raw_vs_filtered["verdict"]
    docs["b"]["fd"]["sets"]["filtered"]["classes_absent"] = ["pos"]  # no comparable filtered FD left: says why
    _, raw_vs_filtered, _ = verdicts(exps, metric_rows(["a", "b"], docs)[0], _cell(0.8), "filtered", "FD")
    assert raw_vs_filtered["verdict"].startswith("FD is not compared (⚠ not comparable: no synthetic pos); ")


def _test_numbers(noise: float, nudge: float = 0.0) -> dict:
    """A classifier's test numbers (with their bootstrap intervals) on the same 400 real test patches: scores
    are the label plus Gaussian ``noise``; ``nudge`` moves a few scores of positives up, a tiny gain in AUC."""
    from histosynth.classifier import evaluate
    from histosynth.evaluation.evaluate import _brief

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    score = labels + noise * rng.normal(size=len(labels))
    score[200:210] += nudge
    p = 1 / (1 + np.exp(-score))
    return _brief(evaluate(labels, np.stack([1 - p, p], 1), ["neg", "pos"]), ["neg", "pos"])


def test_a_difference_within_the_bootstrap_intervals_is_a_tie_and_a_large_one_a_win(monkeypatch):
    """The AUCs carry seeded 95 % bootstrap intervals from evaluation; a +0.002 gain is "within noise" (no star,
    no winner, not counted as raised), a large one wins. The same inputs give the same intervals."""
    from histosynth.evaluation import metrics
    from histosynth.evaluation.metric_files import read_interval

    monkeypatch.setattr(metrics, "BOOTSTRAP_RESAMPLES", 50)  # fewer resamples keep this test fast; same rule
    from histosynth.evaluation.report import _cell, metric_rows, verdicts

    base, tiny = _test_numbers(0.9), _test_numbers(0.9, nudge=0.5)
    assert 0 < tiny["macro_auc"] - base["macro_auc"] < 0.01
    lo, hi = read_interval(base, "macro_auc")
    assert lo < base["macro_auc"] < hi and hi - lo > 0.02  # 400 patches: a few hundredths of AUC are noise
    assert read_interval(_test_numbers(0.9), "macro_auc") == (lo, hi)  # seeded
    assert read_interval(base, "macro_f1") is not None
    real = _cell(base["macro_auc"], interval=read_interval(base, "macro_auc"))
    exps = {"a": {"prompts": "label"}, "b": {"prompts": "morphology"}}

    def rows_with(b_numbers):
        docs = {e: _docs({"raw": 1.0, "filtered": 1.0}, set()) for e in exps}  # FD, F1 tie: only AUC can decide
        docs["a"]["downstream"]["results"] = {"real_plus_synthetic": base}
        docs["b"]["downstream"]["results"] = {"real_plus_synthetic": b_numbers}
        return metric_rows(list(exps), docs)[0]

    rows = rows_with(tiny)
    assert not any(r["cells"]["auc_mix"]["best"] for r in rows)
    prompts, _, real_vs_mix = verdicts(exps, rows, real, "filtered", "FD")
    assert prompts["verdict"] == (
        "no winner: FD ties (a, b); judge F1 ties (a, b); AUC real + synthetic ties within noise (a, b)"
    )
    assert f"b {tiny['macro_auc']:.3f} [" in prompts["numbers"]
    assert real_vs_mix["verdict"].startswith("adding synthetic images did not raise the macro AUC in any of 2")
    gain = tiny["macro_auc"] - base["macro_auc"]
    assert real_vs_mix["verdict"].endswith(f"; within noise (95 % intervals overlap): b (+{gain:.3f})")
    large = _test_numbers(0.3)
    assert read_interval(large, "macro_auc")[0] > hi
    rows = rows_with(large)
    assert [r["cells"]["auc_mix"]["best"] for r in rows if r["set"] == "filtered"] == [False, True]
    prompts, _, real_vs_mix = verdicts(exps, rows, real, "filtered", "FD")
    assert prompts["verdict"] == "b wins on AUC real + synthetic; FD ties (a, b); judge F1 ties (a, b)"
    assert real_vs_mix["verdict"].startswith("adding synthetic images raised the macro AUC in 1 of 2 experiments")
    # the judge's F1: 0.50 -> 0.52 within the intervals is not "raised"; 0.50 -> 0.80 beyond them is
    docs = {e: _docs({"raw": 1.0, "filtered": 1.0}, set()) for e in exps}
    for e, f1 in (("a", 0.52), ("b", 0.8)):
        sets = docs[e]["agreement"]["judge"]["sets"]
        sets["raw"] = {"macro_f1": 0.5, "macro_f1_interval": [0.45, 0.55]}
        sets["filtered"] = {"macro_f1": f1, "macro_f1_interval": [f1 - 0.05, f1 + 0.05]}
    _, raw_vs_filtered, _ = verdicts(exps, metric_rows(list(exps), docs)[0], real, "filtered", "FD")
    assert "raised the independent judge's F1 in 1 of 2 (1 within noise)" in raw_vs_filtered["verdict"]
