from pathlib import Path

from _common import run
from histosynth.models.clip_tokenizer import load_tokenizer
from histosynth.text.prompts import token_counter
from histosynth.text.summarize import summarize_reports


def main(sm):
    tokenizer = load_tokenizer(str(Path(sm.input.base) / "tokenizer"))
    summarize_reports(
        reports_path=sm.input.reports,
        out_tsv=sm.output.summaries,
        cfg=sm.params.reports,
        count_tokens=token_counter(tokenizer),
    )


run(snakemake, main)  # noqa: F821
