"""Which epoch the classifier keeps: best validation AUC (the LoRA paper), ties by macro F1, then the later."""

import numpy as np

import histosynth.classifier as classifier
from histosynth.config import default_config
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter


def _patches(path, labels):
    n = len(labels)
    rng = np.random.default_rng(0)
    with PatchWriter(path, PatchFileSpec(16, ["dab_negative", "dab_positive"], {})) as w:
        w.append(
            PatchBatch(
                rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
                np.zeros((n, 2)),
                labels,
                ["s"] * n,
                ["c"] * n,
                np.ones(n),
            )
        )
    return path


def test_auc_ties_are_broken_by_macro_f1_then_the_later_epoch(tmp_path, monkeypatch):
    val_labels = np.array([0, 0, 1, 1])
    # P(positive) on the validation patches, epoch by epoch
    scripted = [
        [0.6, 0.7, 0.8, 0.9],  # AUC 1.0, but the argmax calls every patch positive: macro F1 0.33
        [0.1, 0.2, 0.8, 0.9],  # AUC 1.0, macro F1 1.0
        [0.1, 0.85, 0.8, 0.9],  # AUC 0.75
        [0.2, 0.3, 0.7, 0.6],  # AUC 1.0, macro F1 1.0: tied with epoch 2, and later
    ]
    calls = []
    real_predict_file = classifier.predict_file

    def predict_file(net, path, *args, **kwargs):
        if str(path).endswith("val.h5"):
            p1 = np.array(scripted[len(calls)])
            calls.append(path)
            return np.stack([1 - p1, p1], 1).astype(np.float32), val_labels
        return real_predict_file(net, path, *args, **kwargs)

    monkeypatch.setattr(classifier, "predict_file", predict_file)
    train = _patches(tmp_path / "train.h5", [0, 1] * 4)
    val = _patches(tmp_path / "val.h5", val_labels)
    test = _patches(tmp_path / "test.h5", [0, 1])
    cfg = default_config(classifier={"epochs": 4, "batch_size": 4, "device": "cpu"})["classifier"]
    m = classifier.train_classifier(train, val, test, tmp_path / "clf", tmp_path / "m.json", cfg, 32, progress=False)
    assert len(calls) == 4
    assert [round(h["val_macro_f1"], 2) for h in m["history"]] == [0.33, 1.0, 0.73, 1.0]
    assert m["best_epoch"] == 4

    scripted[3] = [0.2, 0.65, 0.7, 0.6]  # AUC 0.75: epoch 2 is the best again
    calls.clear()
    m = classifier.train_classifier(train, val, test, tmp_path / "clf2", tmp_path / "m2.json", cfg, 32, progress=False)
    assert m["best_epoch"] == 2
