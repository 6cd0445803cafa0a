# Diffusion: latent cache, fine-tuning (LoRA or full UNet), sampling and the classifier filter, per experiment.
from histosynth.diffusion.train import check_train_settings

# method/option mismatches (e.g. train.rank with method full) stop here, before any job starts
for _experiment in EXPERIMENTS:
    check_train_settings(experiment_settings(config, _experiment, "train"), _experiment, config["experiments"][_experiment]["prompts"])


rule cache_latents:
    input:
        patches="results/patches/train.h5",
        prompts="results/prompts/{experiment}.tsv",
        base="results/models/base",
    output:
        latents="results/latents/{experiment}.h5",
    log:
        "results/logs/cache_latents/{experiment}.log",
    benchmark:
        "results/benchmarks/cache_latents/{experiment}.tsv"
    params:
        resolution=resolution,
        random_flip=lambda wc: train_settings(wc)["random_flip"],
        vertical_flip=lambda wc: train_settings(wc)["vertical_flip"],
        crop=lambda wc: train_settings(wc)["crop"],
        text_chunks=lambda wc: train_settings(wc)["text_chunks"],
        device=lambda wc: train_settings(wc)["device"],
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=1,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/cache_latents.py"


rule train_diffusion:
    input:
        latents="results/latents/{experiment}.h5",
        base="results/models/base",
    output:
        model=directory("results/models/{experiment}/trained"),
        loss="results/models/{experiment}/loss.tsv",
        curve=report(
            "results/models/{experiment}/loss.png",
            caption="../report/loss_curve.rst",
            category="3. Training",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "figure": "loss"},
        ),
        validation=directory("results/models/{experiment}/validation"),
        summary="results/models/{experiment}/train_summary.json",
    log:
        "results/logs/train_diffusion/{experiment}.log",
    benchmark:
        "results/benchmarks/train_diffusion/{experiment}.tsv"
    params:
        train=train_settings,
        # checkpoints survive a failed job; training keys them below this folder by its settings and the
        # latent cache's data fingerprint, so changed settings, data or prompts never resume a stale run
        checkpoints=lambda wc: f"results/checkpoints/{wc.experiment}",
    threads: 4
    resources:
        mem_mb=32000,
        runtime=24 * 60,
        gpu=1,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/train_diffusion.py"


rule sample:
    input:
        model="results/models/{experiment}/trained",
        base="results/models/base",
        prompts="results/prompts/{experiment}.tsv",
        patches="results/patches/train.h5",
    output:
        raw="results/synthetic/{experiment}/raw.h5",
        grid=report(
            "results/synthetic/{experiment}/raw_grid.png",
            caption="../report/synthetic_grid.rst",
            category="4. Synthetic images",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "set": "raw"},
        ),
        summary="results/synthetic/{experiment}/sample_summary.json",
    log:
        "results/logs/sample/{experiment}.log",
    benchmark:
        "results/benchmarks/sample/{experiment}.tsv"
    params:
        sample=sample_settings,
        resolution=resolution,
    threads: 4
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=1,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/sample.py"


rule filter_synthetic:
    input:
        raw="results/synthetic/{experiment}/raw.h5",
        classifier="results/classifier/model",
        model="results/models/{experiment}/trained",
        base="results/models/base",
        patches="results/patches/train.h5",
    output:
        filtered="results/synthetic/{experiment}/filtered.h5",
        acceptance="results/synthetic/{experiment}/acceptance.tsv",
        plot=report(
            "results/synthetic/{experiment}/acceptance.png",
            caption="../report/acceptance.rst",
            category="4. Synthetic images",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "set": "acceptance"},
        ),
        grid=report(
            "results/synthetic/{experiment}/filtered_grid.png",
            caption="../report/synthetic_grid.rst",
            category="4. Synthetic images",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "set": "filtered"},
        ),
        summary="results/synthetic/{experiment}/filter_summary.json",
    log:
        "results/logs/filter_synthetic/{experiment}.log",
    benchmark:
        "results/benchmarks/filter_synthetic/{experiment}.tsv"
    params:
        filter=config["filter"],
        sample=sample_settings,
        resolution=resolution,
    threads: 4
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=1,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/filter_synthetic.py"
