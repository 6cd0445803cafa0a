"""``model_card``: a Hugging Face model card (``README.md``) next to each trained model.

It holds what diffusers' training scripts write with ``save_model_card``: YAML metadata from
``huggingface_hub.ModelCardData`` with diffusers' tags added by ``diffusers.utils.hub_utils.populate_model_card``,
then a description. Here the description covers the base model, the data, the prompts, the settings, a sample grid and
the metrics of the experiment. It is written once evaluation has finished, because the metrics exist only then.
diffusers' ``load_or_create_model_card`` is not used: it first looks for an existing card on the Hub, and the
workflow runs offline and always writes a new card.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import pandas as pd

from .atomic import atomic_path
from .diffusion.trained import META_FILE
from .errors import InputError
from .evaluation.metric_files import (
    KEY_EXTRACTOR,
    KEY_JUDGE,
    KEY_OVERALL,
    KEY_REFERENCE,
    KEY_RESULTS,
    KEY_SETS,
    KEY_WARNINGS,
    METRICS,
    read_metrics,
)

log = logging.getLogger(__name__)

# the tags diffusers' train_text_to_image_lora.py gives its cards, plus ours
TAGS = [
    "stable-diffusion",
    "stable-diffusion-diffusers",
    "text-to-image",
    "diffusers",
    "diffusers-training",
    "histopathology",
    "synthetic-data",
    "histosynth",
]
METRIC_FILES = METRICS  # the card shows every metric file
MAX_PROMPT_ROWS = 15
SETS = ("raw", "filtered")

TEMPLATE = """---
{{ card_data }}
---

