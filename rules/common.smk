# Config validation, the slide sheet, wildcard constraints and input functions.
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
    load_slides,
    validate_config,
)
from histosynth.qc import active_settings
from histosynth.text.prompts import strategy_inputs, strategy_settings
from histosynth.importers import resamples
from histosynth.evaluation.features import REFERENCE_FILE, field_px, reference_field

CONFIG_FILES = [str(f) for f in workflow.overwrite_configfiles] or [DEMO_CONFIG]
# schema check + defaults; an unknown or mistyped key stops here, naming the key and its file
validate_config(config, config_sources(CONFIG_FILES, dict(workflow.config_settings.config)))
if workflow.is_main_process:  # once per run, not again in every cluster job
    logger.info(config_summary(config, CONFIG_FILES))
SLIDES = load_slides(config["slides"])
DATASETS = {d["name"]: d for d in config["patch_datasets"]}
check_output_names(SLIDES, config)
SPLITS = ["train", "val", "test"]
EXPERIMENTS = config["experiments"]


def _alternation(names):
    return "|".join(re.escape(n) for n in names) if names else r"(?!x)x"


wildcard_constraints:
    slide=_alternation(list(SLIDES["slide_id"])),
    dataset=_alternation(list(DATASETS)),
    demo_slide=r"demo_\d+",
    split="|".join(SPLITS),
    experiment=_alternation(list(EXPERIMENTS)),
    kind="inception|backbone|classifier",
    field=r"whole|\d+px",


def slide_path(wildcards):
    return SLIDES.loc[wildcards.slide, "slide_path"]


def slide_cell(slide, column):
    """One slide-sheet cell as text (None when empty)."""
    value = SLIDES.loc[slide, column]
    return None if pd.isna(value) else str(value)


def slide_value(column):
    """Input function returning one slide-sheet cell (None when empty)."""
    return lambda wildcards: slide_cell(wildcards.slide, column)


def tile_files():
    """Every per-slide and per-dataset patch file, in a stable order."""
    names = sorted(SLIDES["slide_id"]) + sorted(DATASETS)
    return [f"results/slide_patches/{n}.h5" for n in names]


def tile_thumbnails():
    return [f"results/slide_patches/{s}.thumbnail.png" for s in sorted(SLIDES["slide_id"])]


def slide_batches():
    """The slides tiled together by one job (tiling.slides_per_job > 1), in slide-sheet order so that a
    slide added at the end changes only the last batch; empty when every slide is its own job."""
    n = config["tiling"]["slides_per_job"]
    ids = list(SLIDES["slide_id"])
    return [ids[i : i + n] for i in range(0, len(ids), n)] if n > 1 else []


def single_slide_jobs():
    """tile_slide's wildcard constraint: every slide, or none when the slides are tiled in batches"""
    return _alternation([] if config["tiling"]["slides_per_job"] > 1 else list(SLIDES["slide_id"]))


def tiling_params():
    """tiling settings that change a slide's patches: batch_size only trades memory for speed (it travels
    as a resource), and slides_per_job only bundles jobs"""
    return {k: v for k, v in config["tiling"].items() if k not in ("batch_size", "slides_per_job")}


def tiling_scores():
    """per-patch tumour / TIL scores of tiling.labels.method scores: replacing them re-tiles"""
    labels = config["tiling"]["labels"]
    return [labels["scores"]] if labels["method"] == "scores" else []


def tile_thumbnail(path, slide):
    """A slide's tiling preview as a report item (the per-slide and the batch tiling rules)"""
    return report(
        path,
        caption="../report/tile_thumbnail.rst",
        category="1. Data",
        subcategory="Tiling",
        labels={"slide": slide},
    )


def qc_settings():
    """The QC steps that are switched on (tiling and import); an inactive step's settings trigger no rerun."""
    return active_settings(config["qc"])


def stain_reference(wildcards):
    """The stain-normalisation reference image is an input: replacing it re-tiles."""
    stain = qc_settings()["stain"]
    return stain["reference"] if stain["activate"] and stain["reference"] else []


# base model: prepare_base_model writes BASE_SOURCE; for base_model: tiny that is the random model, which
# rule pretrain_base teaches the training patches and writes to BASE (hub models are BASE themselves)
BASE = "results/models/base"
BASE_SOURCE = "results/models/base_untrained" if config["base_model"] == "tiny" else BASE


def pretrain_prompt_settings():
    """The prompts settings pretraining reads: the label strategy's, none for empty prompts."""
    return strategy_settings("label", config["prompts"]) if config["pretrain"]["prompts"] == "label" else {}


def strategy(wildcards):
    return EXPERIMENTS[wildcards.experiment]["prompts"]


def prompt_params(wildcards):
    """The prompts settings the experiment's strategy reads (declared with the strategy in the package)."""
    return strategy_settings(strategy(wildcards), config["prompts"])


def prompt_inputs(wildcards):
    # only the tokenizer is read, the same before and after pretraining: prompts need not wait for it
    inputs = {"patches": "results/splits/train.h5", "base": BASE_SOURCE}
    return inputs | strategy_inputs(strategy(wildcards), config)


def train_settings(wildcards):
    return experiment_settings(config, wildcards.experiment, "train")


def sampling_settings(wildcards):
    return experiment_settings(config, wildcards.experiment, "sampling")


def resolution(wildcards):
    """Training and sampling image size: train.crop (PathLDM's random crops), else train.resolution, else the patch size."""
    train = train_settings(wildcards)
    return train["crop"] or train["resolution"] or config["tiling"]["patch_size"]


def classifier_field():
    """The field of view (px) every classifier is trained and scores at: the global train.crop, None = whole patches
    (one filter classifier and one judge serve all experiments; an experiment's own crop gets a warning)."""
    return config["train"]["crop"]


