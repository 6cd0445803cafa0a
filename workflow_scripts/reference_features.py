from _common import run
from histosynth.evaluation.features import reference_features


def main(sm):
    cfg = sm.params.evaluation
    reference_features(
        patch_h5=sm.input.patches,
        out_h5=sm.output.features,
        kind=sm.wildcards.kind,
        cfg=cfg,
        model_dir=sm.input.get("model"),
        pooling=sm.params.pooling,
        split=cfg["reference_split"],
        field=sm.params.field_px,
    )


run(snakemake, main)  # noqa: F821
