import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from histosynth.classifier import macro_auc
from histosynth.evaluation.metrics import classifier_agreement, frechet, kid, per_class, prdc


@pytest.fixture()
def gauss():
    rng = np.random.default_rng(0)
    return rng.normal(size=(600, 8)), rng.normal(size=(600, 8)), rng


def test_identical_sets_give_zero_distances(gauss):
    a, _, _ = gauss
    assert frechet(a, a) == pytest.approx(0, abs=1e-6)
    # unbiased KID draws independent subsets from both sides: ~0 up to sampling noise
    assert abs(kid(a, a)) < 0.02 * kid(a, a + 1.0)


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


def test_macro_auc_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), 200) + np.eye(3)[y] * 0.5
    p /= p.sum(1, keepdims=True)
    assert macro_auc(y, p, 3) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert macro_auc(y % 2, p[:, :2] / p[:, :2].sum(1, keepdims=True), 2) == pytest.approx(
        roc_auc_score(y % 2, p[:, 1] / p[:, :2].sum(1)))
