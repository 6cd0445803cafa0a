from _common import run
from histosynth.evaluation.evaluate import train_judge


def main(sm):
    train_judge(
        train_h5=sm.input.train,
        val_h5=sm.input.val,
        test_h5=sm.input.test,
        out_dir=sm.output.model,
        metrics_json=sm.output.metrics,
        classifier_cfg=sm.params.classifier,
        cfg=sm.params.evaluation,
        image_size=sm.params.image_size,
        field_px=sm.params.field_px,
    )


run(snakemake, main)  # noqa: F821
