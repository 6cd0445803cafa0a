from _common import run
from histosynth.embed import embed_patches


def main(sm):
    p = sm.params.embedding
    embed_patches(
        patch_h5=sm.input.patches,
        embedder_dir=sm.input.embedder,
        out_h5=sm.output.embeddings,
        pooling=p["pooling"],
        batch_size=p["batch_size"],
        num_workers=p["num_workers"],
        device=p["device"],
    )


run(snakemake, main)  # noqa: F821
