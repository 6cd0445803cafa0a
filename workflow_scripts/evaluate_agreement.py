from _common import run
from histosynth.evaluation.evaluate import evaluate_agreement


def main(sm):
    evaluate_agreement({"raw": sm.input.raw, "filtered": sm.input.filtered}, sm.input.classifier, sm.params.device,
                       sm.output.agreement, sm.wildcards.experiment)


run(snakemake, main)  # noqa: F821
