"""The classifiers' field of view (``field_px``, the workflow's ``train.crop``): real patches larger than the
synthetic field are cut to it (random windows in training, the centre otherwise), synthetic images pass whole,
and whoever loads the model crops as training did."""

import json

import numpy as np
import pytest

from histosynth import classifier as clf
from histosynth.classifier import build_resnet18, load_classifier, predict_proba, save_classifier, train_classifier
from histosynth.config import default_config
from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter

MARKS = {"train": 10, "val": 20, "test": 30, "synthetic": 40}
STEP = 4  # a pixel's red / green value is its row / column times STEP


def coded(n, px, mark):
    """Patches whose pixels encode their position (R = row, G = column) and their file (B = ``mark``)."""
    y, x = np.mgrid[:px, :px]
    img = np.stack([y * STEP, x * STEP, np.full_like(y, mark)], -1).astype(np.uint8)
    return np.repeat(img[None], n, 0)


def write(path, imgs):
    n = len(imgs)
    with PatchWriter(path, PatchFileSpec(imgs.shape[1], ["a", "b"], {})) as w:
        w.append(PatchBatch(imgs, np.zeros((n, 2)), np.array([0, 1] * (n // 2)), ["s"] * n, ["c"] * n, np.ones(n)))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("field")
    real = {s: write(d / f"{s}.h5", coded(8 if s == "train" else 4, 32, MARKS[s])) for s in ("train", "val", "test")}
    return {**real, "synthetic": write(d / "synthetic.h5", coded(8, 16, MARKS["synthetic"])), "dir": d}


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    """The test metrics' bootstrap intervals are not under test here (20 resamples, not the default), and a
    network this small runs fastest on one thread (several spin against each other on a busy machine)."""
    import torch

    monkeypatch.setattr("histosynth.evaluation.metrics.BOOTSTRAP_RESAMPLES", 20)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seen(monkeypatch):
    """Every image array that reaches the network (through ``to_tensor``), in call order."""
    calls = []
    original = clf.to_tensor

    def record(imgs, size):
        calls.append(np.array(imgs))
        return original(imgs, size)

    monkeypatch.setattr(clf, "to_tensor", record)
    return calls


def offsets(imgs):
    """The (row, column) offset of each image's window in its coded patch, checking that it is one."""
    oy, ox = imgs[:, 0, 0, 0] // STEP, imgs[:, 0, 0, 1] // STEP
    for im, y, x in zip(imgs, oy, ox):
        full = coded(1, 32 if im[0, 0, 2] != MARKS["synthetic"] else 16, im[0, 0, 2])[0]
        assert np.array_equal(im, full[y : y + im.shape[0], x : x + im.shape[1]])
    return list(zip(oy.tolist(), ox.tolist()))


def train(files, out, field_px, sources=("train",), epochs=2):
    cfg = default_config(classifier={"epochs": epochs, "batch_size": 4, "seed": 3})["classifier"]
    return train_classifier(
        [files[s] for s in sources],
        files["val"],
        files["test"],
        out / "model",
        out / "metrics.json",
        cfg,
        8,  # the network's input: small, to keep the test fast (the windows are recorded before the resize)
        progress=False,
        field_px=field_px,
    )


def train_windows(calls):
    """The training windows' offsets per epoch (validation calls separate the epochs)."""
    epochs, current = [], []
    for imgs in calls:
        mark = imgs[0, 0, 0, 2]
        if mark == MARKS["train"]:
            current += offsets(imgs)
        elif mark == MARKS["val"] and current:
            epochs.append(current)
            current = []
    return epochs


def test_real_patches_are_cut_to_the_field_random_in_training_centre_otherwise(files, seen, tmp_path):
    m = train(files, tmp_path / "a", 16, sources=("train", "synthetic"))
    assert all(imgs.shape[1:3] == (16, 16) for imgs in seen)
    by_mark = {}
    for imgs in seen:
        by_mark.setdefault(int(imgs[0, 0, 0, 2]), []).extend(offsets(imgs))
    # synthetic images are at the field already: whole, never cropped
    assert set(by_mark[MARKS["synthetic"]]) == {(0, 0)} and len(by_mark[MARKS["synthetic"]]) == 2 * 8
    # validation and test see the central window of the 32 px patches
    assert set(by_mark[MARKS["val"]]) == set(by_mark[MARKS["test"]]) == {(8, 8)}
    epochs = train_windows(seen)
    assert len(epochs) == 2 and all(len(e) == 8 for e in epochs)
    assert epochs[0] != epochs[1]  # fresh windows every epoch
    assert len(set(epochs[0] + epochs[1])) > 4  # random positions, not one fixed window
    assert all(0 <= y <= 16 and 0 <= x <= 16 for y, x in epochs[0] + epochs[1])
    # recorded where every consumer of the model and of the metrics reads it
    assert json.loads((tmp_path / "a/model/classifier.json").read_text())["field_px"] == 16
    saved = json.loads((tmp_path / "a/metrics.json").read_text())
    assert saved["field_px"] == m["field_px"] == 16
    assert f"{files['train']}: 32 px patches cut to 16 px" in saved["crop"]
    assert f"{files['synthetic']}: whole 16 px images" in saved["crop"]

    # the same seed draws the same windows
    first = epochs
    seen.clear()
    train(files, tmp_path / "b", 16, sources=("train", "synthetic"))
    assert train_windows(seen) == first


def test_loaded_classifier_centre_crops_larger_inputs(tmp_path, seen):
    import torch

    torch.manual_seed(0)
    save_classifier(build_resnet18(2), tmp_path / "m", ["a", "b"], 16, field_px=16)
    net, ccfg = load_classifier(tmp_path / "m", "cpu")
    assert ccfg["field_px"] == 16
    imgs = coded(4, 32, MARKS["test"])
    probs = predict_proba(net, imgs, 16, "cpu", field_px=ccfg["field_px"])
    assert [im.shape[1:3] for im in seen] == [(16, 16)] and set(offsets(seen[0])) == {(8, 8)}
    assert np.allclose(probs, predict_proba(net, imgs[:, 8:24, 8:24], 16, "cpu"), atol=1e-6)
    seen.clear()
    predict_proba(net, coded(4, 16, MARKS["synthetic"]), 16, "cpu", field_px=ccfg["field_px"])
    assert set(offsets(seen[0])) == {(0, 0)}  # at the field: whole


def test_without_a_field_whole_patches_as_before(files, seen, tmp_path):
    m = train(files, tmp_path / "a", None)
    assert all(imgs.shape[1:3] == (32, 32) for imgs in seen)
    assert m["field_px"] is None and m["crop"].startswith("whole patches")
    cfg_file = tmp_path / "a/model/classifier.json"
    assert json.loads(cfg_file.read_text())["field_px"] is None
    # a model saved before the key existed is read as whole-field
    old = json.loads(cfg_file.read_text())
    del old["field_px"]
    cfg_file.write_text(json.dumps(old))
    net, ccfg = load_classifier(tmp_path / "a/model", "cpu")
    assert ccfg["field_px"] is None
    seen.clear()
    predict_proba(net, coded(2, 32, MARKS["test"]), 16, "cpu", field_px=ccfg["field_px"])
    assert seen[0].shape[1:3] == (32, 32)


def test_a_field_within_the_tolerance_trains_exactly_as_whole_patches(files, tmp_path):
    # 31 of 32 px is within FOV_TOLERANCE: no crop, and the crop stream does not disturb order or flips
    whole = train(files, tmp_path / "a", None, epochs=1)
    near = train(files, tmp_path / "b", 31, epochs=1)
    assert np.allclose([h["train_loss"] for h in whole["history"]], [h["train_loss"] for h in near["history"]])
    assert near["crop"].startswith(f"{files['train']}: whole 32 px images")


def test_agreement_and_downstream_record_the_field(files, tmp_path):
    from histosynth.evaluation.evaluate import evaluate_agreement, evaluate_downstream

    for name in ("filter", "judge"):
        save_classifier(build_resnet18(2), tmp_path / name, ["a", "b"], 16, field_px=16)
    sets = {"raw": files["synthetic"], "filtered": files["synthetic"]}

    def agreement(synthetic_field):
        return evaluate_agreement(
            sets, tmp_path / "filter", tmp_path / "judge", "judge", "cpu", tmp_path / "agr.json", "e", synthetic_field
        )

    same = agreement(16)
    assert same["warnings"] == [] and same["judge"]["field_px"] == 16
    other = agreement(None)  # an experiment whose own train.crop is off: 448 µm images, 256 µm classifiers
    assert len(other["warnings"]) == 2 and all("not compare like with like" in w for w in other["warnings"])
    from histosynth.evaluation.report import warnings

    none = {"sets": {}}
    docs = {"e": {"fd": none, "kid": none, "prdc": none, "agreement": other, "downstream": {"synthetic_set": "raw"}}}
    assert [w["text"] for w in warnings(["e"], docs, {})] == other["warnings"]  # the report shows them

    real = train(files, tmp_path / "real", 16)
    cfg = {"downstream_set": "filtered", "downstream_epochs": 1}
    ccfg = default_config(classifier={"batch_size": 4})["classifier"]
    doc = evaluate_downstream(
        files["synthetic"],
        {s: files[s] for s in ("train", "val", "test")},
        cfg,
        ccfg,
        16,
        tmp_path / "real/metrics.json",
        tmp_path / "down",
        tmp_path / "down.json",
        "e",
        field_px=16,
        synthetic_field=16,
    )
    assert real["field_px"] == doc["field_px"] == 16
    assert doc["like_for_like"].startswith("yes") and doc["warnings"] == []
    for name in ("synthetic_only", "real_plus_synthetic"):
        assert json.loads((tmp_path / f"down/{name}/model/classifier.json").read_text())["field_px"] == 16
    # a baseline trained at another field, and an experiment crop other than the classifiers' field (an empty
    # synthetic set: the warnings come before any training)
    empty = write(tmp_path / "empty.h5", coded(0, 16, MARKS["synthetic"]))
    stale = evaluate_downstream(
        empty,
        {s: files[s] for s in ("train", "val", "test")},
        cfg,
        ccfg,
        16,
        tmp_path / "real/metrics.json",
        tmp_path / "down2",
        tmp_path / "down2.json",
        "e",
        field_px=None,
        synthetic_field=16,
    )
    assert stale["like_for_like"].startswith("no") and "rerun train_classifier" in stale["like_for_like"]
    assert any("not compare like with like" in w for w in stale["warnings"])
