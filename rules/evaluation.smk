# Evaluation: the independent judge classifier, reference features of the real split, generative
# metrics, classifier agreement and downstream utility per experiment; one JSON per metric.


rule prepare_metric_backbone:
    output:
        model=directory("results/models/metric_backbone"),
    log:
        "results/logs/prepare_metric_backbone/backbone.log",
    benchmark:
        "results/benchmarks/prepare_metric_backbone/backbone.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        backbone=config["evaluation"]["backbone"],
        image_size=config["tiling"]["patch_size"],
    script:
        "../workflow_scripts/prepare_embedder.py"


rule train_judge:
    input:
        train="results/splits/train.h5",
        val="results/splits/val.h5",
        test="results/splits/test.h5",
    output:
        model=directory("results/eval/judge/model"),
        metrics="results/eval/judge/metrics.json",
    log:
        "results/logs/train_judge/judge.log",
    benchmark:
        "results/benchmarks/train_judge/judge.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=6 * 60,
        gpu=1,
    params:
        evaluation=evaluation_settings("judge_seed", "judge_cases"),
        classifier=config["classifier"],
        image_size=config["classifier"]["image_size"] or config["tiling"]["patch_size"],
        field_px=classifier_field(),
    script:
        "../workflow_scripts/train_judge.py"


rule reference_features:
    input:
        unpack(feature_model),
        patches=f"results/splits/{config['evaluation']['reference_split']}.h5",
    output:
        features=REFERENCE_FILE,
    log:
        "results/logs/reference_features/{kind}_{field}.log",
    benchmark:
        "results/benchmarks/reference_features/{kind}_{field}.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        evaluation=evaluation_settings("reference_split", "inception_weights", "max_reference", "device", "seed"),
        pooling=config["embedding"]["pooling"],
        # the synthetic field of view (px of real patches) the reference is centre-cropped to; None: whole patches
        field_px=lambda wildcards: field_px(wildcards.field),
    script:
        "../workflow_scripts/reference_features.py"


rule evaluate_generation:
    input:
        unpack(feature_model),
        raw="results/synthetic/{experiment}/raw.h5",
        filtered="results/synthetic/{experiment}/filtered.h5",
        reference=reference_features_file,
    output:
        fd="results/eval/{experiment}/fd.json",
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
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        evaluation=evaluation_settings(
            "inception_weights", "max_synthetic", "prdc_k", "match_classes", "umap", "device", "seed"
        ),
        pooling=config["embedding"]["pooling"],
    script:
        "../workflow_scripts/evaluate_generation.py"


rule evaluate_agreement:
    input:
        raw="results/synthetic/{experiment}/raw.h5",
        filtered="results/synthetic/{experiment}/filtered.h5",
        classifier="results/classifier/model",
        judge=JUDGE,
    output:
        agreement="results/eval/{experiment}/agreement.json",
    log:
        "results/logs/evaluate_agreement/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_agreement/{experiment}.tsv"
    conda:
        "../envs/diffusion.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        evaluation=evaluation_settings("judge_seed", "judge_cases", "device"),
        classifier_seed=config["classifier"]["seed"],
        # both classifiers score at the field recorded in their classifier.json; this is the experiment's own
        synthetic_field=synthetic_field,
    script:
        "../workflow_scripts/evaluate_agreement.py"


rule evaluate_downstream:
    input:
        synthetic=f"results/synthetic/{{experiment}}/{config['evaluation']['downstream_set']}.h5",
        train="results/splits/train.h5",
        val="results/splits/val.h5",
        test="results/splits/test.h5",
        real_metrics="results/classifier/metrics.json",
    output:
        downstream="results/eval/{experiment}/downstream.json",
        # both downstream classifiers (synthetic only, real + synthetic) with their own metrics
        models=directory("results/eval/{experiment}/downstream_models"),
    log:
        "results/logs/evaluate_downstream/{experiment}.log",
    benchmark:
        "results/benchmarks/evaluate_downstream/{experiment}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=6 * 60,
        gpu=1,
    params:
        evaluation=evaluation_settings("downstream_set", "downstream_epochs"),
        classifier=config["classifier"],
        image_size=config["classifier"]["image_size"] or config["tiling"]["patch_size"],
        field_px=classifier_field(),
        synthetic_field=synthetic_field,
    script:
        "../workflow_scripts/evaluate_downstream.py"
