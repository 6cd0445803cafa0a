from _common import run
from histosynth.models.base_model import prepare_base_model


def main(sm):
    prepare_base_model(name=sm.params.name, out_dir=sm.output.model)


run(snakemake, main)  # noqa: F821
