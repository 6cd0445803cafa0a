from _common import run
from histosynth.plots import label_examples_grid
from histosynth.split import split_patches


def main(sm):
    p = sm.params.split
    split_patches(
        inputs=list(sm.input.tiles),
        outputs={s: sm.output[s] for s in ("train", "val", "test")},
        manifest=sm.output.manifest,
        summary=sm.output.summary,
        val=p["val"],
        test=p["test"],
        seed=p["seed"],
        group_by=p["group_by"],
    )
    label_examples_grid(patch_h5=sm.output.train, out_png=sm.output.examples, per_label=8, seed=p["seed"])


run(snakemake, main)  # noqa: F821
