from _common import run
from histosynth.evaluation.evaluate import train_judge


def main(sm):
    train_judge(sm.input.train, sm.input.val, sm.input.test, sm.output.model, sm.output.metrics, sm.params.classifier,
                sm.params.evaluation, sm.params.image_size)


run(snakemake, main)  # noqa: F821
