# Diffusion: latent cache, fine-tuning (LoRA or full UNet), sampling and the classifier filter, per experiment.
from histosynth.diffusion.train import check_train_settings

# method/option mismatches (e.g. train.rank with method full) stop here, before any job starts
for _experiment in EXPERIMENTS:
    check_train_settings(
        experiment_settings(config, _experiment, "train"), _experiment, config["experiments"][_experiment]["prompts"]
    )


rule cache_image_latents:
    input:
        patches="results/splits/train.h5",
        base="results/models/base",
    output:
        latents="results/latents/images/train_{resolution}px_{views}{crop}.h5",
    log:
        "results/logs/cache_image_latents/train_{resolution}px_{views}{crop}.log",
    benchmark:
        "results/benchmarks/cache_image_latents/train_{resolution}px_{views}{crop}.tsv"
    wildcard_constraints:
        resolution=r"\d+",
        views="noflip|flip|vflip|hvflip",
        crop="|_crop",
    conda:
        "../envs/diffusion.yaml"
    resources:
        # SD 1.5's VAE on the CPU: 6.2 / 6.4 GB at 256 / 512 px (2 Mpx per batch; bench_memory.py --stage sd)
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        resolution=lambda wc: int(wc.resolution),
        random_flip=lambda wc: wc.views in ("flip", "hvflip"),
        vertical_flip=lambda wc: wc.views in ("vflip", "hvflip"),
        # a crop is the training size: the VAE encodes the whole patch and each step crops its latent
        crop=lambda wc: int(wc.resolution) if wc.crop else None,
        # shared by all experiments: the default train.device (where to run, not what is computed)
        device=config["train"]["device"],
    script:
        "../workflow_scripts/cache_image_latents.py"


# per experiment only the prompt embeddings; the image latents are the shared file's (virtual datasets)
rule cache_latents:
    input:
        images=image_latents,
        prompts="results/prompts/{experiment}.tsv",
        base="results/models/base",
    output:
        latents="results/latents/{experiment}.h5",
    log:
        "results/logs/cache_latents/{experiment}.log",
    benchmark:
        "results/benchmarks/cache_latents/{experiment}.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    params:
        # the tokens each prompt is read as; the image side is fixed by the shared file's name
        text_chunks=lambda wc: train_settings(wc)["text_chunks"],
        device=lambda wc: train_settings(wc)["device"],
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
    # the experiments' generation (train, sample, filter) before their evaluations, so that the
    # evaluations of all experiments fill the cores at the end instead of one experiment's trailing alone
    priority: 1
    conda:
        "../envs/diffusion.yaml"
    # train.num_processes > 1: that many processes (accelerate launch), each with its GPU, 4 threads and memory
    threads: lambda wc: 4 * train_settings(wc)["num_processes"]
    resources:
        mem_mb=lambda wc: 32000 * train_settings(wc)["num_processes"],
        runtime=24 * 60,
        gpu=lambda wc: train_settings(wc)["num_processes"],
    params:
        train=train_settings,
        # checkpoints survive a failed job; training keys them below this folder by its settings and the
        # latent cache's data fingerprint, so changed settings, data or prompts never resume a stale run
        checkpoints=lambda wc: f"results/checkpoints/{wc.experiment}",
    script:
        "../workflow_scripts/train_diffusion.py"


# one job per seed range (sampling.shards); a failed or killed shard reruns alone, the others are kept
rule sample_synthetic:
    input:
        model="results/models/{experiment}/trained",
        base="results/models/base",
        prompts="results/prompts/{experiment}.tsv",
        patches="results/splits/train.h5",
    output:
        raw="results/synthetic/{experiment}/shards/raw.{shard}.h5",
    log:
        "results/logs/sample_synthetic/{experiment}.{shard}.log",
    benchmark:
        "results/benchmarks/sample_synthetic/{experiment}.{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    priority: 1
    conda:
        "../envs/diffusion.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=1,
    params:
        sampling=sampling_params,
        shards=lambda wc: sampling_settings(wc)["shards"],
        resolution=resolution,
    script:
        "../workflow_scripts/sample_synthetic.py"


# raw.h5 references the shards' pixels (HDF5 virtual datasets): the shard files must stay
rule gather_samples:
    input:
        shards=shard_files("results/synthetic/{experiment}/shards/raw.{shard}.h5"),
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
        "results/logs/gather_samples/{experiment}.log",
    benchmark:
        "results/benchmarks/gather_samples/{experiment}.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../workflow_scripts/gather_samples.py"


rule filter_synthetic:
    input:
        raw="results/synthetic/{experiment}/shards/raw.{shard}.h5",
        classifier="results/classifier/model",
        model="results/models/{experiment}/trained",
        base="results/models/base",
        patches="results/splits/train.h5",
    output:
        filtered="results/synthetic/{experiment}/shards/filtered.{shard}.h5",
        acceptance="results/synthetic/{experiment}/shards/acceptance.{shard}.tsv",
    log:
        "results/logs/filter_synthetic/{experiment}.{shard}.log",
    benchmark:
        "results/benchmarks/filter_synthetic/{experiment}.{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    priority: 1
    conda:
        "../envs/diffusion.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=1,
    params:
        filter=config["filter"],
        # the classifier scores where and in batches as its own section says; sample settings drive regeneration
        classifier={k: config["classifier"][k] for k in ("device", "batch_size")},
        sampling=sampling_params,
        resolution=resolution,
        # the classifier scores at the field in its classifier.json; a different experiment crop is warned about
        synthetic_field=synthetic_field,
    script:
        "../workflow_scripts/filter_synthetic.py"


rule gather_filtered:
    input:
        shards=shard_files("results/synthetic/{experiment}/shards/filtered.{shard}.h5"),
        acceptance=shard_files("results/synthetic/{experiment}/shards/acceptance.{shard}.tsv"),
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
        "results/logs/gather_filtered/{experiment}.log",
    benchmark:
        "results/benchmarks/gather_filtered/{experiment}.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        filter=config["filter"],
    script:
        "../workflow_scripts/gather_filtered.py"
