"""``build_prompts``: one conditioning prompt per training patch, by strategy.

Each strategy is one function registered with :func:`strategy`, which declares in one place what the
workflow needs to know about it: the ``prompts:`` config keys it reads (a change to one of them reruns
only the experiments using the strategy), the extra input files it needs (named as the rule's inputs),
and whether every patch must carry a label. The config schema's enum and ``rules/common.smk`` are
derived from :data:`STRATEGIES`, so adding a strategy is one function here and its test.

- ``label``: "Histology image of {label} tissue" (Osorio et al.'s baseline).
- ``morphology``: "... tissue, morphology type {cluster}" with the k-means cluster written in words.
- ``report``: PathLDM's "{low|high} tumor; {low|high} til; {summary}" — the level parts only when
  per-patch tumour / TIL scores are given (then a ``til_level`` column too, for TIL-aware prompt dropout); a
  template may also name the patch's ``{label}``; patches whose case has no usable summary fall back to
  the label prompt, or to the empty (unconditional) prompt when unlabelled (counted and logged).
- ``class_description``: "a histopathological image of an area with {description}" (LoRA paper).

Every prompt is tokenized with the base model's tokenizer: prompts over its limit are counted,
flagged and logged, never truncated silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..errors import InputError
from ..patchfile import UNLABELLED, PatchFile
from ..scores import lookup, read_scores

log = logging.getLogger(__name__)

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0 -> "zero", 32 -> "thirty-two", 105 -> "one hundred five" (as Osorio et al. write cluster ids)."""
    if n < 0:
        raise ValueError(n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    return str(n)


def label_text(name: str, cfg: dict) -> str:
    return cfg["label_text"].get(name, name.replace("_", " "))


def pathldm_level(p: float) -> int:
    """PathLDM's level of a score: int(p * 2), 0 = low, 1 (or 2 at p = 1) = high."""
    return int(p * 2)


def pathldm_levels(tumor: float, til: float) -> str:
    """PathLDM's prefix: low / high tumor and TIL levels."""
    return f"{'high' if pathldm_level(tumor) else 'low'} tumor; {'high' if pathldm_level(til) else 'low'} til; "


@dataclass
class PromptContext:
    """What a strategy sees: the training split's rows, the ``prompts:`` settings and its input files."""

    patch_h5: str
    labels: np.ndarray
    label_names: list[str]
    case_ids: list[str]
    cfg: dict
    inputs: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)  # extra per-patch columns a strategy adds to the prompts table

    def __len__(self) -> int:
        return len(self.labels)

    def label_text(self, i: int) -> str | None:
        """The label's words for patch ``i`` (None when the patch is unlabelled)."""
        lab = int(self.labels[i])
        return None if lab == UNLABELLED else label_text(self.label_names[lab], self.cfg)

    def label_prompt(self, i: int) -> str:
        """The label prompt for patch ``i``; the empty (unconditional) prompt when it is unlabelled."""
        text = self.label_text(i)
        return "" if text is None else self.cfg["label_template"].format(label=text)


@dataclass(frozen=True)
class PromptStrategy:
    name: str
    build: Callable[[PromptContext], tuple[list[str], np.ndarray]]  # -> prompts, fallback mask
    config_keys: tuple[str, ...]
    inputs: Callable[[dict], dict[str, str]]  # whole workflow config -> extra input files by name
    needs_labels: bool


STRATEGIES: dict[str, PromptStrategy] = {}


def strategy(
    name: str, config_keys: tuple[str, ...], inputs: Callable[[dict], dict] | None = None, needs_labels: bool = True
):
    """Register a prompt strategy: ``build(ctx) -> (prompts, fallback)``."""

    def register(build):
        STRATEGIES[name] = PromptStrategy(name, build, tuple(config_keys), inputs or (lambda config: {}), needs_labels)
        return build

    return register


def strategy_settings(name: str, prompts_cfg: dict) -> dict:
    """Only the ``prompts:`` settings the strategy reads (a rule's params)."""
    return {k: prompts_cfg[k] for k in get_strategy(name).config_keys}


