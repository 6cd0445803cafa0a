"""The real workflow, run by snakemake in a temporary working directory."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from histosynth.patchfile import PatchFile, check_patch_file

pytestmark = pytest.mark.workflow
REPO = Path(__file__).resolve().parents[2]


def write_config(workdir, samples_rows, datasets=(), **extra):
    sheet = workdir / "slides.tsv"
    sheet.write_text("slide_id\tslide_path\tcase_id\tlabel\n" + "".join("\t".join(r) + "\n" for r in samples_rows))
    cfg = {
        "slides": str(sheet),
        "patch_datasets": list(datasets),
        "tiling": {"patch_size": 32, "mpp": 2.0, "labels": {"method": "dab"}, "tissue": {"max_saturation": 12}},
        "split": {"val": 0.25, "test": 0.25, "seed": 0},
        "embedding": {"num_workers": 0},
        "morphology": {"k": 2, "sweep": [2, 3]},
        "pretrain": {"vae_steps": 4, "unet_steps": 4, "checkpoint_every": 2, "batch_size": 4},
        "train": {
            "max_steps": 6,
            "batch_size": 4,
            "checkpoint_every": 3,
            "validation_every": 6,
            "validation_images_per_class": 1,
        },
        "sampling": {"steps": 2, "per_class": 2, "batch_size": 4, "shards": 2},
        "classifier": {"epochs": 1},
        "filter": {"max_rounds": 1},
        "evaluation": {"feature_extractor": "classifier", "downstream_epochs": 1},
        **extra,
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, run_snakemake):
    """Demo slides built by the workflow itself, plus an imported MedMNIST-style dataset."""
    wd = tmp_path_factory.mktemp("wf")
    rng = np.random.default_rng(0)
    np.savez(
        wd / "mini.npz",
        train_images=rng.integers(0, 255, (12, 28, 28, 3), dtype=np.uint8),
        train_labels=(np.arange(12) % 2).reshape(12, 1),
    )
    rows = [(f"demo_0{i}", f"resources/demo/demo_0{i}.tiff", f"case{i}", "") for i in (1, 2, 3)]
    (wd / "reports.csv").write_text(
        'case_id,text\ncase1,"Invasive ductal carcinoma, grade 2. Margins negative."\ncase2,\n'
    )
    cfg = write_config(
        wd,
        rows,
        datasets=[
            {
                "name": "mini",
                "format": "medmnist",
                "path": str(wd / "mini.npz"),
                "split": "resplit",
                "label_names": ["dab_negative", "dab_positive"],
            }
        ],
        pathology_reports={"path": str(wd / "reports.csv")},
        experiments={
            "label_only": {"prompts": "label"},
            "morphology": {"prompts": "morphology"},
            "report": {"prompts": "report"},
        },
    )
    res = run_snakemake(wd, "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-4000:]
    return wd, cfg


def test_outputs_follow_the_contract(finished_run):
    wd, _ = finished_run
    for i in (1, 2, 3):
        assert check_patch_file(wd / f"results/slide_patches/demo_0{i}.h5") > 0
        assert (wd / f"results/slide_patches/demo_0{i}.thumbnail.png").stat().st_size > 0
        assert (wd / f"results/logs/tile_slide/demo_0{i}.log").exists()
        assert (wd / f"results/benchmarks/tile_slide/demo_0{i}.tsv").exists()
    assert check_patch_file(wd / "results/slide_patches/mini.h5") == 12
    total = sum(check_patch_file(wd / f"results/splits/{s}.h5") for s in ("train", "val", "test"))
    tiles = sum(check_patch_file(p) for p in (wd / "results/slide_patches").glob("*.h5"))
    assert total == tiles
    with PatchFile(wd / "results/splits/train.h5") as pf:
        assert pf.label_names == ["dab_negative", "dab_positive"]
    assert (wd / "results/splits/examples.png").stat().st_size > 0


def test_complete_run_schedules_nothing(finished_run, run_snakemake):
    wd, cfg = finished_run
    res = run_snakemake(wd, "--configfile", str(cfg), "-n")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr


def scheduled(run_snakemake, wd, cfg, change):
    c = yaml.safe_load(cfg.read_text())
    change(c)
    changed = wd / "changed.yaml"
    changed.write_text(yaml.safe_dump(c))
    res = run_snakemake(wd, "--configfile", str(changed), "-n", "--quiet", "rules")
    assert res.returncode == 0, res.stderr[-3000:]
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip() and line.split()[-1].isdigit()} - {
        "total",
        "job",
    }


def test_tiling_change_reruns_everything_downstream_of_tiling(finished_run, run_snakemake):
    wd, cfg = finished_run
    rules = scheduled(run_snakemake, wd, cfg, lambda c: c["tiling"].update(min_tissue_fraction=0.7))
    assert {
        "tile_slide",
        "split_patches",
        "pretrain_base",
        "embed_patches",
        "cluster_morphology",
        "build_prompts",
    } <= rules
    # import_patches reads tiling.patch_size only; models and demo slides do not depend on tiling
    assert not rules & {
        "import_patches",
        "make_demo_slide",
        "prepare_base_model",
        "prepare_embedder",
        "summarize_reports",
    }


def test_prompt_template_change_reruns_only_that_strategy(finished_run, run_snakemake):
    wd, cfg = finished_run
    rules = scheduled(
        run_snakemake,
        wd,
        cfg,
        lambda c: c.setdefault("prompts", {}).update(morphology_template="{label}, type {cluster}"),
    )
    assert rules == {
        "build_prompts",
        "cache_latents",
        "train_diffusion",
        "sample_synthetic",
        "gather_samples",
        "filter_synthetic",
        "gather_filtered",
        "evaluate_generation",
        "evaluate_agreement",
        "evaluate_downstream",
        "model_card",
        "html_report",
        "all",
    }
    res = run_snakemake(wd, "--configfile", str(wd / "changed.yaml"), "-n")
    assert "results/prompts/morphology.tsv" in res.stdout and "results/prompts/label_only.tsv" not in res.stdout
    assert "results/models/label_only/trained" not in res.stdout


def test_sampling_change_reruns_sampling_and_what_follows_only(finished_run, run_snakemake):
    wd, cfg = finished_run
    rules = scheduled(run_snakemake, wd, cfg, lambda c: c["sampling"].update(guidance_scale=3.0))
    # sampling, the filter, evaluation, the model cards and the report; no tiling, embedding, training
    assert rules == {
        "sample_synthetic",
        "gather_samples",
        "filter_synthetic",
        "gather_filtered",
        "evaluate_generation",
        "evaluate_agreement",
        "evaluate_downstream",
        "model_card",
        "html_report",
        "all",
    }


def test_one_experiments_override_reruns_only_that_experiment(finished_run, run_snakemake):
    wd, cfg = finished_run
    rules = scheduled(
        run_snakemake, wd, cfg, lambda c: c["experiments"]["report"].update(sampling={"scheduler": "euler"})
    )
    assert rules == {
        "sample_synthetic",
        "gather_samples",
        "filter_synthetic",
        "gather_filtered",
        "evaluate_generation",
        "evaluate_agreement",
        "evaluate_downstream",
        "model_card",
        "html_report",
        "all",
    }
    res = run_snakemake(wd, "--configfile", str(wd / "changed.yaml"), "-n")
    # (the report lists every experiment's sets among its inputs; only outputs say what is made again)
    assert (
        "output: results/synthetic/report/raw.h5" in res.stdout
        and "output: results/synthetic/label_only/raw.h5" not in res.stdout
    )


def test_a_killed_shard_reruns_alone_and_a_lost_one_leaves_the_gathered_set_whole(finished_run, run_snakemake):
    """A killed shard job leaves no file (outputs are atomic) and no gathered set: only that shard is
    sampled again, then gathered. A shard file lost after gathering changes nothing (Snakemake does
    not remake it), so the gathered set must not depend on it."""
    wd, cfg = finished_run
    shards = wd / "results/synthetic/report/shards"
    gathered = wd / "results/synthetic/report/raw.h5"
    with PatchFile(gathered) as pf:
        before = [pf.imgs[i].copy() for i in range(len(pf))]
    moved = [(shards / "raw.1.h5", shards / "aside.h5"), (gathered, gathered.with_name("aside.h5"))]
    for src, dst in moved:
        src.rename(dst)
    try:
        # the set itself as the target: with the rest of the run complete, Snakemake would remake
        # neither missing file (nothing up to date needs them), as in the second case below
        killed = run_snakemake(wd, "--configfile", str(cfg), "-n", "results/synthetic/report/raw.h5")
        moved[1][1].rename(gathered)  # the shard is lost after the gather
        lost = run_snakemake(wd, "--configfile", str(cfg), "-n")
        with PatchFile(gathered) as pf:
            after = [pf.imgs[i] for i in range(len(pf))]
    finally:
        for src, dst in moved:
            if dst.exists():
                dst.rename(src)
    assert killed.returncode == 0, killed.stderr[-3000:]
    made = [line.split("output: ", 1)[1] for line in killed.stdout.splitlines() if "output: " in line]
    assert any("shards/raw.1.h5" in m for m in made) and any("report/raw.h5" in m for m in made), made
    assert not [m for m in made if "raw.0.h5" in m or "label_only" in m], made
    assert lost.returncode == 0 and "Nothing to be done" in lost.stdout + lost.stderr, lost.stdout[-3000:]
    assert len(after) == len(before) and all(np.array_equal(x, y) for x, y in zip(after, before))
    assert all(x.any() for x in after)  # not HDF5's zeros for a missing source


def test_pretraining_change_retrains_the_base_and_every_experiment_only(finished_run, run_snakemake):
    wd, cfg = finished_run
    rules = scheduled(run_snakemake, wd, cfg, lambda c: c["pretrain"].update(unet_steps=5))
    # the random base, the data, the prompts (tokenizer of the random base) and the classifiers stay; everything the base feeds is redone
    assert rules == {
        "pretrain_base",
        "cache_image_latents",
        "cache_latents",
        "train_diffusion",
        "sample_synthetic",
        "gather_samples",
        "filter_synthetic",
        "gather_filtered",
        "evaluate_generation",
        "evaluate_agreement",
        "evaluate_downstream",
        "model_card",
        "html_report",
        "all",
    }


def test_pretrained_base_names_its_cache_and_experiments_are_keyed_by_it(finished_run):
    wd, _ = finished_run
    source = json.loads((wd / "results/models/base/histosynth_source.json").read_text())
    untrained = json.loads((wd / "results/models/base_untrained/histosynth_source.json").read_text())
    assert untrained["base_model"] == "tiny" and source["base_model"].startswith("tiny+pretrained:")
    key = source["base_model"].split(":", 1)[1]
    assert (wd / "results/checkpoints/pretrain_base" / key / "unet" / "config.json").is_file()
    trained = json.loads((wd / "results/models/label_only/trained/histosynth_training.json").read_text())
    assert trained["base_model"]["source"] == source["base_model"]


def test_diffusion_outputs(finished_run):
    wd, _ = finished_run
    for exp in ("label_only", "morphology", "report"):
        assert (wd / f"results/models/{exp}/trained/pytorch_lora_weights.safetensors").is_file()
        assert check_patch_file(wd / f"results/synthetic/{exp}/raw.h5") > 0
        with h5py.File(wd / f"results/synthetic/{exp}/raw.h5", "r") as h:  # the two shards, copied
            shard_rows = [check_patch_file(wd / f"results/synthetic/{exp}/shards/raw.{k}.h5") for k in (0, 1)]
            assert not h["imgs"].is_virtual and len(h["imgs"]) == sum(shard_rows) and min(shard_rows) > 0
        check_patch_file(wd / f"results/synthetic/{exp}/filtered.h5")
        assert len(pd.read_csv(wd / f"results/models/{exp}/loss.tsv", sep="\t")) == 6
    metrics = json.loads((wd / "results/classifier/metrics.json").read_text())
    assert "macro_auc" in metrics["test"]


def test_prompts_for_every_experiment(finished_run):
    wd, _ = finished_run
    with PatchFile(wd / "results/splits/train.h5") as pf:
        n = len(pf)
    for exp in ("label_only", "morphology", "report"):
        df = pd.read_csv(wd / f"results/prompts/{exp}.tsv", sep="\t")
        assert len(df) == n and not df["truncated"].any()
    morph = pd.read_csv(wd / "results/prompts/morphology.tsv", sep="\t")
    assert morph["prompt"].str.contains("morphology type (?:zero|one)$").all()
    summaries = pd.read_csv(wd / "results/pathology_reports/summaries.tsv", sep="\t", keep_default_na=False).set_index(
        "case_id"
    )
    assert summaries.loc["case1", "summary"] == "invasive ductal carcinoma (NST); Nottingham grade 2; margins negative"
    assert summaries.loc["case2", "status"] == "empty"
    assert (wd / "results/morphology/k_sweep.png").stat().st_size > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"tiling": {"patch_sise": 32}}, "patch_sise"),
        ({"split": {"val": "lots"}}, "lots"),
        ({"train": {"method": "full", "rank": 8}}, "train.rank = 8 applies to train.method 'lora' only"),
    ],
)
def test_bad_config_stops_with_the_key(tmp_path, extra, message, run_snakemake):
    cfg = write_config(tmp_path, [("s1", "x.svs", "c1", "")], **extra)
    res = run_snakemake(tmp_path, "--configfile", str(cfg), "-n")
    assert res.returncode != 0 and message in res.stdout + res.stderr


def test_duplicate_slide_id_stops_the_run(tmp_path, run_snakemake):
    cfg = write_config(tmp_path, [("s1", "a.svs", "c1", ""), ("s1", "b.svs", "c2", "")])
    res = run_snakemake(tmp_path, "--configfile", str(cfg), "-n")
    assert res.returncode != 0 and "duplicate slide_id ['s1']" in res.stdout + res.stderr


def test_missing_slide_file_is_named(tmp_path, run_snakemake):
    cfg = write_config(tmp_path, [("s1", "nowhere/missing.svs", "c1", "")])
    res = run_snakemake(tmp_path, "--configfile", str(cfg), "-n")
    assert res.returncode != 0 and "nowhere/missing.svs" in res.stdout + res.stderr


def test_corrupt_slide_fails_alone_with_keep_going(tmp_path, run_snakemake):
    (tmp_path / "broken.svs").write_text("not a slide at all\n")
    cfg = write_config(
        tmp_path, [("good", "resources/demo/demo_04.tiff", "c1", ""), ("broken", "broken.svs", "c2", "")]
    )
    res = run_snakemake(tmp_path, "--configfile", str(cfg), "--keep-going")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert check_patch_file(tmp_path / "results/slide_patches/good.h5") > 0
    assert not (tmp_path / "results/slide_patches/broken.h5").exists()
    assert "slide 'broken'" in out and "not a whole-slide image" in out
    assert not (tmp_path / "results/splits/train.h5").exists()
    # after snakemake's error block comes ours: what is wrong and which log to open (snakemake then
    # closes with its log path and "WorkflowError: At least one job did not complete successfully.")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    ours = lines.index(next(x for x in lines if x.startswith("histosynth: what failed")))
    assert ours > max(i for i, x in enumerate(lines) if x.startswith("Error in rule tile_slide"))
    assert lines[ours + 1].startswith("histosynth: rule tile_slide (slide=broken): slide 'broken'")
    assert "results/logs/tile_slide/broken.log" in lines[ours + 1]


def test_report_is_self_contained_and_complete(finished_run):
    wd, _ = finished_run
    html = (wd / "results/html_report/index.html").read_text()
    for exp in ("label_only", "morphology", "report"):
        assert f"<h3>{exp} " in html
        for metric in ("fd", "kid", "prdc", "agreement", "downstream"):
            doc = json.loads((wd / f"results/eval/{exp}/{metric}.json").read_text())
            assert doc["metric"] == metric and doc["experiment"] == exp
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(srcs) >= 3 * 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in html and "https://" not in html.replace("https://json-schema.org", "")
    assert "not Inception features" in html


def report_inputs_from_summary(run_snakemake, wd, cfg) -> list[str]:
    """The report rule's declared inputs, as Snakemake itself lists them (--detailed-summary)."""
    res = run_snakemake(wd, "--configfile", str(cfg), "--detailed-summary")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    header = rows[0]
    row = next(r for r in rows if r[0] == "results/html_report/index.html")
    return [f for f in row[header.index("input-file(s)")].split(",") if f]


