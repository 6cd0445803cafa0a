import pytest
from histosynth.classifier import train_classifier
from histosynth.config import default_config
from histosynth.split import split_patches

pytestmark = pytest.mark.slow  # trains tiny diffusion models: minutes on 2 cores


def test_classifier_beats_chance_on_pathmnist(shared_data, tmp_path):
    from histosynth.importers import import_patches

    import_patches(
        {
            "name": "pm",
            "format": "medmnist",
            "path": str(shared_data / "patches/pathmnist/pathmnist_train_first1000_28.npz"),
            "split": "resplit",
        },
        tmp_path / "pm.h5",
        28,
        progress=False,
    )
    split = {s: tmp_path / f"{s}.h5" for s in ("train", "val", "test")}
    split_patches([tmp_path / "pm.h5"], split, tmp_path / "m.tsv", None, 0.15, 0.2, 0)
    cfg = default_config(classifier={"epochs": 5, "learning_rate": 1e-3})["classifier"]
    m = train_classifier(
        split["train"], split["val"], split["test"], tmp_path / "clf", tmp_path / "m.json", cfg, 28, progress=False
    )
    assert m["test"]["n"] == 200
    print("PathMNIST classifier:", m["test"]["accuracy"], m["test"]["macro_auc"])
    assert m["test"]["accuracy"] > 0.4 and m["test"]["macro_auc"] > 0.85  # chance: 0.11 and 0.5
