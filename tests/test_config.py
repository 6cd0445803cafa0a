import pytest
import yaml

from histosynth.config import REPO_ROOT, check_output_names, default_config, load_samples, validate_config
from histosynth.errors import InputError


def test_defaults_are_filled_from_the_schema():
    cfg = default_config()
    assert cfg["tiling"]["patch_size"] == 256 and cfg["tiling"]["tissue"]["threshold"] == "otsu"
    assert cfg["split"] == {"val": 0.15, "test": 0.15, "seed": 0, "group_by": "case_id"}


def test_shipped_config_validates():
    cfg = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    validate_config(cfg)
    assert load_samples(REPO_ROOT / cfg["samples"]).shape[0] == 8


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"tiling": {"patch_sise": 64}}, "patch_sise"),
        ({"tiling": {"mpp": "fast"}}, "fast"),
        ({"split": {"group_by": "patient"}}, "patient"),
        ({"patch_datasets": [{"name": "x", "format": "medmnist"}]}, "path"),
    ],
)
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(Exception, match=key):
        validate_config(bad)


def _sheet(tmp_path, text):
    p = tmp_path / "samples.tsv"
    p.write_text(text)
    return p


def test_sample_sheet_errors(tmp_path):
    with pytest.raises(InputError, match=r"duplicate slide_id \['s1'\]"):
        load_samples(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\ns1\ta.svs\tc1\ns1\tb.svs\tc2\n"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['case_id'\]"):
        load_samples(_sheet(tmp_path, "slide_id\tslide_path\ns1\ta.svs\n"))
    with pytest.raises(InputError, match="empty 'case_id'"):
        load_samples(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\ns1\ta.svs\t\n"))
    with pytest.raises(InputError, match="does not exist"):
        load_samples(tmp_path / "nope.tsv")
    ok = load_samples(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\tlabel\ns1\ta.svs\tc1\ttumor\ns2\tb.svs\tc1\t\n"))
    assert ok.loc["s1", "label"] == "tumor"


def test_dataset_and_slide_names_must_not_collide(tmp_path):
    samples = load_samples(_sheet(tmp_path, "slide_id\tslide_path\tcase_id\ns1\ta.svs\tc1\n"))
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

    cfg = default_config(experiments={"big": {"prompts": "label", "train": {"rank": 16}, "sample": {"scheduler": "euler"}}})
    assert experiment_settings(cfg, "big", "train")["rank"] == 16
    assert experiment_settings(cfg, "big", "train")["max_steps"] == cfg["train"]["max_steps"]
    assert experiment_settings(cfg, "big", "sample")["scheduler"] == "euler"
    with pytest.raises(InputError, match=r"experiments\.big\.train.*'rnak'"):
        default_config(experiments={"big": {"prompts": "label", "train": {"rnak": 16}}})
    with pytest.raises(InputError, match=r"experiments\.big\.sample\.scheduler"):
        default_config(experiments={"big": {"prompts": "label", "sample": {"scheduler": "magic"}}})
