from _common import run
from histosynth.diffusion.sample import sample


def main(sm):
    sample(
        base_dir=sm.input.base,
        model_dir=sm.input.model,
        prompts_tsv=sm.input.prompts,
        train_h5=sm.input.patches,
        out_h5=sm.output.raw,
        grid_png=None,  # the gathered set's grid is drawn by gather_samples
        cfg=sm.params.sampling,
        resolution=sm.params.resolution,
        experiment=sm.wildcards.experiment,
        shard=int(sm.wildcards.shard),
        shards=sm.params.shards,
    )


run(snakemake, main)  # noqa: F821