def test_touching_any_file_the_report_shows_reschedules_it(finished_run, run_snakemake):
    """One file of each kind the page shows (metrics, grids, pictures, tables, thumbnails, ...): a dry run
    after changing it schedules the report (so the report declares everything it reads)."""
    wd, cfg = finished_run
    inputs = report_inputs_from_summary(run_snakemake, wd, cfg)
    names = {"label_only", "morphology", "report", "demo_01", "demo_02", "demo_03"}
    kinds = {}
    for f in inputs:
        kinds.setdefault(re.sub("|".join(sorted(names, key=len, reverse=True)), "*", f), f)
    assert len(kinds) >= 20 and any("validation" in k for k in kinds) and any("thumbnail" in k for k in kinds)
    for kind, f in kinds.items():
        path = wd / f
        # a changed file, not only a newer one: Snakemake compares small files by checksum, and a
        # directory() by the time stamp file it keeps inside
        target = path / ".snakemake_timestamp" if path.is_dir() else path
        before, stat = target.read_bytes(), target.stat()
        target.write_bytes(before + b"\n")
        os.utime(target, (stat.st_atime, time.time() + 60))
        try:
            res = run_snakemake(wd, "--configfile", str(cfg), "-n", "--quiet", "rules")
        finally:
            target.write_bytes(before)
            os.utime(target, (stat.st_atime, stat.st_mtime))
        assert res.returncode == 0, res.stderr[-2000:]
        assert re.search(r"^html_report\s+1$", res.stdout, re.M), f"touching {f} does not reschedule the report"


