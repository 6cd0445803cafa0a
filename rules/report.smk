# The report: one self-contained HTML page comparing every experiment.


rule report:
    input:
        evaluations=expand(
            "results/eval/{experiment}/{metric}.json",
            experiment=EXPERIMENTS,
            metric=["fid", "fd_embedding", "kid", "prdc", "classifier_agreement", "downstream"],
        ),
        coverage=expand("results/eval/{experiment}/coverage.png", experiment=EXPERIMENTS),
        grids=expand("results/synthetic/{experiment}/filtered_grid.png", experiment=EXPERIMENTS),
        curves=expand("results/models/{experiment}/loss.png", experiment=EXPERIMENTS),
        prompts=expand("results/prompts/{experiment}.freq.tsv", experiment=EXPERIMENTS),
        classifier="results/classifier/metrics.json",
        examples="results/patches/examples.png",
        thumbnails=tile_thumbnails(),
    output:
        html="results/report/index.html",
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    params:
        config=config,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/report.py"
