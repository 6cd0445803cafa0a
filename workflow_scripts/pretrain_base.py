import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.models.pretrain import pretrain_base


def main(sm):
    summary = pretrain_base(
        untrained_dir=sm.input.base,
        patch_h5=sm.input.patches,
        out_dir=sm.output.model,
        work_root=sm.params.work,
        cfg=sm.params.pretrain,
        prompts_cfg=sm.params.prompts,
        resolution=sm.params.resolution,
    )
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))


run(snakemake, main)  # noqa: F821
