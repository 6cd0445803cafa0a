from _common import run
from histosynth.diffusion.latents import cache_prompt_latents


def main(sm):
    cache_prompt_latents(
        image_h5=sm.input.images,
        prompts_tsv=sm.input.prompts,
        base_dir=sm.input.base,
        out_h5=sm.output.latents,
        device=sm.params.device,
        text_chunks=sm.params.text_chunks,
    )


run(snakemake, main)  # noqa: F821
