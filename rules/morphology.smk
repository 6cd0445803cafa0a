# Morphology: DINO-style embeddings of every split, k-means morphology clusters (Osorio et al.).


rule embed_patches:
    input:
        patches="results/splits/{split}.h5",
        embedder=EMBEDDER,
    output:
        embeddings="results/embeddings/{split}.h5",
    log:
        "results/logs/embed_patches/{split}.log",
    benchmark:
        "results/benchmarks/embed_patches/{split}.tsv"
    conda:
        "../envs/diffusion.yaml"
    threads: 2
    # flat in the number of patches (bench/bench_memory.py): peak RSS with 2 DataLoader workers,
    # batch 64, 224 px was 2.6 GB for ViT-B/16 and 3.4 GB + ~0.3 GB of weights for ViT-B/8
    resources:
        mem_mb=5000,
        runtime=120,
    params:
        embedding=config["embedding"],
    script:
        "../workflow_scripts/embed_patches.py"


rule cluster_morphology:
    input:
        embeddings=expand("results/embeddings/{split}.h5", split=SPLITS),
        patches=expand("results/splits/{split}.h5", split=SPLITS),
    output:
        assignments="results/morphology/clusters.tsv",
        centroids="results/morphology/centroids.tsv",
        sizes="results/morphology/cluster_sizes.tsv",
        sweep=report(
            "results/morphology/k_sweep.png",
            caption="../report/k_sweep.rst",
            category="2. Prompts",
            subcategory="Morphology",
        ),
        examples=report(
            "results/morphology/cluster_examples.png",
            caption="../report/cluster_examples.rst",
            category="2. Prompts",
            subcategory="Morphology",
        ),
    log:
        "results/logs/cluster_morphology/clusters.log",
    benchmark:
        "results/benchmarks/cluster_morphology/clusters.tsv"
    conda:
        "../envs/data.yaml"
    # bench/bench_memory.py --stage cluster: 2.6 GiB and 30 min of CPU at 200 k patches (README growth table)
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        morphology=config["morphology"],
    script:
        "../workflow_scripts/cluster_morphology.py"
