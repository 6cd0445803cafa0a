from _common import run
from histosynth.classifier import train_classifier


def main(sm):
    train_classifier(sm.input.train, sm.input.val, sm.input.test, sm.output.model, sm.output.metrics,
                     sm.params.classifier, sm.params.image_size)


run(snakemake, main)  # noqa: F821
