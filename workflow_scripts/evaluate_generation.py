from pathlib import Path

from _common import run
from histosynth.evaluation.evaluate import evaluate_generation


def main(sm):
    references = {Path(p).stem: p for p in sm.input.references}
    evaluate_generation({"raw": sm.input.raw, "filtered": sm.input.filtered}, references, sm.params.evaluation, sm.input.embedder,
                        sm.params.pooling, dict(sm.output.items()), sm.wildcards.experiment)


run(snakemake, main)  # noqa: F821