def test_snakemake_report_has_the_metric_tables(finished_run, run_snakemake):
    wd, cfg = finished_run
    res = run_snakemake(wd, "--configfile", str(cfg), "--report", str(wd / "snakemake_report.zip"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert (wd / "snakemake_report.zip").stat().st_size > 10_000
    import zipfile

    zf = zipfile.ZipFile(wd / "snakemake_report.zip")
    names = zf.namelist()
    for f in ("index.html", "metrics.tsv", "verdicts.tsv"):  # stored as data/raw/<hash>/<name>
        assert any(n.endswith("/" + f) for n in names), f"results/html_report/{f} not in Snakemake's report"
    # the landing text and the table captions link to the page (report/*.rst: `index.html`_)
    page = zf.read(next(n for n in names if n.endswith("/report.html"))).decode()
    assert page.count("showResultInfo('results/html_report/index.html')") >= 3


def test_lint_is_clean():
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and "Congratulations" in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]


def test_every_rule_declares_a_conda_env():
    envs = {p.name for p in (REPO / "envs").glob("*.yaml")}
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n|\n)+)", text, re.M):
            if rule == "all":
                continue
            env = re.search(r'conda:\n\s+"\.\./envs/([\w.-]+)"', body)
            assert env and env.group(1) in envs, f"{smk.name}: rule {rule} has no conda env from envs/"
            assert "log:" in body and "benchmark:" in body, f"{smk.name}: rule {rule} lacks log or benchmark"


