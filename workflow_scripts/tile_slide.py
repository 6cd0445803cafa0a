from _common import run
from histosynth.tiling import TilingParams, tile_slide


def main(sm):
    tile_slide(
        slide_path=sm.input.slide,
        slide_id=sm.wildcards.slide,
        case_id=sm.params.case_id,
        out_h5=sm.output.patches,
        out_thumbnail=sm.output.thumbnail,
        tiling=TilingParams.from_config({**sm.params.tiling, "batch_size": sm.resources.batch_size}),
        sample_label=sm.params.label,
        threads=sm.threads,
        qc=sm.params.qc,
    )


run(snakemake, main)  # noqa: F821
