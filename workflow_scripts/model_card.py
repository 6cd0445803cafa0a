from _common import run
from histosynth.model_card import METRIC_FILES, write_model_card


def main(sm):
    write_model_card(
        out_card=sm.output.card,
        experiment=sm.wildcards.experiment,
        model_dir=sm.input.model,
        base_dir=sm.input.base,
        train_summary=sm.input.train_summary,
        prompt_frequencies=sm.input.prompt_frequencies,
        grids={
            "raw": (sm.input.raw_grid, sm.output.raw_grid),
            "filtered": (sm.input.filtered_grid, sm.output.filtered_grid),
        },
        metrics={name: sm.input[name] for name in METRIC_FILES},
        base_model=sm.params.base_model,
        strategy=sm.params.strategy,
        prompt_settings=sm.params.prompt_settings,
        train=sm.params.train,
        sampling=sm.params.sampling,
        data=sm.params.data,
    )


run(snakemake, main)  # noqa: F821