def test_killed_training_job_resumes_from_its_checkpoint(finished_run, tmp_path):
    wd, cfg = finished_run
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, symlinks=True)
    c = yaml.safe_load(cfg.read_text())
    c["train"].update(max_steps=400, checkpoint_every=20, validation_every=1000)
    longer = copy / "longer.yaml"
    longer.write_text(yaml.safe_dump(c))
    target = "results/models/label_only/trained"

    def cmd(*args):  # --configfile takes several values, so it goes last
        return [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(copy),
            "--cores",
            "2",
            *args,
            "--configfile",
            str(longer),
        ]

    proc = subprocess.Popen(cmd(target), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpts = copy / "results" / "checkpoints" / "label_only"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(ckpts.glob("*/checkpoint-40")):
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job, as a scheduler or an OOM killer would
    proc.wait(timeout=30)
    assert not (copy / target / "pytorch_lora_weights.safetensors").exists()
    subprocess.run(cmd("--unlock"), capture_output=True, timeout=120)
    res = subprocess.run(cmd("--rerun-incomplete", target), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    log = (copy / "results/logs/train_diffusion/label_only.log").read_text()
    resumed = int(re.search(r"resuming from checkpoint .* \(step (\d+) of 400\)", log).group(1))
    assert resumed >= 40
    summary = json.loads((copy / "results/models/label_only/train_summary.json").read_text())
    assert summary["resumed_from"] == resumed and summary["steps"] == 400


def test_changed_prompts_do_not_resume_a_stale_checkpoint(finished_run, tmp_path, run_snakemake):
    """The finished run left label_only's checkpoint of step 3 (of 6). Retraining on the same data resumes it;
    after a prompt-template change the latent cache has another data fingerprint, so training starts at step 0."""
    wd, cfg = finished_run
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, symlinks=True)
    target = "results/models/label_only/trained"
    summary, log = (
        copy / "results/models/label_only/train_summary.json",
        copy / "results/logs/train_diffusion/label_only.log",
    )
    res = run_snakemake(copy, target, "--forcerun", "train_diffusion", "--configfile", str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(summary.read_text())["resumed_from"] == 3
    assert re.search(r"resuming from checkpoint .*checkpoint-3 \(step 3 of 6\): it matches", log.read_text())
    c = yaml.safe_load(cfg.read_text())
    c.setdefault("prompts", {})["label_template"] = "An H&E patch of {label} tissue"
    changed = copy / "changed.yaml"
    changed.write_text(yaml.safe_dump(c))
    res = run_snakemake(copy, target, "--configfile", str(changed))
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(summary.read_text())["resumed_from"] == 0
    assert "no checkpoint in" in log.read_text() and len(list((copy / "results/checkpoints/label_only").iterdir())) == 2