def synthetic_field(wildcards):
    """The field of view (px) of an experiment's synthetic images: its own train.crop (None: whole patches)."""
    return train_settings(wildcards)["crop"]


def evaluation_settings(*keys):
    """Only the evaluation settings a rule reads, so an unrelated change does not rerun it."""
    return {k: config["evaluation"][k] for k in keys}


FEATURES = config["evaluation"]["feature_extractor"]
JUDGE = "results/eval/judge/model"


# the embedding backbone's folder: prepare_embedder's, or for "classifier" the trained ResNet-18 itself
EMBEDDER = "results/classifier/model" if config["embedding"]["backbone"] == "classifier" else "results/models/embedder"


def metric_backbone():
    """Folder of the network behind feature_extractor: backbone (the embedding one unless another is named)."""
    if config["evaluation"]["backbone"] == "embedding":
        return EMBEDDER
    return "results/models/metric_backbone"


def feature_model(wildcards):
    """What an extractor loads (the configured one, or the {kind} wildcard's): a model folder or clean-fid's weights file."""
    kind = getattr(wildcards, "kind", FEATURES)
    if kind == "backbone":
        return {"model": metric_backbone()}
    if kind == "classifier":
        return {"model": JUDGE}
    return {"weights": config["evaluation"]["inception_weights"]} if config["evaluation"]["inception_weights"] else {}


def reference_features_file(wildcards):
    """The real reference over the experiment's synthetic field of view: the whole patch, or its train.crop."""
    return REFERENCE_FILE.format(kind=FEATURES, field=reference_field(train_settings(wildcards)))


GENERATION_METRICS = ["fd", "kid", "prdc"]
EXPERIMENT_METRICS = GENERATION_METRICS + ["agreement", "downstream"]


def report_inputs(wildcards):
    """Every file the HTML report shows, per experiment (lists in EXPERIMENTS order) and global."""

    def per_exp(pattern):
        return [pattern.format(experiment=e) for e in EXPERIMENTS]

    inputs = {m: per_exp(f"results/eval/{{experiment}}/{m}.json") for m in EXPERIMENT_METRICS}
    inputs.update(
        coverage=per_exp("results/eval/{experiment}/coverage.png"),
        raw=per_exp("results/synthetic/{experiment}/raw.h5"),
        filtered=per_exp("results/synthetic/{experiment}/filtered.h5"),
        raw_grid=per_exp("results/synthetic/{experiment}/raw_grid.png"),
        filtered_grid=per_exp("results/synthetic/{experiment}/filtered_grid.png"),
        acceptance=per_exp("results/synthetic/{experiment}/acceptance.tsv"),
        acceptance_plot=per_exp("results/synthetic/{experiment}/acceptance.png"),
        filter_summary=per_exp("results/synthetic/{experiment}/filter_summary.json"),
        loss_curve=per_exp("results/models/{experiment}/loss.png"),
        validation=per_exp("results/models/{experiment}/validation"),
        prompt_frequencies=per_exp("results/prompts/{experiment}.freq.tsv"),
        classifier="results/classifier/metrics.json",
        judge="results/eval/judge/metrics.json",
        real=f"results/splits/{config['evaluation']['reference_split']}.h5",
        split_examples="results/splits/examples.png",
        split_summary="results/splits/summary.tsv",
        thumbnails=tile_thumbnails(),
        summaries=["results/pathology_reports/summaries.tsv"] if config["pathology_reports"]["path"] else [],
        morphology=(
            ["results/morphology/k_sweep.png", "results/morphology/cluster_examples.png"]
            if uses_strategy("morphology")
            else []
        ),
    )
    return inputs


def uses_strategy(name):
    return any(e["prompts"] == name for e in EXPERIMENTS.values())


def final_outputs():
    outputs = [
        *tile_thumbnails(),
        "results/splits/train.h5",
        "results/splits/val.h5",
        "results/splits/test.h5",
        "results/splits/summary.tsv",
        "results/splits/examples.png",
        *expand("results/prompts/{experiment}.freq.tsv", experiment=EXPERIMENTS),
        "results/classifier/metrics.json",
        *expand("results/models/{experiment}/loss.png", experiment=EXPERIMENTS),
        *expand("results/models/{experiment}/README.md", experiment=EXPERIMENTS),  # model cards
        *expand("results/synthetic/{experiment}/filtered_grid.png", experiment=EXPERIMENTS),
        "results/html_report/index.html",
    ]
    if uses_strategy("morphology"):
        outputs += ["results/morphology/k_sweep.png", "results/morphology/cluster_examples.png"]
    if config["pathology_reports"]["path"]:
        outputs.append("results/pathology_reports/summaries.tsv")
    return outputs


# ----- diffusion (rules/diffusion.smk) -----

IMAGE_VIEWS = {(False, False): "noflip", (True, False): "flip", (False, True): "vflip", (True, True): "hvflip"}


def image_latents(wildcards):
    """The shared image-latent file an experiment's cache refers to: one per resolution, flip setting and
    crop (PathLDM's per-step crops need the whole patch's latent)."""
    train = train_settings(wildcards)
    views = IMAGE_VIEWS[(bool(train["random_flip"]), bool(train["vertical_flip"]))]
    crop = "_crop" if train["crop"] else ""
    return f"results/latents/images/train_{resolution(wildcards)}px_{views}{crop}.h5"


def sampling_params(wildcards):
    """What the images depend on: the sample settings without the shard count."""
    return {k: v for k, v in sampling_settings(wildcards).items() if k != "shards"}


def shard_files(pattern):
    """One file per shard of the experiment's sampling.shards."""
    return lambda wc: [
        pattern.format(experiment=wc.experiment, shard=k) for k in range(sampling_settings(wc)["shards"])
    ]
