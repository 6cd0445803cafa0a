import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.filtering import filter_synthetic


def main(sm):
    summary = filter_synthetic(
        raw_h5=sm.input.raw,
        classifier_dir=sm.input.classifier,
        base_dir=sm.input.base,
        model_dir=sm.input.model,
        train_h5=sm.input.patches,
        out_h5=sm.output.filtered,
        acceptance_tsv=sm.output.acceptance,
        plot_png=sm.output.plot,
        grid_png=sm.output.grid,
        filter_cfg=sm.params.filter,
        classifier_cfg=sm.params.classifier,
        sample_cfg=sm.params.sample,
        resolution=sm.params.resolution,
        experiment=sm.wildcards.experiment,
    )
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))


run(snakemake, main)  # noqa: F821
