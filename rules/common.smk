# Config validation, the sample sheet, wildcard constraints and input functions.
import re
import sys

import pandas as pd

sys.path.insert(0, workflow.basedir)  # the package is importable even when not pip-installed

from snakemake.logging import logger

from histosynth.config import (
    DEMO_CONFIG,
    check_output_names,
    config_sources,
    config_summary,
    experiment_settings,
    settings_hash,
    load_samples,
    validate_config,
)
from histosynth.qc import active_settings
from histosynth.text.prompts import strategy_inputs, strategy_settings
from histosynth.importers import resamples


CONFIG_FILES = [str(f) for f in workflow.overwrite_configfiles] or [DEMO_CONFIG]
# schema check + defaults; an unknown or mistyped key stops here, naming the key and its file
validate_config(config, config_sources(CONFIG_FILES, dict(workflow.config_settings.config)))
if workflow.is_main_process:  # once per run, not again in every cluster job
    logger.info(config_summary(config, CONFIG_FILES))
SAMPLES = load_samples(config["samples"])
DATASETS = {d["name"]: d for d in config["patch_datasets"]}
check_output_names(SAMPLES, config)
SPLITS = ["train", "val", "test"]
EXPERIMENTS = config["experiments"]


def _alternation(names):
    return "|".join(re.escape(n) for n in names) if names else r"(?!x)x"


wildcard_constraints:
    slide=_alternation(list(SAMPLES["slide_id"])),
    dataset=_alternation(list(DATASETS)),
    demo_slide=r"demo_\d+",
    split="|".join(SPLITS),
    experiment=_alternation(list(EXPERIMENTS)),
    kind="inception|embedding",


def slide_path(wildcards):
    return SAMPLES.loc[wildcards.slide, "slide_path"]


def slide_value(column):
    """Input function returning one sample-sheet cell (None when empty)."""

    def get(wildcards):
        value = SAMPLES.loc[wildcards.slide, column]
        return None if pd.isna(value) else str(value)

    return get


def tile_files():
    """Every per-slide and per-dataset patch file, in a stable order."""
    names = sorted(SAMPLES["slide_id"]) + sorted(DATASETS)
    return [f"results/tiles/{n}.h5" for n in names]


def tile_thumbnails():
    return [f"results/tiles/{s}.thumbnail.png" for s in sorted(SAMPLES["slide_id"])]


def qc_settings():
    """The QC steps that are switched on (tiling and import); an inactive step's settings trigger no rerun."""
    return active_settings(config["qc"])


def stain_reference(wildcards):
    """The stain-normalisation reference image is an input: replacing it re-tiles."""
    stain = qc_settings()["stain"]
    return stain["reference"] if stain["activate"] and stain["reference"] else []


def strategy(wildcards):
    return EXPERIMENTS[wildcards.experiment]["prompts"]


def prompt_params(wildcards):
    """The prompts settings the experiment's strategy reads (declared with the strategy in the package)."""
    return strategy_settings(strategy(wildcards), config["prompts"])


def prompt_inputs(wildcards):
    inputs = {"patches": "results/patches/train.h5", "base": "results/models/base"}
    return inputs | strategy_inputs(strategy(wildcards), config)


def train_settings(wildcards):
    return experiment_settings(config, wildcards.experiment, "train")


def sample_settings(wildcards):
    return experiment_settings(config, wildcards.experiment, "sample")


def resolution(wildcards):
    return train_settings(wildcards)["resolution"] or config["tiling"]["patch_size"]


def evaluation_settings(*keys):
    """Only the evaluation settings a rule reads, so an unrelated change does not rerun it."""
    return {k: config["evaluation"][k] for k in keys}


def reference_feature_files():
    kinds = sorted({config["evaluation"]["fid_extractor"], "embedding"})
    return [f"results/eval/reference/{kind}.h5" for kind in kinds]


def uses_strategy(name):
    return any(e["prompts"] == name for e in EXPERIMENTS.values())


def final_outputs():
    outputs = [
        *tile_thumbnails(),
        "results/patches/train.h5",
        "results/patches/val.h5",
        "results/patches/test.h5",
        "results/patches/summary.tsv",
        "results/patches/examples.png",
        *expand("results/prompts/{experiment}.freq.tsv", experiment=EXPERIMENTS),
        "results/classifier/metrics.json",
        *expand("results/models/{experiment}/loss.png", experiment=EXPERIMENTS),
        *expand("results/models/{experiment}/README.md", experiment=EXPERIMENTS),  # model cards
        *expand("results/synthetic/{experiment}/filtered_grid.png", experiment=EXPERIMENTS),
        "results/report/index.html",
    ]
    if uses_strategy("morphology"):
        outputs += ["results/morphology/k_sweep.png", "results/morphology/cluster_examples.png"]
    if config["reports"]["path"]:
        outputs.append("results/reports/summaries.tsv")
    return outputs
