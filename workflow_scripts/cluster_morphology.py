from _common import run
from histosynth.embed import load_embeddings
from histosynth.morphology import cluster_morphology
from histosynth.patchfile import PatchFile

SPLITS = ("train", "val", "test")


def main(sm):
    feats, labels = {}, {}
    for split, emb, patches in zip(SPLITS, sm.input.embeddings, sm.input.patches):
        feats[split], _ = load_embeddings(emb, patches)
        with PatchFile(patches) as pf:
            labels[split] = pf.labels
    cluster_morphology(
        train_emb=feats["train"],
        split_embs=feats,
        split_labels=labels,
        cfg=sm.params.morphology,
        out=dict(sm.output.items()),
        train_patches=sm.input.patches[0],
    )


run(snakemake, main)  # noqa: F821
