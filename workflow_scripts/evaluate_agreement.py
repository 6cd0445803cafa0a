from _common import run
from histosynth.evaluation.evaluate import evaluate_agreement, judge_description


def main(sm):
    cfg = sm.params.evaluation
    evaluate_agreement(
        sets={"raw": sm.input.raw, "filtered": sm.input.filtered},
        filter_classifier_dir=sm.input.classifier,
        judge_dir=sm.input.judge,
        judge_note=judge_description(cfg, sm.params.classifier_seed),
        device=cfg["device"],
        out_json=sm.output.agreement,
        experiment=sm.wildcards.experiment,
        synthetic_field=sm.params.synthetic_field,
    )


run(snakemake, main)  # noqa: F821
