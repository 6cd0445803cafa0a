"""Offline extractive summaries of the 98 TCGA-BRCA reports, scored against the hand-read fact table.

Summarises every breast report of ``pathrepbench_test.csv`` with the ``extractive`` backend under
the workflow's token budget (``pathology_reports.max_tokens`` CLIP tokens), writes them as a summaries TSV
(``row``, ``bcr_patient_barcode``, ``summary``, ``n_tokens``, ``status``), and scores them — and the
GPT-4o-mini references of the same reports — with ``bench/score_summaries.py`` (its own reader of
summary text, never the extractor). ``--rows`` scores a part of the table only (e.g. a held-out half).

    .venv/bin/python bench/bench_summaries.py [--data ../shared/data/reports] [--out results/bench/summaries_extractive.tsv]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))
from score_summaries import FACTS, score  # noqa: E402

from histosynth.config import default_config  # noqa: E402
from histosynth.models.clip_tokenizer import build_clip_tokenizer  # noqa: E402
from histosynth.text.prompts import token_counter  # noqa: E402
from histosynth.text.summarize import Report, summarize_extractive  # noqa: E402


def extractive_summaries(data: Path, facts: pd.DataFrame, count, max_tokens: int) -> tuple[pd.DataFrame, float]:
    reports = pd.read_csv(data / "pathrepbench_test.csv", dtype=str, keep_default_na=False)
    rows = facts["row"].astype(int).tolist()
    t0 = time.perf_counter()
    res = summarize_extractive([Report(str(r), reports.at[r, "text"]) for r in rows], count, max_tokens)
    seconds = time.perf_counter() - t0
    return pd.DataFrame(
        [
            {
                "row": r,
                "bcr_patient_barcode": reports.at[r, "bcr_patient_barcode"],
                "summary": res[str(r)][0],
                "n_tokens": count(res[str(r)][0]),
                "status": res[str(r)][1],
            }
            for r in rows
        ]
    ), seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(BENCH.parents[1] / "shared" / "data" / "reports"))
    ap.add_argument("--facts", default=str(FACTS))
    ap.add_argument("--out", default="results/bench/summaries_extractive.tsv")
    ap.add_argument("--rows", help="score only fact-table entries start:stop")
    ap.add_argument("--json", default="results/bench/summaries.json")
    a = ap.parse_args(argv)
    data = Path(a.data)
    if not (data / "pathrepbench_test.csv").is_file():
        print(f"skipped: {data / 'pathrepbench_test.csv'} not found (../shared/data is not here; name it with --data)")
        return
    facts = pd.read_csv(a.facts, sep="\t", dtype=str, keep_default_na=False)
    if a.rows:
        start, stop = (int(x) if x else None for x in a.rows.split(":"))
        facts = facts.iloc[start:stop]
    max_tokens = default_config()["pathology_reports"]["max_tokens"]
    with tempfile.TemporaryDirectory() as tmp:
        count = token_counter(build_clip_tokenizer(tmp))
    ours, seconds = extractive_summaries(data, facts, count, max_tokens)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    ours.to_csv(a.out, sep="\t", index=False)
    refs = pd.read_csv(data / "pathrepbench_test_summaries_gpt4omini.csv", dtype=str, keep_default_na=False)
    ref_text = dict(zip(refs["slno"], refs["preds"]))
    tables = {
        "extractive": score(pd.Series(ours["summary"].tolist(), index=facts.index), facts)[0],
        "gpt-4o-mini": score(pd.Series([ref_text.get(r, "") for r in facts["row"]], index=facts.index), facts)[0],
    }
    ref_tokens = [count(ref_text.get(r, "")) for r in facts["row"]]
    print(
        f"{len(facts)} reports; extractive: {seconds:.2f} s, mean {ours.n_tokens.mean():.1f} CLIP tokens (max {ours.n_tokens.max()}, "
        f"budget {max_tokens}), status {ours.status.value_counts().to_dict()}; GPT-4o-mini: mean {sum(ref_tokens) / len(ref_tokens):.0f} tokens"
    )
    print(
        f"{'field':16s}{'known':>6s} | {'extractive right/wrong/n.s. %':>30s} | {'GPT-4o-mini right/wrong/n.s. %':>30s}"
    )
    for f in tables["extractive"].index:
        cells = [
            f"{t.at[f, 'right %']:8.1f} {t.at[f, 'wrong %']:6.1f} {t.at[f, 'not stated %']:6.1f} ({int(t.at[f, 'unsupported'])})"
            for t in tables.values()
        ]
        print(f"{f:16s}{int(tables['extractive'].at[f, 'known']):6d} | {cells[0]:>30s} | {cells[1]:>30s}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(
        json.dumps(
            {
                "n_reports": len(facts),
                "seconds": seconds,
                "mean_tokens": float(ours.n_tokens.mean()),
                "max_tokens": int(ours.n_tokens.max()),
                "budget": max_tokens,
                **{k: t.reset_index().to_dict(orient="records") for k, t in tables.items()},
            },
            indent=2,
            default=float,
        )
    )


if __name__ == "__main__":
    main()
