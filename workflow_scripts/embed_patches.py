from _common import run
from histosynth.embed import embed_patches


def main(sm):
    p = sm.params.embedding
    embed_patches(sm.input.patches, sm.input.embedder, sm.output.embeddings, pooling=p["pooling"],
                  batch_size=p["batch_size"], num_workers=p["num_workers"], device=p["device"])


run(snakemake, main)  # noqa: F821
