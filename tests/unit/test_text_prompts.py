import numpy as np
import pandas as pd
import pytest

from histosynth.config import default_config
from histosynth.errors import InputError
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter
from histosynth.text.prompts import build_prompts, number_words


def words(s):
    return len(s.split()) + 2


@pytest.fixture()
def train_h5(tmp_path):
    path = tmp_path / "train.h5"
    n = 6
    with PatchWriter(path, PatchFileSpec(8, ["healthy", "tumor"], {})) as w:
        w.append(
            PatchBatch(
                np.zeros((n, 8, 8, 3), np.uint8),
                np.array([[0, 0], [8, 0]] * 3),
                [0, 1, 1, 0, 1, 1],
                ["s"] * n,
                ["c1", "c1", "c2", "c3", "c3", "c2"],
                np.ones(n),
            )
        )
    return path


@pytest.fixture()
def cfg():
    return default_config()["prompts"]


def test_each_distinct_prompt_is_tokenised_once(train_h5, cfg):
    seen = []

    def counting(text):
        seen.append(text)
        return words(text)

    df = build_prompts("label", train_h5, cfg, counting, 77)
    assert sorted(seen) == ["Histology image of healthy tissue", "Histology image of tumor tissue"]
    assert df["n_tokens"].tolist() == [words(p) for p in df["prompt"]]


def test_label_and_class_description(train_h5, cfg):
    df = build_prompts("label", train_h5, cfg, words, 77)
    assert df["prompt"].tolist()[:2] == ["Histology image of healthy tissue", "Histology image of tumor tissue"]
    cfg["class_descriptions"] = {"tumor": "colorectal adenocarcinoma epithelium"}
    df = build_prompts("class_description", train_h5, cfg, words, 77)
    assert df["prompt"][1] == "a histopathological image of an area with colorectal adenocarcinoma epithelium"
    assert df["prompt"][0] == "a histopathological image of an area with healthy"


def test_morphology_prompts_write_clusters_in_words(train_h5, cfg, tmp_path):
    clusters = tmp_path / "c.tsv"
    pd.DataFrame(
        {
            "split": ["train"] * 6 + ["val"],
            "index": [0, 1, 2, 3, 4, 5, 0],
            "label": [0, 1, 1, 0, 1, 1, 0],
            "cluster": [0, 32, 32, 5, 1, 0, 3],
        }
    ).to_csv(clusters, sep="\t", index=False)
    df = build_prompts(
        "morphology",
        train_h5,
        cfg,
        words,
        77,
        inputs={"clusters": clusters},
        out_tsv=tmp_path / "p.tsv",
        out_freq=tmp_path / "f.tsv",
    )
    assert df["prompt"][1] == "Histology image of tumor tissue, morphology type thirty-two"
    freq = pd.read_csv(tmp_path / "f.tsv", sep="\t")
    assert freq["count"].sum() == 6 and freq.iloc[0]["count"] == 2


def test_clusters_that_do_not_line_up_are_refused(train_h5, cfg, tmp_path):
    clusters = tmp_path / "c.tsv"
    pd.DataFrame({"split": ["train"] * 3, "index": [0, 1, 2], "label": [0, 1, 1], "cluster": [0, 1, 2]}).to_csv(
        clusters, sep="\t", index=False
    )
    with pytest.raises(InputError, match="rerun cluster_morphology"):
        build_prompts("morphology", train_h5, cfg, words, 77, inputs={"clusters": clusters})


def test_report_prompts_fall_back_to_labels_and_levels(train_h5, cfg, tmp_path, caplog):
    summaries = tmp_path / "s.tsv"
    pd.DataFrame({"case_id": ["c1", "c2"], "summary": ["invasive ductal carcinoma; grade 3", ""]}).to_csv(
        summaries, sep="\t", index=False
    )
    df = build_prompts("report", train_h5, cfg, words, 77, inputs={"summaries": summaries})
    assert df["prompt"][0] == "invasive ductal carcinoma; grade 3"
    assert df["fallback"].tolist() == [False, False, True, True, True, True]
    assert df["prompt"][2] == "Histology image of tumor tissue"
    assert "have no report summary" in caplog.text
    scores = tmp_path / "scores.tsv"
    # keyed by slide and level-0 corner (wsinfer's per-slide rows), not by a split's row numbers;
    # rows of other slides and corners are ignored
    pd.DataFrame(
        {
            "slide_id": ["s", "s", "other"],
            "x": [0, 8, 0],
            "y": [0, 0, 0],
            "tumor": [0.9, 0.1, 0.1],
            "til": [0.0, 0.8, 0.9],
        }
    ).to_csv(scores, sep="\t", index=False)
    cfg["patch_scores"] = str(scores)
    df = build_prompts("report", train_h5, cfg, words, 77, inputs={"summaries": summaries})
    assert df["prompt"][0] == "high tumor; low til; invasive ductal carcinoma; grade 3"
    assert df["prompt"][1] == "low tumor; high til; invasive ductal carcinoma; grade 3"
    pd.DataFrame({"slide_id": ["s"], "x": [0], "y": [0], "tumor": [0.9], "til": [0.0]}).to_csv(
        scores, sep="\t", index=False
    )
    with pytest.raises(InputError, match=r"no row for 3 patch\(es\), e.g. slide s at x=8, y=0"):
        build_prompts("report", train_h5, cfg, words, 77, inputs={"summaries": summaries})


