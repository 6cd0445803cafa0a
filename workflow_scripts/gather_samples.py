import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.sample import gather_samples


def main(sm):
    summary = gather_samples(shard_h5s=list(sm.input.shards), out_h5=sm.output.raw, grid_png=sm.output.grid)
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


run(snakemake, main)  # noqa: F821
