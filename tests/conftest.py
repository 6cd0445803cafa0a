from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from histosynth.config import default_config
from histosynth.demo import make_demo_slide, write_pyramidal_tiff

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """A test under tests/workflow/ is a workflow test, and one that reads ../shared/data (the ``shared_data``
    fixture) a data test (tests/README.md), marked or not."""
    for item in items:
        if (HERE / "workflow") in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.workflow)
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (only present beside a development checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_slide(tmp_path_factory) -> Path:
    """A 1024x1024 px pyramidal TIFF at 0.5 um/px with one irregular IHC tissue piece."""
    return make_demo_slide(tmp_path_factory.mktemp("slides") / "demo_00.tiff", variant=0, size=1024)


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory) -> Path:
    """Glass only: a valid slide with no tissue."""
    rng = np.random.default_rng(0)
    img = np.clip(242 + rng.normal(0, 1.5, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("slides") / "blank.tiff"
    write_pyramidal_tiff(path, img, mpp=0.5)
    return path


@pytest.fixture()
def cfg():
    """Schema defaults with a small patch size, as the demo uses."""
    return default_config(tiling={"patch_size": 64, "mpp": 1.0, "tissue": {"max_saturation": 12}})


def _run_snakemake(workdir: Path, *args: str, timeout: int = 2400) -> subprocess.CompletedProcess:
    """Run the real workflow in ``workdir`` with the repository's Snakefile."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *args,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def run_snakemake():
    return _run_snakemake
