import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from histosynth.classifier import macro_auc
from histosynth.evaluation.metrics import classifier_agreement, frechet, kid, per_class, prdc


@pytest.fixture()
def gauss():
    rng = np.random.default_rng(0)
    return rng.normal(size=(600, 8)), rng.normal(size=(600, 8)), rng


@pytest.mark.slow  # KID: 100 subsets of 600x600 cubic kernels, ~10 s per call on a busy 2-core machine
def test_identical_sets_give_zero_distances(gauss):
    a, _, _ = gauss
    assert frechet(a, a) == pytest.approx(0, abs=1e-6)
    # unbiased KID draws independent subsets from both sides: ~0 up to sampling noise
    assert abs(kid(a, a)) < 0.02 * kid(a, a + 1.0)


@pytest.mark.slow  # KID, as above
def test_a_known_shift_gives_a_larger_distance(gauss):
    a, b, _ = gauss
    same, shifted = frechet(a, b), frechet(a, b + 1.0)
    assert same < 0.5 and shifted == pytest.approx(8.0, rel=0.2)  # FD of a unit shift in 8 dims = 8
    assert kid(a, b + 1.0) > 10 * max(kid(a, b), 1e-4)


def test_prdc_behaves_as_defined(gauss):
    a, b, _ = gauss
    same = prdc(a, b)
    assert same["precision"] > 0.6 and same["recall"] > 0.6 and same["coverage"] > 0.8
    far = prdc(a, b + 10)
    assert far["precision"] == 0 and far["recall"] == 0 and far["coverage"] == 0 and far["density"] == 0
    collapsed = prdc(a, np.repeat(a[:5], 120, axis=0) + 1e-3)  # mode collapse: precise, not diverse
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2 and collapsed["coverage"] < 0.2


def test_per_class_splits_by_label(gauss):
    a, b, _ = gauss
    la, lb = np.arange(600) % 2, np.arange(600) % 2
    res = per_class(frechet, a, la, b + (lb[:, None] * 3.0), lb, ["x", "y"])
    assert set(res) == {"overall", "x", "y"} and res["y"] > res["x"] + 10


def test_classifier_agreement_matches_sklearn():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 4, 300))
    res = classifier_agreement(truth, pred, ["a", "b", "c", "d"])
    assert res["macro_precision"] == pytest.approx(precision_score(truth, pred, average="macro"))
    assert res["macro_recall"] == pytest.approx(recall_score(truth, pred, average="macro"))
    assert res["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro"))
    assert res["per_class"]["b"]["f1"] == pytest.approx(f1_score(truth, pred, average=None)[1])
    # its seeded bootstrap interval holds the number; a perfect agreement has no spread
    lo, hi = res["macro_f1_interval"]
    assert lo < res["macro_f1"] < hi and hi - lo < 0.2
    assert classifier_agreement(truth, pred, ["a", "b", "c", "d"])["macro_f1_interval"] == [lo, hi]
    assert classifier_agreement(truth, truth, ["a", "b", "c", "d"])["macro_f1_interval"] == [1.0, 1.0]


def test_macro_auc_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), 200) + np.eye(3)[y] * 0.5
    p /= p.sum(1, keepdims=True)
    assert macro_auc(y, p, 3) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert macro_auc(y % 2, p[:, :2] / p[:, :2].sum(1, keepdims=True), 2) == pytest.approx(
        roc_auc_score(y % 2, p[:, 1] / p[:, :2].sum(1))
    )


# --- like for like ------------------------------------------------------------------------------


