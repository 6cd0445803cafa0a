from _common import run
from histosynth.diffusion.latents import cache_latents


def main(sm):
    cache_latents(sm.input.patches, sm.input.prompts, sm.input.base, sm.output.latents, resolution=sm.params.resolution,
                  random_flip=sm.params.random_flip, device=sm.params.device, vertical_flip=sm.params.vertical_flip,
                  crop=sm.params.crop, text_chunks=sm.params.text_chunks)


run(snakemake, main)  # noqa: F821
