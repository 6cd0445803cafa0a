# Model preparation: the base Stable Diffusion pipeline and the embedding backbone, each saved
# once as a local folder that every later rule loads with from_pretrained.


rule prepare_base_model:
    output:
        model=directory("results/models/base"),
    log:
        "results/logs/prepare_base_model/base.log",
    benchmark:
        "results/benchmarks/prepare_base_model/base.tsv"
    params:
        name=config["base_model"],
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/prepare_base_model.py"


rule prepare_embedder:
    output:
        model=directory("results/models/embedder"),
    log:
        "results/logs/prepare_embedder/embedder.log",
    benchmark:
        "results/benchmarks/prepare_embedder/embedder.tsv"
    params:
        backbone=config["embedding"]["backbone"],
        image_size=config["tiling"]["patch_size"],
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/prepare_embedder.py"
