"""``snakemake -n`` on a user's config and on each paper preset: the config is read, checked and turned
into the DAG it names (no job runs)."""

import numpy as np
import pytest
import yaml

from histosynth.config import REPO_ROOT, load_config
from histosynth.evaluation.features import REFERENCE_FILE, reference_field

PRESETS = sorted((REPO_ROOT / "config" / "presets").glob("*.yaml"))


def test_snakemake_uses_only_the_named_config_and_logs_it(tmp_path, run_snakemake):
    (tmp_path / "tiles" / "a" / "p1").mkdir(parents=True)
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "slides: ''\npatch_datasets:\n  - {name: t, format: folder, path: tiles, case_from: subfolder}\n"
        "experiments:\n  mine: {prompts: label}\n"
    )
    res = run_snakemake(tmp_path, "-n", "--configfile", str(mine))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert (
        f"histosynth config: {mine}\n  experiments: mine (label)\n  slides: none\n  patch datasets: t (folder: tiles)\n  reports: none"
        in out
    )
    assert "results/prompts/mine.tsv" in out and "label_only" not in out and "summarize_reports" not in out
    mine.write_text(mine.read_text() + "tiling: {patch_sise: 32}\n")
    res = run_snakemake(tmp_path, "-n", "--configfile", str(mine))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and f"unknown key 'tiling.patch_sise' (did you mean 'patch_size'?) in {mine}" in out
    assert len(out.splitlines()) < 15  # one sentence, not a dump of the config and the schema
    # fractions that leave nothing to train on stop the run before any job (and so before any deletion)
    mine.write_text(mine.read_text().replace("tiling: {patch_sise: 32}", "split: {val: 0.5, test: 0.5}"))
    res = run_snakemake(tmp_path, "-n", "--configfile", str(mine))
    assert res.returncode != 0 and "split.val (0.5) + split.test (0.5) must be below 1" in res.stdout + res.stderr


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_validate_and_dry_run(preset, tmp_path, run_snakemake):
    cfg = load_config(preset)  # schema check, defaults filled
    assert cfg["base_model"] != "tiny"
    # FD / KID / PRDC come from a real network: Inception, the trained classifier, or a named backbone
    ev = cfg["evaluation"]
    backbone = cfg["embedding"]["backbone"] if ev["backbone"] == "embedding" else ev["backbone"]
    assert ev["feature_extractor"] != "backbone" or backbone != "tiny"
    assert ev["backbone"] not in ("tiny", "embedding"), "name the FD backbone explicitly in every preset"
    raw = yaml.safe_load(preset.read_text())
    # stand-ins for the user's data at the paths the preset names
    if raw.get("slides"):
        sheet = tmp_path / raw["slides"]
        sheet.parent.mkdir(parents=True, exist_ok=True)
        (sheet.parent / "s1.svs").write_bytes(b"")
        sheet.write_text(f"slide_id\tslide_path\tcase_id\nS1\t{sheet.parent / 's1.svs'}\tTCGA-00-0001\n")
    for d in raw.get("patch_datasets", []):
        p = tmp_path / d["path"]
        p.parent.mkdir(parents=True, exist_ok=True)
        if d["format"] == "pcam":
            p.mkdir(exist_ok=True)
        else:
            np.savez(p, train_images=np.zeros((1, 8, 8, 3), np.uint8), train_labels=np.zeros((1, 1)))
    if raw.get("pathology_reports", {}).get("path"):
        r = tmp_path / raw["pathology_reports"]["path"]
        r.parent.mkdir(parents=True, exist_ok=True)
        r.write_text("bcr_patient_barcode,text\nTCGA-00-0001,carcinoma\n")
    for scores in (raw.get("tiling", {}).get("labels", {}).get("scores"), raw.get("prompts", {}).get("patch_scores")):
        if scores:  # per-patch tumour / TIL scores, an input of tiling and of the report prompts
            (tmp_path / scores).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / scores).write_text("slide_id\tx\ty\ttumor\ttil\n")
    weights = raw.get("evaluation", {}).get("inception_weights")
    if weights:  # a declared input of the rules that read it
        (tmp_path / weights).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / weights).write_bytes(b"")
    res = run_snakemake(tmp_path, "--configfile", str(preset), "-n")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "train_diffusion" in res.stdout and "html_report" in res.stdout
    # FD / KID / PRDC compare like with like: with train.crop (PathLDM's 256 px of 448 px tiles) the real reference is
    # cut to the synthetic field of view, a file of its own
    field = reference_field(cfg["train"])
    assert REFERENCE_FILE.format(kind=ev["feature_extractor"], field=field) in res.stdout
    if preset.stem == "pathldm":
        assert field == "256px" and "results/eval/reference/inception_256px.h5" in res.stdout