def test_overlong_prompts_are_counted_not_hidden(train_h5, cfg, caplog):
    cfg["label_template"] = "Histology image of {label} tissue " + "very " * 80
    df = build_prompts("label", train_h5, cfg, words, 77)
    assert df["truncated"].all() and (df["n_tokens"] > 77).all()
    assert "6 of 6 prompts exceed" in caplog.text


@pytest.fixture()
def unlabelled_h5(tmp_path):
    path = tmp_path / "unlabelled.h5"
    with PatchWriter(path, PatchFileSpec(8, [], {})) as w:
        w.append(
            PatchBatch(
                np.zeros((3, 8, 8, 3), np.uint8),
                np.zeros((3, 2)),
                [-1, -1, -1],
                ["s"] * 3,
                ["c1", "c2", "c2"],
                np.ones(3),
            )
        )
    return path


def test_report_prompts_need_no_labels(unlabelled_h5, cfg, tmp_path):
    """PathLDM's patches carry no class: report prompts, else the empty (unconditional) prompt."""
    summaries = tmp_path / "s.tsv"
    pd.DataFrame({"case_id": ["c1"], "summary": ["invasive lobular carcinoma"]}).to_csv(
        summaries, sep="\t", index=False
    )
    df = build_prompts("report", unlabelled_h5, cfg, words, 77, inputs={"summaries": summaries})
    assert df["prompt"].tolist() == ["invasive lobular carcinoma", "", ""]
    assert df["fallback"].tolist() == [False, True, True] and df["label_name"].tolist() == ["", "", ""]
    with pytest.raises(InputError, match="'label' prompt strategy needs a label"):
        build_prompts("label", unlabelled_h5, cfg, words, 77)


def test_a_registered_strategy_is_usable_everywhere(train_h5, cfg, monkeypatch):
    """Adding a strategy is one registered function: settings, inputs and building follow from it."""
    from histosynth.text import prompts

    monkeypatch.setattr(prompts, "STRATEGIES", dict(prompts.STRATEGIES))

    @prompts.strategy("case", config_keys=("label_text",), inputs=lambda config: {"extra": "x.tsv"})
    def case_prompts(ctx):
        return [f"case {c}" for c in ctx.case_ids], np.zeros(len(ctx), bool)

    assert prompts.strategy_settings("case", cfg) == {"label_text": cfg["label_text"]}
    assert prompts.strategy_inputs("case", default_config()) == {"extra": "x.tsv"}
    assert build_prompts("case", train_h5, cfg, words, 77)["prompt"][0] == "case c1"
    with pytest.raises(InputError, match="unknown prompt strategy 'nope'"):
        build_prompts("nope", train_h5, cfg, words, 77)


def test_each_strategy_declares_only_existing_settings():
    from histosynth.text.prompts import STRATEGIES

    known = set(default_config()["prompts"])
    for spec in STRATEGIES.values():
        assert set(spec.config_keys) <= known, spec.name


def test_the_schema_enum_comes_from_the_registry(monkeypatch):
    from histosynth import config
    from histosynth.text import prompts

    monkeypatch.setattr(prompts, "STRATEGIES", {**prompts.STRATEGIES, "case": prompts.STRATEGIES["label"]})
    enum = config.load_schema()["properties"]["experiments"]["additionalProperties"]["properties"]["prompts"]["enum"]
    assert enum == list(prompts.STRATEGIES)
    assert default_config(experiments={"e": {"prompts": "case"}})["experiments"]["e"]["prompts"] == "case"
    with pytest.raises(InputError, match="experiments.e.prompts"):
        default_config(experiments={"e": {"prompts": "nope"}})


def test_number_words():
    assert [number_words(n) for n in (0, 7, 13, 20, 32, 99, 105)] == [
        "zero",
        "seven",
        "thirteen",
        "twenty",
        "thirty-two",
        "ninety-nine",
        "one hundred five",
    ]


@pytest.mark.slow  # the tiny PathLDM set-up trains and samples
def test_prompts_carry_til_levels(pathldm):
    df = pd.read_csv(pathldm["prompts"], sep="\t")
    assert df["til_level"].tolist() == pathldm["til_level"].tolist()


def test_report_template_can_name_the_patch_label(train_h5, unlabelled_h5, cfg, tmp_path):
    """The demo's report prompts: each patch's class before its case's summary (PathLDM's per-patch levels)."""
    summaries = tmp_path / "s.tsv"
    pd.DataFrame({"case_id": ["c1", "c2", "c3"], "summary": ["adenocarcinoma; grade 2"] * 3}).to_csv(
        summaries, sep="\t", index=False
    )
    cfg["report_template"] = "Histology image of {label} tissue; {levels}{summary}"
    df = build_prompts("report", train_h5, cfg, words, 77, inputs={"summaries": summaries})
    assert df["prompt"][0] == "Histology image of healthy tissue; adenocarcinoma; grade 2"
    assert df["prompt"][1] == "Histology image of tumor tissue; adenocarcinoma; grade 2"
    assert not df["fallback"].any()
    with pytest.raises(InputError, match=r"unlabelled\.h5: 3 unlabelled patch\(es\).*report_template.*\{label\}"):
        build_prompts("report", unlabelled_h5, cfg, words, 77, inputs={"summaries": summaries})
