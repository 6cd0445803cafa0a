import pytest
import yaml

from histosynth.config import (
    RENAMED_EXPERIMENT_KEYS,
    RENAMED_KEYS,
    REPO_ROOT,
    _check_renamed,
    check_output_names,
    default_config,
    effective_config,
    load_slides,
    load_schema,
    validate_config,
)
from histosynth.errors import InputError


def test_defaults_are_filled_from_the_schema():
    cfg = default_config()
    assert cfg["tiling"]["patch_size"] == 256 and cfg["tiling"]["tissue"]["threshold"] == "otsu"
    assert cfg["split"] == {"val": 0.15, "test": 0.15, "seed": 0, "group_by": "case_id"}


def test_shipped_config_validates():
    cfg = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    validate_config(cfg)
    assert load_slides(REPO_ROOT / cfg["slides"]).shape[0] == 8


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"tiling": {"patch_sise": 64}}, "patch_sise"),
        ({"tiling": {"mpp": "fast"}}, "fast"),
        ({"split": {"group_by": "patient"}}, "patient"),
        ({"patch_datasets": [{"name": "x", "format": "medmnist"}]}, "path"),
        ({"train": {"method": "adapter"}}, r"train\.method.*'adapter'"),
        ({"pretrain": {"prompts": "report"}}, r"pretrain\.prompts.*'report'"),
    ],
)
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(Exception, match=key):
        validate_config(bad)


def _sheet(tmp_path, text):
    p = tmp_path / "slides.tsv"
    p.write_text(text)
    return p


