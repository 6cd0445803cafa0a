# Model card: a README.md next to each trained model, written once its experiment is evaluated.
# Inputs are taken from the producing rules' outputs (rules.<name>.output.<key>), so the paths live where they are
# defined; a renamed rule or output shows up here as one clear parse error.


rule model_card:
    input:
        model=rules.train_diffusion.output.model,
        train_summary=rules.train_diffusion.output.summary,
        base=BASE,
        prompt_frequencies=rules.build_prompts.output.frequencies,
        raw_grid=rules.gather_samples.output.grid,
        filtered_grid=rules.gather_filtered.output.grid,
        fd=rules.evaluate_generation.output.fd,
        kid=rules.evaluate_generation.output.kid,
        prdc=rules.evaluate_generation.output.prdc,
        agreement=rules.evaluate_agreement.output.agreement,
        downstream=rules.evaluate_downstream.output.downstream,
    output:
        card=report(
            "results/models/{experiment}/README.md",
            caption="../report/model_card.rst",
            category="3. Training",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "figure": "model card"},
        ),
        raw_grid="results/models/{experiment}/samples_raw.png",
        filtered_grid="results/models/{experiment}/samples_filtered.png",
    log:
        "results/logs/model_card/{experiment}.log",
    benchmark:
        "results/benchmarks/model_card/{experiment}.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        base_model=config["base_model"],
        strategy=strategy,
        prompt_settings=prompt_params,
        train=train_settings,
        sampling=sampling_settings,
        data=lambda wc: {
            "slides": config["slides"],
            "patch_datasets": [d["name"] for d in config["patch_datasets"]],
            "tiling.patch_size": config["tiling"]["patch_size"],
            "tiling.mpp": config["tiling"]["mpp"],
            "split": config["split"],
            "qc": qc_settings(),
        },
    script:
        "../workflow_scripts/model_card.py"
