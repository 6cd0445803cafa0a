# Data stage: demo slides, tiling, dataset import, train/val/test split.

# one decode thread + the HDF5 writer thread; more decoders wait on the writer (bench/bench_tiling.py)
TILING_THREADS = 2
TILING_MEM_MB = 4000  # one slide at a time: 266 MiB for a 16 k px slide (README, growth table)


rule make_demo_slide:
    output:
        slide="resources/demo/{demo_slide}.tiff",
    log:
        "results/logs/make_demo_slide/{demo_slide}.log",
    benchmark:
        "results/benchmarks/make_demo_slide/{demo_slide}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        variant=lambda wc: int(wc.demo_slide.split("_")[1]),
        size=2048,
    script:
        "../workflow_scripts/make_demo_slide.py"


rule tile_slide:
    input:
        slide=slide_path,
        stain_reference=stain_reference,
        scores=tiling_scores(),
    output:
        patches="results/slide_patches/{slide}.h5",
        thumbnail=tile_thumbnail("results/slide_patches/{slide}.thumbnail.png", "{slide}"),
    log:
        "results/logs/tile_slide/{slide}.log",
    benchmark:
        "results/benchmarks/tile_slide/{slide}.tsv"
    # no slide when tiling.slides_per_job > 1: the batch rules below make them
    wildcard_constraints:
        slide=single_slide_jobs(),
    conda:
        "../envs/data.yaml"
    threads: TILING_THREADS
    resources:
        mem_mb=TILING_MEM_MB,
        runtime=60,
        batch_size=config["tiling"]["batch_size"],
    params:
        tiling=tiling_params(),
        case_id=slide_value("case_id"),
        # only this slide's own label: the split merges vocabularies by name, so adding a slide
        # with a new class does not re-tile the others
        label=slide_value("label"),
        qc=qc_settings(),
    script:
        "../workflow_scripts/tile_slide.py"


# tiling.slides_per_job > 1: one job (one process, one set of imports) tiles a batch of slides, for
# cohorts of small slides where start-up outweighs the tiling (bench/bench_startup.py). Snakemake
# outputs cannot vary in number with a wildcard, so each batch is its own rule with its files named.
for batch_index, batch in enumerate(slide_batches()):

    rule:
        name:
            f"tile_slides_{batch_index}"
        input:
            slides=[SLIDES.loc[s, "slide_path"] for s in batch],
            stain_reference=stain_reference,
            scores=tiling_scores(),
        output:
            patches=[f"results/slide_patches/{s}.h5" for s in batch],
            thumbnails=[tile_thumbnail(f"results/slide_patches/{s}.thumbnail.png", s) for s in batch],
        log:
            f"results/logs/tile_slide/batch_{batch_index:04d}.log",
        benchmark:
            f"results/benchmarks/tile_slide/batch_{batch_index:04d}.tsv"
        conda:
            "../envs/data.yaml"
        threads: TILING_THREADS
        resources:
            mem_mb=TILING_MEM_MB,
            runtime=min(60 * len(batch), 24 * 60),  # minutes; a batch is meant for small slides
            batch_size=config["tiling"]["batch_size"],
        params:
            tiling=tiling_params(),
            slide_ids=batch,
            case_ids=[slide_cell(s, "case_id") for s in batch],
            labels=[slide_cell(s, "label") for s in batch],
            qc=qc_settings(),
        script:
            "../workflow_scripts/tile_slide.py"


rule import_patches:
    input:
        source=lambda wc: DATASETS[wc.dataset]["path"],
        stain_reference=stain_reference,
    output:
        patches="results/slide_patches/{dataset}.h5",
    log:
        "results/logs/import_patches/{dataset}.log",
    benchmark:
        "results/benchmarks/import_patches/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
        patch_size=config["tiling"]["patch_size"],
        qc=qc_settings(),
        # tiling.mpp matters only to datasets resampled to it
        target_mpp=lambda wc: config["tiling"]["mpp"] if resamples(DATASETS[wc.dataset]) else None,
    script:
        "../workflow_scripts/import_patches.py"


rule split_patches:
    input:
        tiles=tile_files(),
    # update(): snakemake backs the previous split up and restores it when the new one fails, so a
    # bad split setting or input never costs the last good result
    output:
        train=update("results/splits/train.h5"),
        val=update("results/splits/val.h5"),
        test=update("results/splits/test.h5"),
        manifest=update("results/splits/manifest.tsv"),
        summary=report(
            update("results/splits/summary.tsv"),
            caption="../report/split_summary.rst",
            category="1. Data",
            subcategory="Split",
        ),
        examples=report(
            update("results/splits/examples.png"),
            caption="../report/split_examples.rst",
            category="1. Data",
            subcategory="Split",
        ),
    log:
        "results/logs/split_patches/split.log",
    benchmark:
        "results/benchmarks/split_patches/split.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        split=config["split"],
    script:
        "../workflow_scripts/split_patches.py"
