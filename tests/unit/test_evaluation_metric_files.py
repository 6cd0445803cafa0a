"""The metric JSON files: what the writers write, the readers read back; a bad file is named."""

import re

import numpy as np
import pytest

from histosynth.errors import InputError
from histosynth.evaluation.metric_files import (
    KEY_METRIC,
    KEY_OVERALL,
    KEY_SETS,
    KEY_TEST,
    read_classifier_metrics,
    read_metrics,
    write_classifier_metrics,
    write_metrics,
)


def test_written_metric_files_read_back(tmp_path):
    doc = {KEY_METRIC: "fd", KEY_SETS: {"raw": {KEY_OVERALL: np.float32(1.5), "n_real": np.int64(3)}}}
    write_metrics(tmp_path / "fd.json", doc)
    assert read_metrics(tmp_path / "fd.json") == {KEY_METRIC: "fd", KEY_SETS: {"raw": {KEY_OVERALL: 1.5, "n_real": 3}}}
    write_classifier_metrics(tmp_path / "metrics.json", {KEY_TEST: {"macro_auc": np.float64(0.75)}, "n_train": 4})
    assert read_classifier_metrics(tmp_path / "metrics.json")[KEY_TEST] == {"macro_auc": 0.75}


@pytest.mark.parametrize(
    "content, why",
    [
        (None, "cannot read it"),
        ("{not json", "cannot read it"),
        ("[1, 2]", "no 'metric' key"),
        ('{"name": "FD", "sets": {}}', "no 'metric' key"),
    ],
)
def test_a_missing_broken_or_foreign_metric_file_is_named(tmp_path, content, why):
    path = tmp_path / "kid.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=f"metric file {re.escape(str(path))}: {why}"):
        read_metrics(path)


def test_a_classifier_metrics_file_without_test_numbers_is_named(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"metric": "fd"}')
    with pytest.raises(InputError, match=f"classifier metrics {re.escape(str(path))}: no 'test' key"):
        read_classifier_metrics(path)


def test_an_interval_is_written_beside_its_number_and_an_old_file_has_none(tmp_path):
    from histosynth.evaluation.metric_files import read_interval, with_interval

    doc = {KEY_METRIC: "downstream", **with_interval("macro_auc", 0.8, (np.float64(0.75), 0.85))}
    write_metrics(tmp_path / "downstream.json", doc)
    back = read_metrics(tmp_path / "downstream.json")
    assert back["macro_auc_interval"] == [0.75, 0.85] and read_interval(back, "macro_auc") == (0.75, 0.85)
    assert list(with_interval("macro_auc", 0.5, None)) == ["macro_auc"]  # too few samples: no interval key
    # a file from before intervals, or a malformed one: no interval, no error
    for old in ({"macro_auc": 0.8}, {"macro_auc_interval": "0.7-0.9"}, {"macro_auc_interval": [0.7, None]}, None):
        assert read_interval(old, "macro_auc") is None
