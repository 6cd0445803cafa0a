import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.filtering import filter_synthetic


def main(sm):
    summary = filter_synthetic(sm.input.raw, sm.input.classifier, sm.input.base, sm.input.model, sm.input.patches,
                               sm.output.filtered, sm.output.acceptance, sm.output.plot, sm.output.grid,
                               sm.params.filter, sm.params.sample, sm.params.resolution, sm.wildcards.experiment)
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))


run(snakemake, main)  # noqa: F821
