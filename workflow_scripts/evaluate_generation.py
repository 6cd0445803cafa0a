from _common import run
from histosynth.evaluation.evaluate import evaluate_generation


def main(sm):
    evaluate_generation({"raw": sm.input.raw, "filtered": sm.input.filtered}, sm.input.reference, sm.params.evaluation,
                        sm.input.get("model"), sm.params.pooling, dict(sm.output.items()), sm.wildcards.experiment)


run(snakemake, main)  # noqa: F821
