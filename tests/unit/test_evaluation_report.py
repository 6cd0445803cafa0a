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
    assert head.count("FD (backbone) ↓") == 1 and "KID ↓" in head and "AUC real + synthetic ↑" in head
    assert "FD-embedding" not in html and "not FID)" not in html
    assert html.count('<span class="star"') >= 5
    # implausible numbers are flagged where they stand, and the random network on every such number
    assert "⚠ below chance" in html and "⚠ no synthetic pos" in html
    assert html.count('<span class="rnd">random network: mechanics only</span>') >= 4 * 6
    # every warning names its experiment and set
    assert "morphology / filtered:</span> classes that never passed the filter: pos" in html
    assert "label_only / raw" in html
    # class absent from the real test split: said, not counted as 0
    assert "absent from the test split, not counted: pos" in html and "over 1 of 2 classes" in html
    # full prompts, escaped; every slide thumbnail
    assert LONG_PROMPT + " 0 &lt;script&gt;" in html and "<script>" not in html
    assert all(f'alt="slide{i}"' in html for i in range(5))
    tsv = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert "FD (backbone) ↓" in tsv.columns and len(tsv) == 4
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
