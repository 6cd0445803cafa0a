from _common import run
from histosynth.evaluation.evaluate import evaluate_downstream


def main(sm):
    real = {"train": sm.input.train, "val": sm.input.val, "test": sm.input.test}
    evaluate_downstream(sm.input.synthetic, real, sm.params.evaluation, sm.params.classifier, sm.params.image_size,
                        sm.input.real_metrics, sm.output.models, sm.output.downstream, sm.wildcards.experiment)


run(snakemake, main)  # noqa: F821
