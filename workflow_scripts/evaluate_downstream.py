from _common import run
from histosynth.evaluation.evaluate import evaluate_downstream


def main(sm):
    evaluate_downstream(
        synthetic_h5=sm.input.synthetic,
        real={"train": sm.input.train, "val": sm.input.val, "test": sm.input.test},
        cfg=sm.params.evaluation,
        classifier_cfg=sm.params.classifier,
        image_size=sm.params.image_size,
        real_metrics_json=sm.input.real_metrics,
        models_dir=sm.output.models,
        out_json=sm.output.downstream,
        experiment=sm.wildcards.experiment,
        field_px=sm.params.field_px,
        synthetic_field=sm.params.synthetic_field,
    )


run(snakemake, main)  # noqa: F821
