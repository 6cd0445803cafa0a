from _common import run
from histosynth.diffusion.latents import cache_image_latents


def main(sm):
    cache_image_latents(sm.input.patches, sm.input.base, sm.output.latents, resolution=sm.params.resolution,
                        random_flip=sm.params.random_flip, device=sm.params.device)


run(snakemake, main)  # noqa: F821
