# Evaluation: reference features of the real split, generative metrics, classifier agreement and
# downstream utility per experiment; one JSON per metric per experiment.


rule reference_features:
    input:
        patches=f"results/patches/{config['evaluation']['reference_split']}.h5",
        embedder="results/models/embedder",
    output:
        features="results/eval/reference/{kind}.h5",
    log:
        "results/logs/reference_features/{kind}.log",
    benchmark:
        "results/benchmarks/reference_features/{kind}.tsv"
    params:
        evaluation=evaluation_settings("reference_split", "inception_weights", "max_reference", "device", "seed"),
        pooling=config["embedding"]["pooling"],
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/reference_features.py"


rule evaluate_generation:
    input:
        raw="results/synthetic/{experiment}/raw.h5",
        filtered="results/synthetic/{experiment}/filtered.h5",
        references=reference_feature_files(),
        embedder="results/models/embedder",
    output:
        fid="results/eval/{experiment}/fid.json",
        fd_embedding="results/eval/{experiment}/fd_embedding.json",
        kid="results/eval/{experiment}/kid.json",
        prdc="results/eval/{experiment}/prdc.json",
        coverage=report(
            "results/eval/{experiment}/coverage.png",
            caption="../report/coverage.rst",
            category="5. Evaluation",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "figure": "coverage"},
        ),
    log:
        "results/logs/evaluate_generation/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_generation/{experiment}.tsv"
    params:
        evaluation=evaluation_settings("fid_extractor", "inception_weights", "max_synthetic", "prdc_k", "device", "seed"),
        pooling=config["embedding"]["pooling"],
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/evaluate_generation.py"


rule evaluate_agreement:
    input:
        raw="results/synthetic/{experiment}/raw.h5",
        filtered="results/synthetic/{experiment}/filtered.h5",
        classifier="results/classifier/model",
    output:
        agreement="results/eval/{experiment}/classifier_agreement.json",
    log:
        "results/logs/evaluate_agreement/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_agreement/{experiment}.tsv"
    params:
        device=config["evaluation"]["device"],
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/evaluate_agreement.py"


rule evaluate_downstream:
    input:
        synthetic=f"results/synthetic/{{experiment}}/{config['evaluation']['downstream_set']}.h5",
        train="results/patches/train.h5",
        val="results/patches/val.h5",
        test="results/patches/test.h5",
        real_metrics="results/classifier/metrics.json",
    output:
        downstream="results/eval/{experiment}/downstream.json",
    log:
        "results/logs/evaluate_downstream/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_downstream/{experiment}.tsv"
    params:
        evaluation=evaluation_settings("downstream_set", "downstream_epochs"),
        classifier=config["classifier"],
        image_size=config["classifier"]["image_size"] or config["tiling"]["patch_size"],
        workdir=lambda wc: f"results/eval/{wc.experiment}/downstream",
    threads: 4
    resources:
        mem_mb=16000,
        runtime=6 * 60,
        gpu=1,
    conda:
        "../envs/diffusion.yaml"
    script:
        "../workflow_scripts/evaluate_downstream.py"
