from pathlib import Path

from _common import run
from histosynth.models.clip_tokenizer import load_tokenizer
from histosynth.text.prompts import build_prompts, token_counter


def main(sm):
    tokenizer = load_tokenizer(str(Path(sm.input.base) / "tokenizer"))
    build_prompts(
        strategy=sm.params.strategy,
        patch_h5=sm.input.patches,
        cfg=sm.params.prompts,
        count_tokens=token_counter(tokenizer),
        max_tokens=tokenizer.model_max_length * sm.params.text_chunks,
        inputs={name: path for name, path in sm.input.items() if name not in ("patches", "base")},
        out_tsv=sm.output.prompts,
        out_freq=sm.output.frequencies,
    )


run(snakemake, main)  # noqa: F821