def test_sample_sheet_errors(tmp_path):
    with pytest.raises(InputError, match=r"duplicate slide_id \['s1'\]"):
        load_slides(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\ns1\ta.svs\tc1\ns1\tb.svs\tc2\n"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['case_id'\]"):
        load_slides(_sheet(tmp_path, "slide_id\tslide_path\ns1\ta.svs\n"))
    with pytest.raises(InputError, match="empty 'case_id'"):
        load_slides(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\ns1\ta.svs\t\n"))
    with pytest.raises(InputError, match="does not exist"):
        load_slides(tmp_path / "nope.tsv")
    ok = load_slides(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\tlabel\ns1\ta.svs\tc1\ttumor\ns2\tb.svs\tc1\t\n"))
    assert ok.loc["s1", "label"] == "tumor"


def test_dataset_and_slide_names_must_not_collide(tmp_path):
    samples = load_slides(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\ns1\ta.svs\tc1\n"))
    cfg = default_config(patch_datasets=[{"name": "s1", "format": "medmnist", "path": "x.npz"}])
    with pytest.raises(InputError, match="s1"):
        check_output_names(samples, cfg)


def test_config_readme_documents_every_schema_key():
    from histosynth.config import config_reference_markdown

    readme = (REPO_ROOT / "config" / "README.md").read_text()
    assert config_reference_markdown() in readme, "regenerate the table: python -m histosynth.config"
    assert "`morphology.k`" in readme and "`experiments.<name>.prompts`" in readme


def test_experiment_overrides_are_checked_and_merged():
    from histosynth.config import experiment_settings

    cfg = default_config(
        experiments={"big": {"prompts": "label", "train": {"rank": 16}, "sampling": {"scheduler": "euler"}}}
    )
    assert experiment_settings(cfg, "big", "train")["rank"] == 16
    assert experiment_settings(cfg, "big", "train")["max_steps"] == cfg["train"]["max_steps"]
    assert experiment_settings(cfg, "big", "sampling")["scheduler"] == "euler"
    with pytest.raises(InputError, match=r"experiments\.big\.train.*'rnak'"):
        default_config(experiments={"big": {"prompts": "label", "train": {"rnak": 16}}})
    with pytest.raises(InputError, match=r"experiments\.big\.sampling\.scheduler"):
        default_config(experiments={"big": {"prompts": "label", "sampling": {"scheduler": "magic"}}})


def test_sample_sheet_keeps_hash_characters(tmp_path):
    sheet = _sheet(
        tmp_path, "slide_id\tslide_path\tcase_id\n# a whole-line comment\ns1\tscans/run#3/a.svs\tP#1\ns2\tb.svs\tP#2\n"
    )
    df = load_slides(sheet)
    assert df["case_id"].tolist() == ["P#1", "P#2"] and df.loc["s1", "slide_path"] == "scans/run#3/a.svs"


def test_one_slide_file_under_two_slide_ids_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"slide_ids \['s1', 's2'\] all have slide_path scans/a.svs"):
        load_slides(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\ns1\tscans/a.svs\tc1\ns2\tscans/./a.svs\tc2\n"))


def test_split_fractions_are_checked_before_anything_runs():
    with pytest.raises(InputError, match=r"split.val \(0.5\) \+ split.test \(0.5\) must be below 1"):
        default_config(split={"val": 0.5, "test": 0.5})


PRESETS = sorted((REPO_ROOT / "config" / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_uses_its_own_settings_not_the_demos(preset, monkeypatch):
    from histosynth.config import effective_config

    monkeypatch.chdir(REPO_ROOT)  # where `snakemake --configfile config/presets/X.yaml` runs
    raw = yaml.safe_load(preset.read_text())
    eff = effective_config([preset.relative_to(REPO_ROOT)])
    demo = effective_config([])
    own = default_config(**{k: raw[k] for k in ("experiments", "pathology_reports", "tiling") if k in raw})
    assert eff["experiments"] == own["experiments"] and set(eff["experiments"]) == set(raw["experiments"])
    assert eff["pathology_reports"] == own["pathology_reports"] and eff["tiling"] == own["tiling"]
    assert eff["slides"] == raw.get("slides", "") and eff["patch_datasets"] == own_datasets(raw)
    # the demo's own choices (DAB labels, its pale-stroma threshold, its reports) do not leak in
    assert (
        eff["tiling"]["tissue"]["max_saturation"]
        == own["tiling"]["tissue"]["max_saturation"]
        != demo["tiling"]["tissue"]["max_saturation"]
    )
    assert eff["tiling"]["labels"]["method"] == own["tiling"]["labels"]["method"] != demo["tiling"]["labels"]["method"]
    assert eff["pathology_reports"]["path"] != demo["pathology_reports"]["path"]


def own_datasets(raw):
    return default_config(patch_datasets=raw.get("patch_datasets", []))["patch_datasets"]


def test_a_minimal_user_config_gets_schema_defaults_and_overrides_apply(tmp_path, monkeypatch):
    from histosynth.config import effective_config

    monkeypatch.chdir(REPO_ROOT)
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "patch_datasets:\n  - {name: t, format: folder, path: tiles}\nexperiments:\n  mine: {prompts: label}\n"
    )
    eff = effective_config([mine])
    assert list(eff["experiments"]) == ["mine"] and eff["pathology_reports"]["path"] == "" and eff["slides"] == ""
    assert eff["tiling"] == default_config()["tiling"]
    # later files and --config override earlier ones, key by key
    more = tmp_path / "more.yaml"
    more.write_text("tiling: {tissue: {max_saturation: 15}}\n")
    eff = effective_config([mine, more], overrides={"tiling": {"patch_size": 96}})
    assert eff["tiling"]["tissue"]["max_saturation"] == 15 and eff["tiling"]["patch_size"] == 96
    assert eff["tiling"]["tissue"]["max_brightness"] == default_config()["tiling"]["tissue"]["max_brightness"]
    # no file named: the demo config
    assert set(effective_config([])["experiments"]) == set(
        yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["experiments"]
    )


def test_unknown_key_is_one_sentence_naming_key_and_file(tmp_path):
    from histosynth.config import effective_config

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("tiling: {patch_size: 64}\n")
    bad.write_text("tiling: {tissue: {max_saturaton: 15}}\npatch_datasets:\n  - {name: t, format: folder, path: x}\n")
    with pytest.raises(InputError) as e:
        effective_config([good, bad])
    msg = str(e.value)
    assert (
        msg.startswith("unknown key 'tiling.tissue.max_saturaton' (did you mean 'max_saturation'?)") and str(bad) in msg
    )
    assert len(msg) < 300 and "\n" not in msg
    bad.write_text("patch_datasets:\n  - {name: t, format: folder, path: x, label_form: filename}\n")
    with pytest.raises(
        InputError, match=r"unknown key 'patch_datasets\[0\].label_form' \(did you mean 'label_from'\?\) in .*bad.yaml"
    ):
        effective_config([good, bad])
    with pytest.raises(InputError, match=r"config key 'split.val': 'lots' is not of type 'number' in --config"):
        effective_config([good], overrides={"split": {"val": "lots"}})


def test_a_renamed_key_stops_with_its_new_name_and_file(tmp_path):
    cfg = tmp_path / "old.yaml"
    cfg.write_text("tiles: {patch_size: 64}\nexperiments:\n  a: {prompts: label, training: {rank: 2}}\n")
    sources = [(str(cfg), yaml.safe_load(cfg.read_text()))]
    with pytest.raises(InputError, match=r"^config key 'tiles' was renamed to 'tiling': write 'tiling' in .*old\.yaml"):
        _check_renamed(sources[0][1], sources, renamed={"tiles": "tiling"}, renamed_in_experiments={})
    with pytest.raises(
        InputError, match=r"config key 'training' was renamed to 'train': write 'experiments\.a\.train' in"
    ):
        _check_renamed(sources[0][1], sources, renamed={}, renamed_in_experiments={"training": "train"})
    _check_renamed(
        sources[0][1], sources, renamed={"tiling": "x"}, renamed_in_experiments={"prompts": "y"}
    )  # still in the schema


@pytest.mark.skipif(
    any(old in load_schema()["properties"] for old in RENAMED_KEYS),
    reason="the names are not renamed yet: the old keys are still schema keys",
)
def test_old_config_names_stop_with_the_new_ones(tmp_path):
    old_cfg = tmp_path / "old.yaml"
    for old, new in RENAMED_KEYS.items():
        old_cfg.write_text(yaml.safe_dump({old: {}}))
        with pytest.raises(InputError, match=rf"config key '{old}' was renamed to '{new}'.* in .*old\.yaml"):
            effective_config([old_cfg])
    for old, new in RENAMED_EXPERIMENT_KEYS.items():
        old_cfg.write_text(yaml.safe_dump({"experiments": {"e": {"prompts": "label", old: {}}}}))
        with pytest.raises(InputError, match=rf"write 'experiments\.e\.{new}' in .*old\.yaml"):
            effective_config([old_cfg])
