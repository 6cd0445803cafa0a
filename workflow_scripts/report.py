from _common import run
from histosynth.evaluation.report import build_report


def main(sm):
    build_report(sm.params.config, "results", sm.output.html)


run(snakemake, main)  # noqa: F821
