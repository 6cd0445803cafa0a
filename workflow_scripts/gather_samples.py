import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.sample import gather_samples


def main(sm):
    summary = gather_samples(list(sm.input.shards), sm.output.raw, sm.output.grid)
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


run(snakemake, main)  # noqa: F821
