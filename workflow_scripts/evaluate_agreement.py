from _common import run
from histosynth.evaluation.evaluate import evaluate_agreement, judge_description


def main(sm):
    cfg = sm.params.evaluation
    evaluate_agreement({"raw": sm.input.raw, "filtered": sm.input.filtered}, sm.input.classifier, sm.input.judge,
                       judge_description(cfg, sm.params.classifier_seed), cfg["device"], sm.output.agreement,
                       sm.wildcards.experiment)


run(snakemake, main)  # noqa: F821
