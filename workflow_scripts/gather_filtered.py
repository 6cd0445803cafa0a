import json

import pandas as pd
from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.filtering import gather_filtered


def main(sm):
    tables = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in sm.input.acceptance]
    summary = gather_filtered(list(sm.input.shards), tables, sm.output.filtered, sm.output.acceptance, sm.output.plot,
                              sm.output.grid, sm.params.filter)
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))


run(snakemake, main)  # noqa: F821
