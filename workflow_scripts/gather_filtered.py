import json

import pandas as pd
from _common import run
from histosynth.atomic import atomic_path
from histosynth.diffusion.filtering import gather_filtered


def main(sm):
    tables = [pd.read_csv(p, sep="\t", keep_default_na=False) for p in sm.input.acceptance]
    summary = gather_filtered(
        shard_h5s=list(sm.input.shards),
        tables=tables,
        out_h5=sm.output.filtered,
        acceptance_tsv=sm.output.acceptance,
        plot_png=sm.output.plot,
        grid_png=sm.output.grid,
        filter_cfg=sm.params.filter,
    )
    with atomic_path(sm.output.summary) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float))


run(snakemake, main)  # noqa: F821
