from _common import run
from histosynth.evaluation.evaluate import evaluate_generation


def main(sm):
    evaluate_generation(
        sets={"raw": sm.input.raw, "filtered": sm.input.filtered},
        reference_h5=sm.input.reference,
        cfg=sm.params.evaluation,
        model_dir=sm.input.get("model"),
        pooling=sm.params.pooling,
        outputs=dict(sm.output.items()),
        experiment=sm.wildcards.experiment,
    )


run(snakemake, main)  # noqa: F821
