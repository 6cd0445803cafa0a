import numpy as np
import pandas as pd
import pytest
from histosynth.classifier import train_classifier
from histosynth.config import default_config
from histosynth.diffusion.filtering import filter_synthetic
from histosynth.diffusion.sample import sample
from histosynth.patchfile import PatchFile, check_patch_file

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


def test_sample_and_filter_loop(setup, trained):
    d = setup["dir"] / "synthetic"
    cfg = default_config(
        sampling={"steps": 3, "per_class": 4, "batch_size": 4},
        filter={"max_rounds": 2, "min_confidence": 0.0},
        classifier={"epochs": 1},
    )
    s = sample(
        setup["base"],
        trained[1] / "model",
        setup["prompts"],
        setup["split"]["train"],
        d / "raw.h5",
        d / "raw.png",
        cfg["sampling"],
        32,
        "exp",
    )
    with PatchFile(d / "raw.h5") as pf:
        n_classes = len(np.unique(pf.labels))
        assert len(pf) == 4 * n_classes == s["n"] and list(pf.column("seeds")) == list(range(len(pf)))
    train_classifier(
        setup["split"]["train"],
        setup["split"]["val"],
        setup["split"]["test"],
        d / "clf",
        d / "clf.json",
        cfg["classifier"],
        32,
        progress=False,
    )
    res = filter_synthetic(
        raw_h5=d / "raw.h5",
        classifier_dir=d / "clf",
        base_dir=setup["base"],
        model_dir=trained[1] / "model",
        train_h5=setup["split"]["train"],
        out_h5=d / "f.h5",
        acceptance_tsv=d / "acc.tsv",
        plot_png=d / "acc.png",
        grid_png=d / "fgrid.png",
        filter_cfg=cfg["filter"],
        classifier_cfg=cfg["classifier"],
        sample_cfg=cfg["sampling"],
        resolution=32,
        experiment="exp",
    )
    acc = pd.read_csv(d / "acc.tsv", sep="\t")
    assert acc["round"].max() <= 2 and res["rounds_run"] <= 3
    assert check_patch_file(d / "f.h5") == res["accepted"] == sum(r["accepted"] for r in res["per_class"])
    assert {r["label_name"] for r in res["per_class"]} == set(acc["label_name"])
    for r in res["per_class"]:
        assert 0 <= r["acceptance"] <= 1
    with PatchFile(d / "f.h5") as pf:  # accepted images keep prompt class and carry their round
        assert set(pf.column("round")) <= {0, 1, 2}
