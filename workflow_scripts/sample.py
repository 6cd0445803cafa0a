import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.sample import sample


def main(sm):
    summary = sample(
        base_dir=sm.input.base,
        model_dir=sm.input.model,
        prompts_tsv=sm.input.prompts,
        train_h5=sm.input.patches,
        out_h5=sm.output.raw,
        grid_png=sm.output.grid,
        cfg=sm.params.sample,
        resolution=sm.params.resolution,
        experiment=sm.wildcards.experiment,
    )
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


run(snakemake, main)  # noqa: F821
