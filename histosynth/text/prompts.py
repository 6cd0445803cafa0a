"""``build_prompts``: one conditioning prompt per training patch, by strategy.

- ``label``: "Histology image of {label} tissue" (Osorio et al.'s baseline).
- ``morphology``: "... tissue, morphology type {cluster}" with the k-means cluster written in words.
- ``report``: PathLDM's "{low|high} tumor; {low|high} til; {summary}" — the level parts only when
  per-patch tumour / TIL scores are given; patches whose case has no usable summary fall back to
  the label prompt (counted and logged).
- ``class_description``: "a histopathological image of an area with {description}" (LoRA paper).

Every prompt is tokenized with the base model's tokenizer: prompts over its limit are counted,
flagged and logged, never truncated silently.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..errors import InputError
from ..patchfile import PatchFile

log = logging.getLogger(__name__)
STRATEGIES = ("label", "morphology", "report", "class_description")

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


def pathldm_levels(tumor: float, til: float) -> str:
    """PathLDM's prefix: level = int(p * 2) -> low (0) / high (1, 2)."""
    return f"{'high' if int(tumor * 2) else 'low'} tumor; {'high' if int(til * 2) else 'low'} til; "


def build_prompts(strategy: str, patch_h5, cfg: dict, count_tokens: Callable[[str], int], max_tokens: int,
                  clusters_tsv=None, summaries_tsv=None, out_tsv=None, out_freq=None) -> pd.DataFrame:
    """Prompts for every patch of ``patch_h5`` (the training split): index, label, prompt, fallback, n_tokens, truncated."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown prompt strategy {strategy!r}; choose one of {STRATEGIES}")
    with PatchFile(patch_h5) as pf:
        labels, names, cases = pf.labels, pf.label_names, pf.case_ids
    n = len(labels)
    if (labels < 0).any():
        raise InputError(f"{patch_h5}: {(labels < 0).sum()} unlabelled patch(es); prompts need a label for every patch")
    texts = [label_text(names[lab], cfg) for lab in labels]
    label_prompts = [cfg["label_template"].format(label=t) for t in texts] if "label_template" in cfg else []
    fallback = np.zeros(n, bool)
    if strategy == "label":
        prompts = label_prompts
    elif strategy == "class_description":
        prompts = [cfg["class_description_template"].format(description=cfg["class_descriptions"].get(names[lab], t))
                   for lab, t in zip(labels, texts)]
    elif strategy == "morphology":
        cl = pd.read_csv(clusters_tsv, sep="\t")
        cl = cl[cl["split"] == "train"].set_index("index")["cluster"]
        if len(cl) != n or not np.array_equal(np.sort(cl.index.to_numpy()), np.arange(n)):
            raise InputError(f"{clusters_tsv}: cluster assignments cover {len(cl)} training patches, {patch_h5} has {n}; rerun cluster_morphology")
        prompts = [cfg["morphology_template"].format(label=t, cluster=number_words(int(cl[i]))) for i, t in enumerate(texts)]
    else:  # report
        summaries = {}
        if summaries_tsv is not None:
            s = pd.read_csv(summaries_tsv, sep="\t", dtype=str, keep_default_na=False)
            summaries = {c: t for c, t in zip(s["case_id"], s["summary"]) if t.strip()}
        levels = [""] * n
        if cfg["patch_scores"]:
            sc = pd.read_csv(cfg["patch_scores"], sep="\t").set_index("index")
            missing = sorted(set(range(n)) - set(sc.index))
            if missing:
                raise InputError(f"prompts.patch_scores {cfg['patch_scores']}: no scores for {len(missing)} patch(es), e.g. index {missing[:5]}")
            levels = [pathldm_levels(sc.at[i, "tumor"], sc.at[i, "til"]) for i in range(n)]
        prompts = []
        for i, case in enumerate(cases):
            if case in summaries:
                prompts.append(cfg["report_template"].format(levels=levels[i], summary=summaries[case]))
            else:
                prompts.append(label_prompts[i])
                fallback[i] = True
        if fallback.any():
            missing_cases = sorted({cases[i] for i in np.flatnonzero(fallback)})
            log.warning("prompts: %d of %d patches (%d cases, e.g. %s) have no report summary; they use the label prompt",
                        fallback.sum(), n, len(missing_cases), missing_cases[:5])
    n_tokens = np.array([count_tokens(p) for p in prompts])
    truncated = n_tokens > max_tokens
    if truncated.any():
        log.warning("prompts: %d of %d prompts exceed the text encoder's %d tokens and would be truncated, e.g. %r",
                    truncated.sum(), n, max_tokens, prompts[int(np.flatnonzero(truncated)[0])])
    df = pd.DataFrame({"index": np.arange(n), "label": labels, "label_name": [names[lab] for lab in labels], "prompt": prompts,
                       "fallback": fallback, "n_tokens": n_tokens, "truncated": truncated})
    freq = df.groupby(["prompt", "label_name"]).size().rename("count").reset_index().sort_values("count", ascending=False)
    log.info("prompts (%s): %d patches, %d distinct prompts, %d fallbacks, %d over %d tokens", strategy, n, len(freq),
             fallback.sum(), truncated.sum(), max_tokens)
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
