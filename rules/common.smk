# Config validation, the sample sheet, wildcard constraints and input functions.
import re
import sys

sys.path.insert(0, workflow.basedir)  # the package is importable even when not pip-installed

from histosynth.config import (
    check_output_names,
    load_samples,
    sample_label_names,
    validate_config,
)


validate_config(config)  # schema check + defaults; unknown or mistyped keys stop here
SAMPLES = load_samples(config["samples"])
DATASETS = {d["name"]: d for d in config["patch_datasets"]}
check_output_names(SAMPLES, config)
SLIDE_LABELS = sample_label_names(SAMPLES)


def _alternation(names):
    return "|".join(re.escape(n) for n in names) if names else r"(?!x)x"


wildcard_constraints:
    slide=_alternation(list(SAMPLES["slide_id"])),
    dataset=_alternation(list(DATASETS)),
    demo_slide=r"demo_\d+",


def slide_path(wildcards):
    return SAMPLES.loc[wildcards.slide, "slide_path"]


def slide_value(column):
    """Input function returning one sample-sheet cell (None when empty)."""

    def get(wildcards):
        value = SAMPLES.loc[wildcards.slide, column]
        return None if value is None or value != value else str(value)

    return get


def tile_files():
    """Every per-slide and per-dataset patch file, in a stable order."""
    names = sorted(SAMPLES["slide_id"]) + sorted(DATASETS)
    return [f"results/tiles/{n}.h5" for n in names]


def tile_thumbnails():
    return [f"results/tiles/{s}.thumbnail.png" for s in sorted(SAMPLES["slide_id"])]


def final_outputs():
    return [
        *tile_thumbnails(),
        "results/patches/train.h5",
        "results/patches/val.h5",
        "results/patches/test.h5",
        "results/patches/summary.tsv",
        "results/patches/examples.png",
    ]
