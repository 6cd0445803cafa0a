# Text: report summaries (cached per report) and one prompt per training patch per experiment.


rule summarize_reports:
    input:
        reports=config["pathology_reports"]["path"] or [],
        # the tokenizer only (summaries are cut to CLIP tokens): the untrained base's, as build_prompts,
        # so pretraining the tiny base (which depends on the tiles) does not redo the summaries
        base=BASE_SOURCE,
    output:
        summaries="results/pathology_reports/summaries.tsv",
    log:
        "results/logs/summarize_reports/summaries.log",
    benchmark:
        "results/benchmarks/summarize_reports/summaries.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        reports=config["pathology_reports"],
    script:
        "../workflow_scripts/summarize_reports.py"


rule build_prompts:
    input:
        unpack(prompt_inputs),
    output:
        prompts="results/prompts/{experiment}.tsv",
        frequencies=report(
            "results/prompts/{experiment}.freq.tsv",
            caption="../report/prompt_frequencies.rst",
            category="2. Prompts",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}"},
        ),
    log:
        "results/logs/build_prompts/{experiment}.log",
    benchmark:
        "results/benchmarks/build_prompts/{experiment}.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        strategy=lambda wc: config["experiments"][wc.experiment]["prompts"],
        prompts=prompt_params,
        text_chunks=lambda wc: train_settings(wc)["text_chunks"],
    script:
        "../workflow_scripts/build_prompts.py"