def strategy_inputs(name: str, config: dict) -> dict[str, str]:
    """The extra input files a strategy needs under the whole workflow config (a rule's inputs)."""
    return get_strategy(name).inputs(config)


def get_strategy(name: str) -> PromptStrategy:
    if name not in STRATEGIES:
        raise InputError(f"unknown prompt strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]


def _no_fallback(ctx: PromptContext) -> np.ndarray:
    return np.zeros(len(ctx), bool)


@strategy("label", config_keys=("label_template", "label_text"))
def label_prompts(ctx: PromptContext):
    return [ctx.label_prompt(i) for i in range(len(ctx))], _no_fallback(ctx)


@strategy("class_description", config_keys=("label_text", "class_description_template", "class_descriptions"))
def class_description_prompts(ctx: PromptContext):
    cfg = ctx.cfg
    prompts = [
        cfg["class_description_template"].format(
            description=cfg["class_descriptions"].get(ctx.label_names[int(lab)], ctx.label_text(i))
        )
        for i, lab in enumerate(ctx.labels)
    ]
    return prompts, _no_fallback(ctx)


@strategy(
    "morphology",
    config_keys=("label_template", "label_text", "morphology_template"),
    inputs=lambda config: {"clusters": "results/morphology/clusters.tsv"},
)
def morphology_prompts(ctx: PromptContext):
    clusters_tsv = ctx.inputs["clusters"]
    cl = pd.read_csv(clusters_tsv, sep="\t")
    cl = cl[cl["split"] == "train"].set_index("index")["cluster"]
    n = len(ctx)
    if len(cl) != n or not np.array_equal(np.sort(cl.index.to_numpy()), np.arange(n)):
        raise InputError(
            f"{clusters_tsv}: cluster assignments cover {len(cl)} training patches, {ctx.patch_h5} has {n}; "
            "rerun cluster_morphology"
        )
    prompts = [
        ctx.cfg["morphology_template"].format(label=ctx.label_text(i), cluster=number_words(int(cl[i])))
        for i in range(n)
    ]
    return prompts, _no_fallback(ctx)


def _report_inputs(config: dict) -> dict:
    inputs = {}
    if config["pathology_reports"]["path"]:
        inputs["summaries"] = "results/pathology_reports/summaries.tsv"
    if config["prompts"]["patch_scores"]:
        inputs["patch_scores"] = config["prompts"]["patch_scores"]
    return inputs


@strategy(
    "report",
    config_keys=("label_template", "label_text", "report_template", "patch_scores"),
    inputs=_report_inputs,
    needs_labels=False,
)
def report_prompts(ctx: PromptContext):
    n = len(ctx)
    summaries = {}
    if ctx.inputs.get("summaries"):
        s = pd.read_csv(ctx.inputs["summaries"], sep="\t", dtype=str, keep_default_na=False)
        summaries = {c: t for c, t in zip(s["case_id"], s["summary"]) if t.strip()}
    levels = [""] * n
    scores_tsv = ctx.inputs.get("patch_scores") or ctx.cfg["patch_scores"]
    if scores_tsv:  # joined on the patch's slide and level-0 corner (histosynth.scores)
        with PatchFile(ctx.patch_h5) as pf:
            sc = lookup(read_scores(scores_tsv), pf.slide_ids, pf.coords, f"{scores_tsv} (prompts.patch_scores)")
        levels = [pathldm_levels(t, til) for t, til in zip(sc["tumor"], sc["til"])]
        # training's TIL-aware prompt dropout (train.prompt_dropout_low_til_only) reads this column
        ctx.columns["til_level"] = np.array([pathldm_level(til) for til in sc["til"]], np.int64)
    template = ctx.cfg["report_template"]
    # "{label}" in the template: the patch's own class beside its case's report (the demo's stand-in for
    # PathLDM's per-patch levels); an unlabelled patch cannot fill it
    uses_label = "{label}" in template
    if uses_label and (ctx.labels == UNLABELLED).any():
        raise InputError(
            f"{ctx.patch_h5}: {int((ctx.labels == UNLABELLED).sum())} unlabelled patch(es), but "
            f"prompts.report_template {template!r} uses {{label}}; drop it or label every patch"
        )
    prompts, fallback = [], np.zeros(n, bool)
    for i, case in enumerate(ctx.case_ids):
        if case in summaries:
            label = ctx.label_text(i) if uses_label else None
            prompts.append(template.format(levels=levels[i], summary=summaries[case], label=label))
        else:  # no summary: the label prompt, or the unconditional one for an unlabelled patch
            prompts.append(ctx.label_prompt(i))
            fallback[i] = True
    if fallback.any():
        missing_cases = sorted({ctx.case_ids[i] for i in np.flatnonzero(fallback)})
        unlabelled = int((ctx.labels[fallback] == UNLABELLED).sum())
        log.warning(
            "prompts: %d of %d patches (%d cases, e.g. %s) have no report summary; they use the label prompt "
            "(%d unlabelled ones the empty prompt)",
            fallback.sum(),
            n,
            len(missing_cases),
            missing_cases[:5],
            unlabelled,
        )
    return prompts, fallback


def build_prompts(
    strategy: str,
    patch_h5,
    cfg: dict,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    inputs: dict | None = None,
    out_tsv=None,
    out_freq=None,
) -> pd.DataFrame:
    """Prompts for every patch of ``patch_h5`` (the training split).

    ``cfg`` is the ``prompts:`` section, ``inputs`` the strategy's extra input files by name (see
    :func:`strategy_inputs`). Returns and writes (``out_tsv``) one row per patch: index, label,
    label_name, prompt, fallback, n_tokens, truncated; ``out_freq`` gets the prompt frequencies.
    """
    spec = get_strategy(strategy)
    with PatchFile(patch_h5) as pf:
        ctx = PromptContext(str(patch_h5), pf.labels, list(pf.label_names), list(pf.case_ids), cfg, dict(inputs or {}))
    n = len(ctx)
    unlabelled = int((ctx.labels == UNLABELLED).sum())
    if spec.needs_labels and unlabelled:
        raise InputError(
            f"{patch_h5}: {unlabelled} unlabelled patch(es); the {strategy!r} prompt strategy needs a label "
            "for every patch (the 'report' strategy does not)"
        )
    prompts, fallback = spec.build(ctx)
    tokens_of = {p: count_tokens(p) for p in set(prompts)}  # patches share few prompts: tokenise each once
    n_tokens = np.array([tokens_of[p] for p in prompts], np.int64)
    truncated = n_tokens > max_tokens
    if truncated.any():
        log.warning(
            "prompts: %d of %d prompts exceed the text encoder's %d tokens and would be truncated, e.g. %r",
            truncated.sum(),
            n,
            max_tokens,
            prompts[int(np.flatnonzero(truncated)[0])],
        )
    label_names = [ctx.label_names[lab] if lab != UNLABELLED else "" for lab in ctx.labels]
    df = pd.DataFrame(
        {
            "index": np.arange(n),
            "label": ctx.labels,
            "label_name": label_names,
            "prompt": prompts,
            "fallback": fallback,
            "n_tokens": n_tokens,
            "truncated": truncated,
            **ctx.columns,
        }
    )
    freq = (
        df.groupby(["prompt", "label_name"]).size().rename("count").reset_index().sort_values("count", ascending=False)
    )
    log.info(
        "prompts (%s): %d patches, %d distinct prompts, %d fallbacks, %d over %d tokens",
        strategy,
        n,
        len(freq),
        fallback.sum(),
        truncated.sum(),
        max_tokens,
    )
    for path, frame in ((out_tsv, df), (out_freq, freq)):
        if path is not None:
            with atomic_path(path) as tmp:
                frame.to_csv(tmp, sep="\t", index=False)
    return df


def token_counter(tokenizer) -> Callable[[str], int]:
    """Tokens a prompt takes in the text encoder, BOS and EOS included, without truncation."""

    def count(text: str) -> int:
        return len(tokenizer(text, truncation=False)["input_ids"])

    return count
