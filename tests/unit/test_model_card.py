"""The model card (histosynth.model_card), without snakemake: inputs shaped by the evaluation's own writers."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from histosynth.config import default_config, experiment_settings
from histosynth.diffusion.trained import META_FILE
from histosynth.errors import InputError
from histosynth.evaluation.evaluate import comparability
from histosynth.evaluation.metric_files import write_metrics
from histosynth.evaluation.metrics import classifier_agreement, per_class
from histosynth.model_card import METRIC_FILES, TAGS, write_model_card

NAMES = ["dab_negative", "dab_positive"]


def _metric_docs(d):
    """Metric JSONs in the structure evaluate_generation / _agreement / _downstream write."""
    rng = np.random.default_rng(0)
    real, rl = rng.normal(size=(20, 4)), np.arange(20) % 2
    fake, fl = rng.normal(size=(8, 4)), np.arange(8) % 2
    paths = {}
    extractor = {"kind": "backbone", "name": "tiny ViT", "random_network": True}
    for metric, fn in (
        ("fd", lambda r, f: 3.25),
        ("kid", lambda r, f: 0.0123),
        ("prdc", lambda r, f: {"precision": 0.5, "recall": 0.25, "density": 0.75, "coverage": 0.125, "k": 3}),
    ):
        doc = {
            "metric": metric,
            "experiment": "label_only",
            "extractor": extractor,
            "reference": {"split": "test", "n_available": 20},
            "sets": {},
        }
        for s in ("raw", "filtered"):
            doc["sets"][s] = {"n_real": 20, "n_synthetic": 8, **per_class(fn, real, rl, fake, fl, NAMES)}
            doc["sets"][s]["warnings"] = comparability(metric, extractor, 20, 8) if metric != "prdc" else []
        paths[metric] = d / f"{metric}.json"
        write_metrics(paths[metric], doc)
    agree = {
        "metric": "agreement",
        "experiment": "label_only",
        "judge": {
            "sets": {
                s: classifier_agreement(fl, np.where(np.arange(8) < 6, fl, 1 - fl), NAMES) for s in ("raw", "filtered")
            }
        },
    }
    paths["agreement"] = d / "agreement.json"
    write_metrics(paths["agreement"], agree)
    down = {
        "metric": "downstream",
        "experiment": "label_only",
        "synthetic_set": "filtered",
        "epochs": 2,
        "results": {
            "real_only": {"n": 10, "accuracy": 0.8, "macro_auc": 0.85, "macro_f1": 0.79},
            "synthetic_only": {"n": 10, "accuracy": 0.6, "macro_auc": 0.42, "macro_f1": 0.55, "n_train": 8},
            "real_plus_synthetic": {
                "n": 10,
                "accuracy": 0.9,
                "macro_auc": float("nan"),
                "macro_f1": 0.88,
                "n_train": 28,
            },
        },
        "warnings": [],
    }
    paths["downstream"] = d / "downstream.json"
    write_metrics(paths["downstream"], down)
    return paths


@pytest.fixture()
def card_inputs(tmp_path):
    ev = tmp_path / "eval"
    ev.mkdir()
    lora = tmp_path / "trained"
    lora.mkdir()
    (lora / META_FILE).write_text(
        json.dumps(
            {"method": "lora", "base_model": {"source": "runwayml/stable-diffusion-v1-5"}, "settings": {"rank": 4}}
        )
    )
    summary = tmp_path / "train_summary.json"
    summary.write_text(
        json.dumps({"steps": 120, "seconds": 30.5, "device": "cpu", "first_loss": 0.9, "last_loss": 0.4})
    )
    freq = tmp_path / "label_only.freq.tsv"
    pd.DataFrame(
        {
            "prompt": ["Histology image of DAB-positive tissue", "Histology image of DAB-negative tissue", "a | b"],
            "label_name": ["dab_positive", "dab_negative", "dab_negative"],
            "count": [30, 20, 1],
        }
    ).to_csv(freq, sep="\t", index=False)
    grid = tmp_path / "grid.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(grid)
    cfg = default_config()
    out = tmp_path / "models" / "label_only"
    out.mkdir(parents=True)
    return dict(
        experiment="label_only",
        model_dir=lora,
        base_dir=tmp_path / "base",
        train_summary=summary,
        prompt_frequencies=freq,
        grids={"raw": (grid, out / "samples_raw.png"), "filtered": (grid, out / "samples_filtered.png")},
        metrics=_metric_docs(ev),
        base_model="runwayml/stable-diffusion-v1-5",
        strategy="label",
        prompt_settings={"label_template": "Histology image of {label} tissue"},
        train=experiment_settings(cfg, "label_only", "train"),
        sampling=experiment_settings(cfg, "label_only", "sampling"),
        data={"slides": "config/slides.tsv", "tiling.mpp": 1.0, "qc": {"blur": {"activate": False}}},
    ), out


def test_card_has_metadata_settings_grid_and_metrics(card_inputs):
    kwargs, out = card_inputs
    write_model_card(out / "README.md", **kwargs)
    text = (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")  # the Hub's own parser reads it back
    assert card.data.base_model == "runwayml/stable-diffusion-v1-5" and card.data.library_name == "diffusers"
    assert set(TAGS) <= set(card.data.tags) and card.data.widget[0]["output"]["url"] == "samples_raw.png"
    assert (out / "samples_raw.png").read_bytes() == kwargs["grids"]["raw"][0].read_bytes()
    assert "![filtered samples of label_only](samples_filtered.png)" in text
    # metrics: one row per set with the JSONs' numbers; NaN shown as n/a; warnings carried over
    assert "| raw | 20 | 8 | 3.25 | 0.0123 | 0.5 | 0.25 | 0.75 | 0.125 | 0.75 |" in text
    assert "a random network: these distances show mechanics only" in text
    assert "| real plus synthetic | 28 | 0.9 | n/a | 0.88 |" in text
    assert text.count("small N inflates FD and KID") == 1  # listed once, with every place it applies to
    assert "(FD of the raw set, KID of the raw set, FD of the filtered set, KID of the filtered set)" in text
    # data, prompts and settings
    assert "| dab_positive | 30 |" in text and "| dab_negative | 21 |" in text
    assert "a \\| b" in text  # a pipe inside a prompt does not break the table
    assert "| `rank` | 4 |" in text and "| `scheduler` | ddim |" in text and "steps 120" in text
    assert "| `learning_rate` | 0.0001 |" in text and "| `resolution` | null |" in text
    assert f'pipe("Histology image of DAB-positive tissue", num_inference_steps={kwargs["sampling"]["steps"]}' in text


def test_local_or_tiny_base_model_is_not_hub_metadata(card_inputs):
    kwargs, out = card_inputs
    (kwargs["model_dir"] / META_FILE).write_text(json.dumps({"method": "full", "base_model": {"source": "tiny"}}))
    write_model_card(out / "README.md", **{**kwargs, "base_model": "tiny"})
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    text = (out / "README.md").read_text()
    assert "base_model" not in meta and "`tiny`" in text
    assert (
        "UNet2DConditionModel.from_pretrained" in text
        and "load_lora_weights" not in text
        and "lora" not in meta["tags"]
    )


def test_missing_or_broken_inputs_name_the_file(card_inputs):
    kwargs, out = card_inputs
    kwargs["metrics"]["kid"].write_text("{not json")
    with pytest.raises(InputError, match=r"kid\.json"):
        write_model_card(out / "README.md", **kwargs)
    with pytest.raises(InputError, match=r"\['downstream'\]"):
        write_model_card(
            out / "README.md",
            **{**kwargs, "metrics": {k: v for k, v in kwargs["metrics"].items() if k != "downstream"}},
        )
    kwargs["prompt_frequencies"].write_text("prompt\tn\nx\t1\n")
    with pytest.raises(InputError, match=r"freq\.tsv lacks column"):
        write_model_card(out / "README.md", **{**kwargs, "metrics": _metric_docs(kwargs["metrics"]["kid"].parent)})
    assert not (out / "README.md").exists()
    assert set(METRIC_FILES) == set(kwargs["metrics"])
