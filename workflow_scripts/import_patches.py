from _common import run
from histosynth.importers import import_patches


def main(sm):
    import_patches(
        dataset=sm.params.dataset,
        out_h5=sm.output.patches,
        patch_size=sm.params.patch_size,
        target_mpp=sm.params.target_mpp,
        qc=sm.params.qc,
    )


run(snakemake, main)  # noqa: F821