def _textures(n: int, size: int, seed: int) -> np.ndarray:
    """Patches with fine detail: smooth colour fields plus pixel-level noise."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, (n, 1, 1, 3))
    noise = rng.normal(0, 40, (n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _extract(imgs: np.ndarray) -> np.ndarray:
    """A fixed feature extractor that, like real ones, resizes every input to its own size (32 px)
    and is sensitive to fine detail: colour mean / spread and gradient energy per channel."""
    from PIL import Image

    x = np.stack(
        [np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.BILINEAR), np.float32) for im in imgs]
    )
    dx, dy = np.abs(np.diff(x, axis=1)).mean((1, 2)), np.abs(np.diff(x, axis=2)).mean((1, 2))
    return np.concatenate([x.mean((1, 2)) / 255, x.std((1, 2)) / 50, dx / 10, dy / 10], axis=1)  # O(1) scales


def _write_patches(path, imgs, labels, mpp, names=("a", "b")):
    from histosynth.patchfile import PatchBatch, PatchFileSpec, PatchWriter

    n, size = len(imgs), imgs.shape[1]
    with PatchWriter(path, PatchFileSpec(size, list(names), coords_attrs={"mpp": mpp})) as w:
        w.append(
            PatchBatch(
                imgs,
                np.full((n, 2), -1),
                np.asarray(labels),
                ["s"] * n,
                [f"c{i}" for i in range(n)],
                np.full(n, mpp, np.float32),
                extra={},
            )
        )
    return path


@pytest.fixture()
def two_resolutions(tmp_path):
    """The same 80 patches as 'synthetic' 64 px at 0.5 µm/px and as 'real' 16 px at 2 µm/px (same field of view)."""
    from PIL import Image

    hi = _textures(80, 64, seed=3)
    lo = np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.Resampling.LANCZOS)) for im in hi])
    labels = np.arange(80) % 2
    return (
        _write_patches(tmp_path / "real.h5", lo, labels, 2.0),
        _write_patches(tmp_path / "fake.h5", hi, labels, 0.5),
    )


def test_harmonisation_removes_a_resolution_only_distance(two_resolutions):
    from histosynth.evaluation.features import file_features

    real_h5, fake_h5 = two_resolutions
    rf, _ = file_features(_extract, real_h5)
    naive, _ = file_features(_extract, fake_h5)  # straight into the extractor, as before
    same, _ = file_features(_extract, fake_h5, size=16)  # brought to the real pixel size first
    assert frechet(rf, naive) > 1  # the extractor sees detail on one side only
    assert frechet(rf, same) < 1e-3 * frechet(rf, naive)
    # KID draws random subsets on each side: ~0 up to that sampling noise
    assert kid(rf, naive) > 1 and abs(kid(rf, same)) < 0.05 * kid(rf, naive)


def test_match_classes_gives_both_sides_the_same_make_up():
    from histosynth.evaluation.metrics import match_classes

    real = np.array([0] * 90 + [1] * 10 + [2] * 5)  # class 2 has no synthetic images
    fake = np.array([0] * 20 + [1] * 20 + [3] * 4)  # class 3 has no real patches
    r, f, info = match_classes(real, fake, "reference", seed=0)
    assert np.bincount(real[r]).tolist() == [10, 10]  # the scarcer real class sets N
    assert sorted(set(fake[f].tolist())) == [0, 1] and len(f) == 40
    assert info["only_real"] == [2] and info["only_synthetic"] == [3]
    r, f, _ = match_classes(real, fake, "synthetic", seed=0)
    assert len(r) == 100 and np.bincount(fake[f]).tolist() == [20, 2]  # 90 : 10 drawn from the synthetic side
    r, f, _ = match_classes(real, fake, "off")
    assert len(r) == len(real) and len(f) == len(fake)
    # seeded: the same draw every time
    assert np.array_equal(match_classes(real, fake, "reference", 5)[0], match_classes(real, fake, "reference", 5)[0])


def test_matching_removes_a_class_mix_only_distance():
    from histosynth.evaluation.metrics import match_classes

    rng = np.random.default_rng(4)
    real_labels = np.array([0] * 900 + [1] * 100)
    fake_labels = np.array([0] * 150 + [1] * 150)
    real = rng.normal(size=(1000, 4)) + real_labels[:, None] * 4.0
    fake = rng.normal(size=(300, 4)) + fake_labels[:, None] * 4.0  # each class drawn exactly like the real one
    r, f, _ = match_classes(real_labels, fake_labels, "reference", seed=0)
    assert frechet(real, fake) > 10 and frechet(real[r], fake[f]) < 0.3


def test_generation_metrics_record_geometry_classes_n_and_extractor(two_resolutions, tmp_path, monkeypatch):
    import json

    from histosynth.evaluation import evaluate, features

    real_h5, fake_h5 = two_resolutions
    info = {"kind": "backbone", "name": "tiny (cls token)", "random_network": True}
    monkeypatch.setattr(features, "make_extractor", lambda *a, **k: (_extract, info))
    monkeypatch.setattr(evaluate, "make_extractor", lambda *a, **k: (_extract, info))
    cfg = {
        "max_reference": None,
        "max_synthetic": None,
        "seed": 0,
        "prdc_k": 3,
        "match_classes": "reference",
        "device": "cpu",
        "inception_weights": "",
    }
    features.reference_features(real_h5, tmp_path / "ref.h5", "backbone", cfg, None, "cls", "test")
    outs = {m: tmp_path / f"{m}.json" for m in ("fd", "kid", "prdc")} | {"coverage": tmp_path / "coverage.png"}
    evaluate.evaluate_generation(
        {"raw": fake_h5, "filtered": fake_h5}, tmp_path / "ref.h5", cfg, None, "cls", outs, "exp"
    )
    fd = json.loads(outs["fd"].read_text())
    s = fd["sets"]["raw"]
    assert fd["extractor"] == info and fd["better"] == "lower" and fd["name"] == "FD"
    assert s["harmonisation"]["synthetic_px"] == 64 and s["harmonisation"]["resized_to_px"] == 16
    assert s["harmonisation"]["field_of_view_um"] == {"real": 32.0, "synthetic": 32.0}
    assert s["n_real"] == 80 and s["n_synthetic"] == 80 and s["class_counts_real"] == {"a": 40, "b": 40}
    assert s["overall"] < 1e-3 and set(s["per_class"]) == {"a", "b"}
    assert any(w.startswith("random network: mechanics only") for w in s["warnings"])
    assert json.loads(outs["prdc"].read_text())["sets"]["raw"]["overall"]["precision"] == 1.0


def test_reference_is_cropped_to_the_synthetic_field_of_view(tmp_path, monkeypatch):
    """PathLDM's case: real 32 px tiles, synthetic 16 px crops of the same tissue at the same 1 µm/px (the tiles'
    centres here). The whole tiles as reference: the fields of view differ and the resized crops are far from them;
    the reference cropped to the synthetic field: no warning, the crop recorded, no distance left."""
    import json

    from histosynth.evaluation import evaluate, features

    tiles = _textures(60, 32, seed=5)
    labels = np.arange(60) % 2
    real_h5 = _write_patches(tmp_path / "real.h5", tiles, labels, 1.0)
    fake_h5 = _write_patches(tmp_path / "fake.h5", np.ascontiguousarray(tiles[:, 8:24, 8:24]), labels, 1.0)
    info = {"kind": "backbone", "name": "fixed test features", "random_network": False}
    monkeypatch.setattr(features, "make_extractor", lambda *a, **k: (_extract, info))
    monkeypatch.setattr(evaluate, "make_extractor", lambda *a, **k: (_extract, info))
    cfg = {"max_reference": None, "max_synthetic": None, "seed": 0, "prdc_k": 3, "match_classes": "reference"}
    docs = {}
    for name, field in (("whole", None), ("crop", features.field_px(features.reference_field({"crop": 16})))):
        ref = tmp_path / f"ref_{name}.h5"
        features.reference_features(real_h5, ref, "backbone", cfg, None, "cls", "test", field=field)
        outs = {m: tmp_path / f"{name}_{m}.json" for m in ("fd", "kid", "prdc")}
        evaluate.evaluate_generation(
            {"raw": fake_h5}, ref, cfg, None, "cls", outs | {"coverage": tmp_path / f"{name}.png"}, "exp"
        )
        docs[name] = json.loads(outs["fd"].read_text())
    whole, crop = docs["whole"]["sets"]["raw"], docs["crop"]["sets"]["raw"]
    assert any(w.startswith("fields of view differ: real 32 µm, synthetic 16 µm") for w in whole["warnings"])
    assert "real_crop" not in whole["harmonisation"] and whole["overall"] > 1
    assert not any("fields of view differ" in w for w in crop["warnings"])
    assert crop["harmonisation"]["real_crop"].startswith("real patches centre-cropped from 32 to 16 px")
    assert crop["harmonisation"]["field_of_view_um"] == {"real": 16.0, "synthetic": 16.0}
    geo = docs["crop"]["reference"]["geometry"]
    assert geo["px"] == 16 and geo["cropped_from_px"] == 32 and geo["mpp"] == 1.0
    assert crop["overall"] < 1e-3 * whole["overall"]
    # a field within FOV_TOLERANCE of the whole patch, or the whole patch itself, is not cropped
    assert features.reference_crop({"px": 32, "mpp": 1.0}, 31) == ({"px": 32, "mpp": 1.0}, None)
    assert features.field_px("whole") is None


def test_macro_metrics_name_a_class_absent_from_the_test_split():
    from histosynth.classifier import evaluate as classifier_evaluate
    from histosynth.evaluation.metrics import macro_over_present

    labels = np.array([0, 0, 1, 1])  # class "c" has no test patches
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    test = classifier_evaluate(labels, probs, ["a", "b", "c"])
    # the classifier's own metric JSON says so too, instead of averaging in F1 = 0 for "c"
    assert test["macro_f1"] == pytest.approx(1.0) and test["classes_absent"] == ["c"] and "c" in test["warnings"][0]
    assert classifier_evaluate(labels, probs[:, :2] / probs[:, :2].sum(1, keepdims=True), ["a", "b"])["warnings"] == []
    res = macro_over_present(test, ["a", "b", "c"])
    assert res["macro_f1"] == pytest.approx(1.0) and res["classes_absent_from_test"] == ["c"]
    assert res["macro_over"] == "2 of 3 classes"
    agree = classifier_agreement(labels, labels, ["a", "b", "c"])
    assert agree["classes_absent"] == ["c"] and agree["macro_f1"] == pytest.approx(1.0)


def test_judge_half_keeps_whole_cases_and_names_a_lost_class(tmp_path):
    from histosynth.errors import InputError
    from histosynth.evaluation.evaluate import case_half
    from histosynth.patchfile import PatchBatch, PatchFile, PatchFileSpec, PatchWriter

    def write(path, labels, cases):
        n = len(labels)
        with PatchWriter(path, PatchFileSpec(8, ["a", "b"])) as w:
            w.append(
                PatchBatch(
                    np.zeros((n, 8, 8, 3), np.uint8),
                    np.full((n, 2), -1),
                    np.array(labels),
                    ["s"] * n,
                    cases,
                    np.full(n, 1.0, np.float32),
                )
            )
        return path

    src = write(tmp_path / "train.h5", [0, 1] * 8, [f"case{i // 4}" for i in range(16)])  # 4 cases, both classes each
    with PatchFile(case_half(src, tmp_path / "half.h5", seed=1)) as pf:
        assert len(set(pf.case_ids)) == 2 and len(pf) == 8 and set(pf.labels.tolist()) == {0, 1}
    one_class_per_case = write(tmp_path / "lop.h5", [0, 0, 1, 1], ["c0", "c0", "c1", "c1"])  # either half loses a class
    with pytest.raises(InputError, match="no patches of (a|b).*judge_cases"):
        case_half(one_class_per_case, tmp_path / "l.h5", seed=0)