<!-- Written by histosynth (rule model_card) from the files of experiment {{ experiment }}; numbers are copied from
results/eval/{{ experiment }}/*.json. -->

# {{ experiment }}: {{ "LoRA for" if method == "lora" else "fine-tuned UNet of" }} {{ base_model }}

{{ "LoRA weights" if method == "lora" else "A fully fine-tuned UNet" }} (`trained/`) for {{ base_model }}: trained on {{ n_patches }} real histopathology patches, with
prompts from the **{{ strategy }}** strategy. The images it generates are synthetic. They are meant for research on
data augmentation and on generative models, not for diagnosis.

## How to use

```python
{% if method == "lora" -%}
from diffusers import StableDiffusionPipeline

pipe = StableDiffusionPipeline.from_pretrained("{{ base_dir }}")  # the base model, as the workflow prepared it
pipe.load_lora_weights("{{ model_dir }}")
{%- else -%}
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

unet = UNet2DConditionModel.from_pretrained("{{ model_dir }}")
pipe = StableDiffusionPipeline.from_pretrained("{{ base_dir }}", unet=unet)  # the base model, as the workflow prepared it
{%- endif %}
image = pipe({{ example_prompt | tojson }}, num_inference_steps={{ sampling.steps }}, guidance_scale={{ sampling.guidance_scale }}).images[0]
```

## Sample grid

{% for name, file in grids.items() -%}
**{{ name }}**: ![{{ name }} samples of {{ experiment }}]({{ file }})

{% endfor -%}
## Evaluation

{{ metrics }}

## Training data

{{ data }}

## Prompts

{{ prompts }}

## Training settings

{{ train }}

## Sampling settings

{{ sample_table }}
"""


def _load_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"model card: cannot read {path}: {e}") from e


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _settings_table(settings: dict) -> str:
    # JSON spelling (null, true, 1e-04), as the values read in config.yaml
    return _table(
        ["setting", "value"], [[f"`{k}`", v if isinstance(v, str) else json.dumps(v)] for k, v in settings.items()]
    )


def metrics_markdown(metrics: dict[str, dict]) -> str:
    """The experiment's metric JSONs (name -> parsed document) as tables, with their warnings."""
    fd, kid, prdc, agree, down = (metrics[k] for k in METRIC_FILES)
    ex = fd[KEY_EXTRACTOR]
    fd_name = "FID" if ex.get("kind") == "inception" else "FD"
    out = [
        f"Real reference: the **{fd[KEY_REFERENCE]['split']}** split. Features: {ex.get('name', ex.get('kind'))}"
        + (" — **a random network: these distances show mechanics only**" if ex.get("random_network") else "")
        + ". Lower is better (↓) for distances; higher is better (↑) for the rest. The independent judge "
        "classifier scores agreement; per-class values are in the JSON files."
    ]
    rows, warnings = [], {}  # warning -> where it applies, so a caveat shared by every metric is listed once
    judge = agree.get(KEY_JUDGE, {}).get(KEY_SETS, {})
    for s in SETS:
        g = lambda doc, key=KEY_OVERALL: doc[KEY_SETS].get(s, {}).get(key)  # noqa: E731
        p, a = g(prdc) or {}, judge.get(s, {})
        rows.append(
            [
                s,
                g(fd, "n_real"),
                g(fd, "n_synthetic"),
                g(fd),
                g(kid),
                p.get("precision"),
                p.get("recall"),
                p.get("density"),
                p.get("coverage"),
                a.get("macro_f1"),
            ]
        )
        for name, doc in ((fd_name, fd), ("KID", kid), ("PRDC", prdc)):
            for w in g(doc, KEY_WARNINGS) or []:
                warnings.setdefault(w, []).append(f"{name} of the {s} set")
    out.append(
        _table(
            [
                "set",
                "n real",
                "n synthetic",
                f"{fd_name} ↓",
                "KID ↓",
                "precision ↑",
                "recall ↑",
                "density ↑",
                "coverage ↑",
                "judge agreement macro F1 ↑",
            ],
            rows,
        )
    )
    res = down[KEY_RESULTS]
    out.append(
        f"Downstream classifiers (ResNet-18, {down['epochs']} epochs) tested on the real test split, trained with "
        f"the **{down['synthetic_set']}** synthetic set:"
    )
    out.append(
        _table(
            ["trained on", "n train", "accuracy ↑", "macro AUC ↑", "macro F1 ↑"],
            [
                [k.replace("_", " "), r.get("n_train", "—"), r.get("accuracy"), r.get("macro_auc"), r.get("macro_f1")]
                for k, r in res.items()
            ],
        )
    )
    for w in down.get(KEY_WARNINGS, []):
        warnings.setdefault(w, []).append("downstream")
    for k, r in res.items():
        if r.get("note"):
            warnings.setdefault(r["note"], []).append(f"downstream, {k.replace('_', ' ')}")
    if warnings:
        out.append("Caveats:\n\n" + "\n".join(f"- {w} ({', '.join(where)})" for w, where in warnings.items()))
    return "\n\n".join(out)


def prompts_markdown(freq: pd.DataFrame, strategy: str, settings: dict) -> str:
    n = int(freq["count"].sum())
    shown = freq.head(MAX_PROMPT_ROWS)
    out = [f"Strategy **{strategy}**: {len(freq)} distinct prompts for {n} training patches."]
    if settings:
        out.append(_settings_table(settings))
    out.append(
        _table(["prompt", "class", "patches"], shown[["prompt", "label_name", "count"]].fillna("").values.tolist())
    )
    if len(freq) > len(shown):
        out.append(f"… and {len(freq) - len(shown)} more (results/prompts/*.freq.tsv).")
    return "\n\n".join(out)


def data_markdown(freq: pd.DataFrame, data: dict) -> str:
    per_class = (
        freq.assign(label_name=freq["label_name"].fillna("").replace("", "(unlabelled)"))
        .groupby("label_name")["count"]
        .sum()
    )
    out = [_table(["class", "training patches"], [[c, int(k)] for c, k in per_class.items()])]
    out.append(_settings_table(data))
    return "\n\n".join(out)


def _freq(path) -> pd.DataFrame:
    try:
        freq = pd.read_csv(path, sep="\t", dtype={"prompt": str, "label_name": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(f"model card: cannot read prompt frequencies {path}: {e}") from e
    missing = {"prompt", "label_name", "count"} - set(freq.columns)
    if missing:
        raise InputError(f"model card: {path} lacks column(s) {sorted(missing)}; has {list(freq.columns)}")
    return freq.sort_values("count", ascending=False, kind="stable")


def write_model_card(
    out_card: str | os.PathLike,
    *,
    experiment: str,
    model_dir: str | os.PathLike,
    base_dir: str | os.PathLike,
    train_summary: str | os.PathLike,
    prompt_frequencies: str | os.PathLike,
    grids: dict[str, tuple[str | os.PathLike, str | os.PathLike]],
    metrics: dict[str, str | os.PathLike],
    base_model: str,
    strategy: str,
    prompt_settings: dict,
    train: dict,
    sampling: dict,
    data: dict,
):
    """Write ``out_card``; ``grids`` maps a set name to (source PNG, copy beside the card) so the card is
    self-contained; ``metrics`` maps each of ``METRIC_FILES`` to its JSON. Returns the ``ModelCard``."""
    from diffusers.utils.hub_utils import populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    missing = [m for m in METRIC_FILES if m not in metrics]
    if missing:
        raise InputError(f"model card of {experiment}: metric file(s) {missing} not given")
    docs = {m: read_metrics(metrics[m]) for m in METRIC_FILES}
    summary = _load_json(train_summary)
    freq = _freq(prompt_frequencies)
    meta_file = Path(model_dir) / META_FILE
    model_meta = _load_json(meta_file) if meta_file.is_file() else {}
    method = model_meta.get("method") or train.get("method", "lora")
    source = (model_meta.get("base_model") or {}).get("source") or base_model
    # Hub metadata names a base model only when it is a Hub id, not "tiny" or a local folder
    hub_base = source if source.count("/") == 1 and not Path(source).exists() else None

    card_grids = {}
    for name, (src, dst) in grids.items():
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        card_grids[name] = Path(dst).name
    example = freq["prompt"].iloc[0] if len(freq) else ""
    train_rows = dict(train)
    card_data = ModelCardData(
        base_model=hub_base,
        library_name="diffusers",
        pipeline_tag="text-to-image",
        model_name=f"histosynth-{experiment}",
        # the Hub's gallery widget, as diffusers' LoRA script writes it for its validation images
        widget=[{"text": example, "output": {"url": card_grids[n]}} for n in card_grids][:1] or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        experiment=experiment,
        base_model=f"`{source}`",
        base_dir=str(base_dir),
        method=method,
        model_dir=str(model_dir),
        n_patches=int(freq["count"].sum()),
        strategy=strategy,
        example_prompt=example,
        sampling=sampling,
        grids=card_grids,
        metrics=metrics_markdown(docs),
        data=data_markdown(freq, data),
        prompts=prompts_markdown(freq, strategy, prompt_settings),
        train=_settings_table(train_rows) + "\n\nRun: " + ", ".join(f"{k} {_fmt(v)}" for k, v in summary.items()),
        sample_table=_settings_table(sampling),
    )
    card = populate_model_card(card, tags=TAGS + (["lora"] if method == "lora" else []))
    with atomic_path(out_card) as tmp:
        card.save(tmp)
    log.info("model card of %s: %s (%d prompts, grids %s)", experiment, out_card, len(freq), sorted(card_grids))
    return card
