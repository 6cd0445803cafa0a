import logging

from _common import run
from histosynth.tiling import TilingParams, tile_slide

log = logging.getLogger("histosynth.rule.tile_slide")


def slides_of(sm):
    """(slide id, case id, label, slide file, patch file, thumbnail) of every slide this job tiles: its
    one slide, or a batch of them (rules tile_slides_<n>, tiling.slides_per_job)."""
    if hasattr(sm.params, "slide_ids"):
        return list(
            zip(
                sm.params.slide_ids,
                sm.params.case_ids,
                sm.params.labels,
                sm.input.slides,
                sm.output.patches,
                sm.output.thumbnails,
            )
        )
    return [
        (sm.wildcards.slide, sm.params.case_id, sm.params.label, sm.input.slide, sm.output.patches, sm.output.thumbnail)
    ]


def main(sm):
    tiling = TilingParams.from_config({**sm.params.tiling, "batch_size": sm.resources.batch_size})
    jobs = slides_of(sm)
    for n, (slide_id, case_id, label, slide, patches, thumbnail) in enumerate(jobs, 1):
        tile_slide(
            slide_path=slide,
            slide_id=slide_id,
            case_id=case_id,
            out_h5=patches,
            out_thumbnail=thumbnail,
            tiling=tiling,
            sample_label=label,
            threads=sm.threads,
            qc=sm.params.qc,
        )
        if len(jobs) > 1:
            log.info("tiled slide %d of %d: %s", n, len(jobs), slide_id)


run(snakemake, main)  # noqa: F821
