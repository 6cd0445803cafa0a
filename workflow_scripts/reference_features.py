from _common import run
from histosynth.evaluation.features import reference_features


def main(sm):
    cfg = sm.params.evaluation
    reference_features(sm.input.patches, sm.output.features, sm.wildcards.kind, cfg, sm.input.get("model"), sm.params.pooling,
                       cfg["reference_split"])


run(snakemake, main)  # noqa: F821
