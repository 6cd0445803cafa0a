from _common import run
from histosynth.diffusion.latents import cache_prompt_latents


def main(sm):
    cache_prompt_latents(sm.input.images, sm.input.prompts, sm.input.base, sm.output.latents, device=sm.params.device)


run(snakemake, main)  # noqa: F821
