from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.filtering import filter_shard


def main(sm):
    table = filter_shard(
        raw_h5=sm.input.raw,
        classifier_dir=sm.input.classifier,
        base_dir=sm.input.base,
        model_dir=sm.input.model,
        train_h5=sm.input.patches,
        out_h5=sm.output.filtered,
        filter_cfg=sm.params.filter,
        classifier_cfg=sm.params.classifier,
        sample_cfg=sm.params.sampling,
        resolution=sm.params.resolution,
        experiment=sm.wildcards.experiment,
        synthetic_field=sm.params.synthetic_field,
    )
    with atomic_path(sm.output.acceptance) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


run(snakemake, main)  # noqa: F821
