# Data stage: demo slides, tiling, dataset import, train/val/test split.


rule make_demo_slide:
    output:
        slide="resources/demo/{demo_slide}.tiff",
    log:
        "results/logs/make_demo_slide/{demo_slide}.log",
    benchmark:
        "results/benchmarks/make_demo_slide/{demo_slide}.tsv"
    params:
        variant=lambda wc: int(wc.demo_slide.split("_")[1]),
        size=2048,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/make_demo_slide.py"


rule tile_slide:
    input:
        slide=slide_path,
    output:
        patches="results/tiles/{slide}.h5",
        thumbnail=report(
            "results/tiles/{slide}.thumbnail.png",
            caption="../report/tile_thumbnail.rst",
            category="1. Data",
            subcategory="Tiling",
            labels={"slide": "{slide}"},
        ),
    log:
        "results/logs/tile_slide/{slide}.log",
    benchmark:
        "results/benchmarks/tile_slide/{slide}.tsv"
    params:
        tiling=config["tiling"],
        case_id=slide_value("case_id"),
        label=slide_value("label"),
        label_names=SLIDE_LABELS,
    # one decode thread + the HDF5 writer thread; more decoders wait on the writer (bench/bench_tiling.py)
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/tile_slide.py"


rule import_patches:
    input:
        source=lambda wc: DATASETS[wc.dataset]["path"],
    output:
        patches="results/tiles/{dataset}.h5",
    log:
        "results/logs/import_patches/{dataset}.log",
    benchmark:
        "results/benchmarks/import_patches/{dataset}.tsv"
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
        patch_size=config["tiling"]["patch_size"],
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/import_patches.py"


rule split_patches:
    input:
        tiles=tile_files(),
    output:
        train="results/patches/train.h5",
        val="results/patches/val.h5",
        test="results/patches/test.h5",
        manifest="results/patches/manifest.tsv",
        summary=report(
            "results/patches/summary.tsv",
            caption="../report/split_summary.rst",
            category="1. Data",
            subcategory="Split",
        ),
        examples=report(
            "results/patches/examples.png",
            caption="../report/split_examples.rst",
            category="1. Data",
            subcategory="Split",
        ),
    log:
        "results/logs/split_patches/split.log",
    benchmark:
        "results/benchmarks/split_patches/split.tsv"
    params:
        split=config["split"],
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/split_patches.py"
