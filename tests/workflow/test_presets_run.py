"""Each paper preset runs its whole DAG on stand-in data in its own format, only the models swapped
to ``tiny`` (and steps cut) by ``config/smoke.yaml``, from a folder laid out like a user's checkout."""

import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from histosynth import standin
from histosynth.config import REPO_ROOT

# not in `make test` (tens of minutes for the three on 2 cores): `make test-presets`
pytestmark = [pytest.mark.workflow, pytest.mark.presets]


@pytest.mark.parametrize("preset", standin.PRESETS)
def test_preset_runs_end_to_end_with_only_its_own_experiments(preset, tmp_path, run_snakemake):
    # the user's checkout: config/ with the demo config.yaml beside the presets, data/ under the same root
    shutil.copytree(REPO_ROOT / "config", tmp_path / "config")
    standin.WRITERS[preset](tmp_path)
    # the copied files (snakemake resolves relative --configfile paths against its own cwd, the repository)
    preset_yaml, smoke_yaml = tmp_path / "config" / "presets" / f"{preset}.yaml", tmp_path / "config" / "smoke.yaml"
    res = run_snakemake(tmp_path, "--configfile", str(preset_yaml), str(smoke_yaml))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    raw = yaml.safe_load((tmp_path / "config" / "presets" / f"{preset}.yaml").read_text())
    experiments = set(raw["experiments"])
    assert f"histosynth config: {preset_yaml}, {smoke_yaml}" in out
    # metric files exist for exactly the preset's experiments: nothing of the demo's
    evaluated = {p.name for p in (tmp_path / "results" / "eval").iterdir() if (p / "fd.json").exists()}
    assert evaluated == experiments
    assert {p.stem for p in (tmp_path / "results" / "prompts").glob("*.freq.tsv")} == {f"{e}.freq" for e in experiments}
    for e in experiments:
        for metric in ("fd", "kid", "prdc", "agreement", "downstream"):
            assert json.loads((tmp_path / f"results/eval/{e}/{metric}.json").read_text())
        # with tiny models every distance is marked as coming from a random network
        assert json.loads((tmp_path / f"results/eval/{e}/fd.json").read_text())["extractor"]["random_network"] is True
    html = (tmp_path / "results" / "html_report" / "index.html").read_text()
    for e in experiments:
        assert e in html
    # the report's metric table lists exactly the preset's experiments (words like "report" appear on any page)
    listed = set(pd.read_csv(tmp_path / "results" / "html_report" / "metrics.tsv", sep="\t")["experiment"])
    assert listed == experiments, f"the {preset} report lists {sorted(listed)}"
    assert "random network: mechanics only" in html
    if preset == "pathldm":  # tumour level as the class; the report prompts carry PathLDM's level prefix
        prompts = (tmp_path / "results/prompts/report.tsv").read_text()
        assert re.search(r"(low|high) tumor; (low|high) til; ", prompts)
        # FD / KID / PRDC against real tiles centre-cropped to the 256 px synthetic field: no field-of-view warning
        for e in experiments:
            for name, s in json.loads((tmp_path / f"results/eval/{e}/fd.json").read_text())["sets"].items():
                assert s["harmonisation"]["real_crop"].startswith("real patches centre-cropped from 448 to 256 px")
                assert not any("fields of view differ" in w for w in s["warnings"]), (e, name, s["warnings"])
            # the classifiers too: trained on 256 px windows of the 448 px tiles, tested on their centres
            downstream = json.loads((tmp_path / f"results/eval/{e}/downstream.json").read_text())
            assert downstream["like_for_like"].startswith("yes"), downstream["like_for_like"]
            agreement = json.loads((tmp_path / f"results/eval/{e}/agreement.json").read_text())
            assert agreement["synthetic_field_px"] == 256 and not agreement["warnings"], agreement
        assert json.loads((tmp_path / "results/classifier/model/classifier.json").read_text())["field_px"] == 256
