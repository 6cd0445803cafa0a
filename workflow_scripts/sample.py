import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.sample import sample


def main(sm):
    summary = sample(sm.input.base, sm.input.model, sm.input.prompts, sm.input.patches, sm.output.raw, sm.output.grid,
                     sm.params.sample, sm.params.resolution, sm.wildcards.experiment)
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


run(snakemake, main)  # noqa: F821
