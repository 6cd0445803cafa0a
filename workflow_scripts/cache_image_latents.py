from _common import run
from histosynth.diffusion.latents import cache_image_latents


def main(sm):
    cache_image_latents(
        patch_h5=sm.input.patches,
        base_dir=sm.input.base,
        out_h5=sm.output.latents,
        resolution=sm.params.resolution,
        random_flip=sm.params.random_flip,
        vertical_flip=sm.params.vertical_flip,
        crop=sm.params.crop,
        device=sm.params.device,
    )


run(snakemake, main)  # noqa: F821
