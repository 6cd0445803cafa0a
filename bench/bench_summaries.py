"""Extractive summaries vs GPT-4o-mini reference summaries on the 98 TCGA breast reports.

The same field extractor reads the full report (ours) and the reference summary (what GPT-4o-mini
kept). Per field: coverage = share of reports where the reference states the field and ours does
too; agreement = share of those where the values match (normalised: grade number, T category, node
status, the receptors both name). The reference side is read by our own extractor from fluent prose,
so part of any disagreement is the reference extraction's, not the summary's. Plus ROUGE-L F1 (Google's
rouge-score) between our one-line summary and the reference, and the extraction time.

    .venv/bin/python bench/bench_summaries.py [--data ../shared/data/reports]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from histosynth.models.clip_tokenizer import build_clip_tokenizer  # noqa: E402
from histosynth.text.extract import FIELD_ORDER, compose, extract_fields  # noqa: E402
from histosynth.text.prompts import token_counter  # noqa: E402


def norm(field: str, value: str) -> str:
    v = value.lower()
    if field == "type":
        v = v.replace("infiltrating", "invasive").replace("infiltrative", "invasive").replace(" breast", "")
        return re.sub(r"\b(multifocal|invasive)\b\s*", "", v).strip()
    if field == "grade":
        m = re.search(r"(\d)", v)
        if m:
            return m.group(1)
        return {"well differentiated": "1", "moderately differentiated": "2", "poorly differentiated": "3"}.get(v, v)
    if field == "stage":
        m = re.search(r"t(\d|is)", v)
        return m.group(1) if m else v
    if field == "size":
        return f"{float(v.split()[0]):.1f}"
    if field == "nodes":  # node status; counts differ when a summary only says "negative"
        return "positive" if "positive" in v else "negative"
    return v


def agree(field: str, ref: str, ours: str) -> bool:
    if field == "receptors":  # compare the receptors both name (a summary often names fewer)
        r = dict(re.findall(r"(er|pr|her2)\s?([+-]|equivocal)", ref.lower()))
        o = dict(re.findall(r"(er|pr|her2)\s?([+-]|equivocal)", ours.lower()))
        common = set(r) & set(o)
        return bool(common) and all(r[k] == o[k] for k in common)
    return norm(field, ref) == norm(field, ours)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "reports"))
    ap.add_argument("--json", default="results/bench/summaries.json")
    a = ap.parse_args(argv)
    from rouge_score import rouge_scorer

    reports = pd.read_csv(Path(a.data) / "pathrepbench_test.csv")
    refs = pd.read_csv(Path(a.data) / "pathrepbench_test_summaries_gpt4omini.csv")
    breast = reports.index[reports["type_name"] == "Breast invasive carcinoma"]
    with tempfile.TemporaryDirectory() as tmp:
        count = token_counter(build_clip_tokenizer(tmp))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    stats = {f: {"ref": 0, "both": 0, "agree": 0, "ours_only": 0} for f in FIELD_ORDER}
    rouge, tokens, t0 = [], [], time.perf_counter()
    for i in breast:
        ours = extract_fields(reports.at[i, "text"])
        summary, _ = compose(ours, count, 60)
        tokens.append(count(summary))
        ref_text = refs.at[i, "preds"]
        ref = extract_fields(ref_text)
        rouge.append(scorer.score(ref_text, summary)["rougeL"].fmeasure)
        for f in FIELD_ORDER:
            r, o = ref.values.get(f), ours.values.get(f)
            if r:
                stats[f]["ref"] += 1
                if o:
                    stats[f]["both"] += 1
                    stats[f]["agree"] += agree(f, r, o)
            elif o:
                stats[f]["ours_only"] += 1
    seconds = time.perf_counter() - t0
    print(f"{len(breast)} breast reports; extractive summaries: mean {sum(tokens) / len(tokens):.1f} CLIP tokens (max {max(tokens)}), "
          f"{seconds:.2f} s in all; ROUGE-L F1 vs GPT-4o-mini: {sum(rouge) / len(rouge):.3f}")
    print(f"{'field':10s} {'in ref':>7s} {'coverage':>9s} {'agreement':>10s} {'ours only':>10s}")
    rows = {}
    for f, s in stats.items():
        cov = s["both"] / s["ref"] if s["ref"] else float("nan")
        agr = s["agree"] / s["both"] if s["both"] else float("nan")
        rows[f] = {**s, "coverage": cov, "agreement": agr}
        print(f"{f:10s} {s['ref']:7d} {cov:9.2f} {agr:10.2f} {s['ours_only']:10d}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps({"n_reports": len(breast), "rougeL_f1": sum(rouge) / len(rouge),
                                        "mean_tokens": sum(tokens) / len(tokens), "seconds": seconds, "fields": rows}, indent=2))


if __name__ == "__main__":
    main()
