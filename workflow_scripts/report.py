from _common import run
from histosynth.evaluation.report import build_report


def main(sm):
    build_report(dict(sm.input.items()), sm.params.config, sm.output.html, sm.output.metrics, sm.output.verdicts)


run(snakemake, main)  # noqa: F821
