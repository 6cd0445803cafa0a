from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.filtering import filter_shard


def main(sm):
    table = filter_shard(sm.input.raw, sm.input.classifier, sm.input.base, sm.input.model, sm.input.patches,
                         sm.output.filtered, sm.params.filter, sm.params.sample, sm.params.resolution, sm.wildcards.experiment)
    with atomic_path(sm.output.acceptance) as tmp:
        table.to_csv(tmp, sep="\t", index=False)


run(snakemake, main)  # noqa: F821
