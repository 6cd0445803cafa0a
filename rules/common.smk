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


# which prompt settings each strategy reads: a change reruns only the experiments it affects
PROMPT_KEYS = {
    "label": ["label_template", "label_text"],
    "morphology": ["label_template", "label_text", "morphology_template"],
    "report": ["label_template", "label_text", "report_template", "patch_scores"],
    "class_description": ["label_text", "class_description_template", "class_descriptions"],
}


def strategy(wildcards):
    return EXPERIMENTS[wildcards.experiment]["prompts"]


def prompt_params(wildcards):
    return {k: config["prompts"][k] for k in PROMPT_KEYS[strategy(wildcards)]}


def prompt_inputs(wildcards):
    inputs = {"patches": "results/patches/train.h5", "base": "results/models/base"}
    if strategy(wildcards) == "morphology":
        inputs["clusters"] = "results/morphology/clusters.tsv"
    if strategy(wildcards) == "report":
        if config["reports"]["path"]:
            inputs["summaries"] = "results/reports/summaries.tsv"
        if config["prompts"]["patch_scores"]:
            inputs["patch_scores"] = config["prompts"]["patch_scores"]
    return inputs


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
        *expand("results/synthetic/{experiment}/filtered_grid.png", experiment=EXPERIMENTS),
        "results/report/index.html",
    ]
    if uses_strategy("morphology"):
        outputs += ["results/morphology/k_sweep.png", "results/morphology/cluster_examples.png"]
    if config["reports"]["path"]:
        outputs.append("results/reports/summaries.tsv")
    return outputs
