from _common import run
from histosynth.classifier import train_classifier


def main(sm):
    train_classifier(
        train_h5=sm.input.train,
        val_h5=sm.input.val,
        test_h5=sm.input.test,
        out_dir=sm.output.model,
        metrics_json=sm.output.metrics,
        cfg=sm.params.classifier,
        image_size=sm.params.image_size,
        field_px=sm.params.field_px,
    )


run(snakemake, main)  # noqa: F821
