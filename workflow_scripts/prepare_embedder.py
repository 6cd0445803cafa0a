from _common import run
from histosynth.models.embedder import prepare_embedder


def main(sm):
    prepare_embedder(name=sm.params.backbone, out_dir=sm.output.model, image_size=sm.params.image_size)


run(snakemake, main)  # noqa: F821
