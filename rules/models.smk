# Model preparation: the base Stable Diffusion pipeline and the embedding backbone, each saved
# once as a local folder that every later rule loads with from_pretrained.


rule prepare_base_model:
    output:
        model=directory(BASE_SOURCE),
    log:
        "results/logs/prepare_base_model/base.log",
    benchmark:
        "results/benchmarks/prepare_base_model/base.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        name=config["base_model"],
    script:
        "../workflow_scripts/prepare_base_model.py"


if BASE_SOURCE != BASE:

    rule pretrain_base:
        input:
            base=BASE_SOURCE,
            patches="results/splits/train.h5",
        output:
            model=directory(BASE),
            summary="results/models/base_pretrain.json",
        log:
            "results/logs/pretrain_base/base.log",
        benchmark:
            "results/benchmarks/pretrain_base/base.tsv"
        conda:
            "../envs/diffusion.yaml"
        threads: 4
        resources:
            mem_mb=16000,
            runtime=4 * 60,
            gpu=1,
        params:
            pretrain=config["pretrain"],
            prompts=pretrain_prompt_settings(),
            resolution=config["train"]["resolution"] or config["tiling"]["patch_size"],
            # each stage's result and the UNet's checkpoints survive a failed job, keyed below this folder by
            # the settings and the training patches' fingerprint, so other settings or data never reuse them
            work="results/checkpoints/pretrain_base",
        script:
            "../workflow_scripts/pretrain_base.py"


rule prepare_embedder:
    output:
        model=directory("results/models/embedder"),
    log:
        "results/logs/prepare_embedder/embedder.log",
    benchmark:
        "results/benchmarks/prepare_embedder/embedder.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        backbone=config["embedding"]["backbone"],
        image_size=config["tiling"]["patch_size"],
    script:
        "../workflow_scripts/prepare_embedder.py"
