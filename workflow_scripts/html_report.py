from _common import run
from histosynth.evaluation.report import build_report


def main(sm):
    build_report(
        inputs=dict(sm.input.items()),
        config=sm.params.config,
        out_html=sm.output.html,
        out_metrics=sm.output.metrics,
        out_verdicts=sm.output.verdicts,
    )


run(snakemake, main)  # noqa: F821
