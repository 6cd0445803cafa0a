import json

from _common import run
from histosynth.atomic import atomic_path
from histosynth.models.pretrain import pretrain_base


def main(sm):
    summary = pretrain_base(
        sm.input.base,
        sm.input.patches,
        sm.output.model,
        sm.params.work,
        sm.params.pretrain,
        sm.params.prompts,
        sm.params.resolution,
    )
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))


run(snakemake, main)  # noqa: F821
