"""The metric JSON files: their writer, their readers and the top-level keys readers look up.

Two kinds, both plain JSON:

- a metric file ``results/eval/{experiment}/{metric}.json`` (``METRICS``), written by
  ``evaluation/evaluate.py``; every one has ``KEY_METRIC``. The generative ones (``fd``, ``kid``,
  ``prdc``) hold ``KEY_EXTRACTOR``, ``KEY_REFERENCE`` and per set in ``KEY_SETS`` the ``KEY_OVERALL``
  value, per-class values and ``KEY_WARNINGS``; ``agreement`` holds ``KEY_JUDGE`` and
  ``KEY_FILTER_CLASSIFIER``, each with ``KEY_SETS``; ``downstream`` holds ``KEY_RESULTS`` per run.
- a classifier's ``metrics.json`` (the real-only classifier, the judge, the downstream runs), written by
  ``classifier.train_classifier``: its numbers on the test split under ``KEY_TEST``.

A number with a sampling uncertainty (a macro AUC, a macro F1) has its bootstrap interval beside it under
``interval_key(key)`` as ``[low, high]`` (``with_interval`` writes it, ``read_interval`` reads it); files
written before intervals existed lack it, and ``read_interval`` gives None.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError

METRICS = ("fd", "kid", "prdc", "agreement", "downstream")  # one {metric}.json per experiment each
KEY_METRIC = "metric"
KEY_EXTRACTOR = "extractor"
KEY_REFERENCE = "reference"
KEY_SETS = "sets"
KEY_OVERALL = "overall"
KEY_WARNINGS = "warnings"
KEY_JUDGE = "judge"
KEY_FILTER_CLASSIFIER = "filter_classifier"
KEY_RESULTS = "results"
KEY_TEST = "test"  # a classifier's metrics.json: its numbers on the test split
INTERVAL_SUFFIX = "_interval"  # "macro_auc_interval": [low, high] beside "macro_auc"


def interval_key(key: str) -> str:
    return key + INTERVAL_SUFFIX


def with_interval(key: str, value: float, interval: tuple[float, float] | None) -> dict:
    """``{key: value, key_interval: [low, high]}`` (no interval key when there is none, e.g. too few samples)."""
    return {key: value, **({interval_key(key): [float(interval[0]), float(interval[1])]} if interval else {})}


def read_interval(doc: dict, key: str) -> tuple[float, float] | None:
    """The interval of ``doc[key]``, or None when the file has none (written before intervals, or too few samples)."""
    v = (doc or {}).get(interval_key(key))
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(isinstance(x, (int, float)) for x in v):
        return None
    lo, hi = float(v[0]), float(v[1])
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None


def write_metrics(path, doc: dict) -> None:
    """A metric file (numpy scalars as numbers, anything else JSON cannot hold as text)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=lambda v: float(v) if np.isscalar(v) else str(v)))


def write_classifier_metrics(path, metrics: dict) -> None:
    """A classifier's ``metrics.json``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, default=float))


def _read(path, key: str, what: str) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{what} {path}: cannot read it ({e})") from e
    if not isinstance(doc, dict) or key not in doc:
        raise InputError(f"{what} {path}: no {key!r} key (not a file written by histosynth's evaluation)")
    return doc


def read_metrics(path) -> dict:
    """A metric file; an ``InputError`` naming it when it is missing, not JSON or lacks ``KEY_METRIC``."""
    return _read(path, KEY_METRIC, "metric file")


def read_classifier_metrics(path) -> dict:
    """A classifier's ``metrics.json``; an ``InputError`` naming it when it is missing, not JSON or lacks
    ``KEY_TEST``."""
    return _read(path, KEY_TEST, "classifier metrics")
