from _common import run
from histosynth.demo import make_demo_slide


def main(sm):
    make_demo_slide(path=sm.output.slide, variant=sm.params.variant, size=sm.params.size)


run(snakemake, main)  # noqa: F821
