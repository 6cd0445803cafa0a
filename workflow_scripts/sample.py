from _common import run
from histosynth.diffusion.sample import sample


def main(sm):
    sample(sm.input.base, sm.input.model, sm.input.prompts, sm.input.patches, sm.output.raw, None, sm.params.sample,
           sm.params.resolution, sm.wildcards.experiment, shard=int(sm.wildcards.shard), shards=sm.params.shards)


run(snakemake, main)  # noqa: F821
