import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.launch import launch_fine_tune


def main(sm):
    # one process here, or train.num_processes through accelerate launch
    summary = launch_fine_tune(
        latents_h5=sm.input.latents,
        base_dir=sm.input.base,
        out_dir=sm.output.model,
        loss_tsv=sm.output.loss,
        curve_png=sm.output.curve,
        validation_dir=sm.output.validation,
        checkpoint_root=sm.params.checkpoints,
        cfg=sm.params.train,
        threads=sm.threads,
    )
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


run(snakemake, main)  # noqa: F821
