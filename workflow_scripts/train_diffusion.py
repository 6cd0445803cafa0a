import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.launch import launch_fine_tune


def main(sm):
    # one process here, or train.num_processes through accelerate launch
    summary = launch_fine_tune(sm.input.latents, sm.input.base, sm.output.model, sm.output.loss, sm.output.curve,
                               sm.output.validation, sm.params.checkpoints, sm.params.train, threads=sm.threads)
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


run(snakemake, main)  # noqa: F821
