# Classifier: ResNet-18 on the real train split (model selection by validation macro AUC, ties by macro F1).


rule train_classifier:
    input:
        train="results/splits/train.h5",
        val="results/splits/val.h5",
        test="results/splits/test.h5",
    output:
        model=directory("results/classifier/model"),
        metrics="results/classifier/metrics.json",
    log:
        "results/logs/train_classifier/classifier.log",
    benchmark:
        "results/benchmarks/train_classifier/classifier.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=6 * 60,
        gpu=1,
    params:
        classifier=config["classifier"],
        image_size=config["classifier"]["image_size"] or config["tiling"]["patch_size"],
        # real patches larger than the synthetic field of view are cut to it (random windows; the centre to test)
        field_px=classifier_field(),
    script:
        "../workflow_scripts/train_classifier.py"
