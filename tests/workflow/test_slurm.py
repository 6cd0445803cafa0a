"""The workflow on a real single-node SLURM cluster (Debian's slurm packages), started and
stopped by this test with tests/slurm/slurm_local.sh. Skipped where that cannot run (not root,
no apt-get, or HISTOSYNTH_SKIP_SLURM=1)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from histosynth.patchfile import check_patch_file

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "slurm" / "slurm_local.sh"
pytestmark = pytest.mark.slurm
pytest.importorskip(
    "snakemake_executor_plugin_slurm", reason="the SLURM executor is an extra: pip install 'histosynth[slurm]'"
)


def sh(*args, timeout=300, env=None):
    return subprocess.run(
        ["timeout", "-k", "10", str(timeout), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.environ.get("HISTOSYNTH_SKIP_SLURM") == "1":
        pytest.skip("HISTOSYNTH_SKIP_SLURM=1")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("starting a local SLURM cluster needs root and apt-get (Debian/Ubuntu)")
    state = tmp_path_factory.mktemp("slurm-state")
    env = {"SLURM_LOCAL_DIR": str(state), "FAKE_GPUS": "2"}  # two gpu=1 jobs side by side (gres backed by /dev/null)
    if not shutil.which("slurmctld"):
        r = sh("bash", str(SCRIPT), "install", timeout=600, env=env)
        if r.returncode:
            pytest.skip(f"could not install Debian's slurm packages: {r.stderr[-500:]}")
    r = sh("bash", str(SCRIPT), "configure", env=env)
    assert r.returncode == 0, r.stderr
    started = sh("bash", str(SCRIPT), "start", timeout=180, env=env)
    try:
        assert started.returncode == 0, started.stderr[-2000:]
        yield env
    finally:
        stopped = sh("bash", str(SCRIPT), "stop", timeout=120, env=env)  # by recorded PID only
        pids = list((state / "pids").glob("*.pid")) if (state / "pids").exists() else []
        assert stopped.returncode == 0 and not pids, stopped.stderr


def run_on_slurm(workdir, cfg, *targets, extra=()):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(cfg),
        "--workflow-profile",
        str(REPO / "profiles" / "slurm-ci"),
        *extra,
        *targets,
    ]
    return subprocess.run(["timeout", "-k", "10", "600", *cmd], capture_output=True, text=True)


def write_config(wd, rows):
    sheet = wd / "slides.tsv"
    sheet.write_text("slide_id\tslide_path\tcase_id\n" + "".join("\t".join(r) + "\n" for r in rows))
    cfg = wd / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "slides": str(sheet),
                "tiling": {"patch_size": 32, "mpp": 2.0, "labels": {"method": "dab"}, "tissue": {"max_saturation": 12}},
                "split": {"val": 0.25, "test": 0.25},
            }
        )
    )
    return cfg


def test_tiling_and_split_run_as_slurm_jobs(cluster, tmp_path):
    rows = [(f"demo_0{i}", f"resources/demo/demo_0{i}.tiff", f"case{i}") for i in range(1, 5)]
    cfg = write_config(tmp_path, rows)
    res = run_on_slurm(tmp_path, cfg, "results/splits/train.h5")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", out)
    # 4 demo slides + 4 tilings + 1 split, each a SLURM job
    assert len(job_ids) == 9, out[-3000:]
    for jid in job_ids:  # the jobs really ran under slurmctld, and finished
        state = sh("scontrol", "show", "job", jid, timeout=30).stdout
        assert "JobState=COMPLETED" in state, state
    for i in range(1, 5):
        assert check_patch_file(tmp_path / f"results/slide_patches/demo_0{i}.h5") > 0
    assert check_patch_file(tmp_path / "results/splits/train.h5") > 0


def test_a_failing_slurm_job_is_reported_as_failed(cluster, tmp_path):
    (tmp_path / "broken.svs").write_text("not a slide\n")
    cfg = write_config(tmp_path, [("broken", str(tmp_path / "broken.svs"), "c1")])
    res = run_on_slurm(tmp_path, cfg, "results/slide_patches/broken.h5")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", out), out[-3000:]
    assert not (tmp_path / "results/slide_patches/broken.h5").exists()


def test_sample_shards_run_as_separate_slurm_gpu_jobs(cluster, tmp_path):
    """Everything up to the trained model runs locally; only the 2 sampling shards go to SLURM, each
    its own GPU job, and scontrol shows them as two completed jobs of rule sample_synthetic, one per shard."""
    rows = [(f"demo_0{i}", f"resources/demo/demo_0{i}.tiff", f"case{i}") for i in range(1, 5)]
    cfg = write_config(tmp_path, rows)
    c = yaml.safe_load(cfg.read_text())
    c.update(
        train={
            "max_steps": 2,
            "batch_size": 4,
            "checkpoint_every": 2,
            "validation_every": 2,
            "validation_images_per_class": 1,
        },
        sampling={"steps": 2, "per_class": 2, "batch_size": 4, "shards": 2},
    )
    cfg.write_text(yaml.safe_dump(c))
    local = subprocess.run(
        [
            "timeout",
            "-k",
            "10",
            "1500",
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(cfg),
            "--cores",
            "2",
            "results/models/label_only/trained",
        ],
        capture_output=True,
        text=True,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    shards = [f"results/synthetic/label_only/shards/raw.{k}.h5" for k in range(2)]
    # small requests, so that both shards fit the 2-CPU CI node at once ("=": these options take several
    # values and would otherwise swallow the targets)
    res = run_on_slurm(
        tmp_path,
        cfg,
        *shards,
        extra=("--set-resources=sample_synthetic:mem_mb=1000", "--set-threads=sample_synthetic=1"),
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", out)
    assert len(set(job_ids)) == 2, out[-3000:]
    seen = []
    for jid in job_ids:
        state = sh("scontrol", "show", "job", jid, timeout=30).stdout
        # the GPU request as Slurm 22.05 shows it (newer versions also list gres/gpu=1 under TRES)
        assert "JobState=COMPLETED" in state and re.search(r"TresPerJob=gres[:/]gpu[:=]1", state), state
        seen.append(re.search(r"Comment=rule_sample_synthetic_wildcards_(\S+)", state).group(1))
    assert sorted(seen) == ["label_only_0", "label_only_1"], seen
    for shard in shards:
        assert check_patch_file(tmp_path / shard) == 2  # per_class 2 x 2 classes over 2 shards
