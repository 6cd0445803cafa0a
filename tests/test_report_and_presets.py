import numpy as np
import pandas as pd
import pytest
import yaml

from histosynth.config import REPO_ROOT, default_config, load_config
from histosynth.errors import InputError
from histosynth.evaluation.features import inception_extractor
from histosynth.evaluation.report import build_report

PRESETS = sorted((REPO_ROOT / "config" / "presets").glob("*.yaml"))


def test_report_escapes_text_from_data(tmp_path):
    results = tmp_path / "results"
    (results / "prompts").mkdir(parents=True)
    (results / "reports").mkdir()
    evil = "<script>alert('x')</script>"
    pd.DataFrame({"prompt": [f"Histology image of {evil} tissue"], "label_name": [evil], "count": [3]}).to_csv(
        results / "prompts" / "exp.freq.tsv", sep="\t", index=False)
    pd.DataFrame({"case_id": [evil], "summary": [evil]}).to_csv(results / "reports" / "summaries.tsv", sep="\t", index=False)
    cfg = default_config(experiments={"exp": {"prompts": "label"}}, base_model=evil)
    build_report(cfg, results, tmp_path / "index.html")
    html = (tmp_path / "index.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_fid_without_inception_weights_stops_with_a_clear_message(tmp_path):
    with pytest.raises(InputError, match="evaluation.inception_weights.*fid_extractor: embedding"):
        inception_extractor(str(tmp_path / "missing.pt"), "cpu")


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_validate_and_dry_run(preset, tmp_path, run_snakemake):
    cfg = load_config(preset)  # schema check, defaults filled
    assert cfg["base_model"] != "tiny"
    raw = yaml.safe_load(preset.read_text())
    # stand-ins for the user's data at the paths the preset names
    if raw.get("samples"):
        sheet = tmp_path / raw["samples"]
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
    if raw.get("reports", {}).get("path"):
        r = tmp_path / raw["reports"]["path"]
        r.parent.mkdir(parents=True, exist_ok=True)
        r.write_text("bcr_patient_barcode,text\nTCGA-00-0001,carcinoma\n")
    res = run_snakemake(tmp_path, "--configfile", str(preset), "-n")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "train_diffusion" in res.stdout and "report" in res.stdout
