"""The SLURM profile's job grouping: valid for snakemake, naming rules and groups that exist."""

import re
from pathlib import Path

import yaml
from snakemake.cli import parse_group_components, parse_groups

REPO = Path(__file__).resolve().parents[2]


def test_slurm_profile_groups_parse_and_name_existing_rules():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    groups = parse_groups(profile["groups"])  # raises on a malformed RULE=GROUP entry
    components = parse_group_components(profile["group-components"])  # GROUP=positive integer
    rules = {m for f in (REPO / "rules").glob("*.smk") for m in re.findall(r"^rule (\w+):", f.read_text(), re.M)}
    assert set(groups) <= rules, f"grouped rules that do not exist: {set(groups) - rules}"
    assert set(components) <= set(groups.values()), "group-components names a group no rule is in"
    # the per-slide rules are bundled (bench/bench_startup.py measures what this buys)
    assert groups["tile_slide"] == groups["make_demo_slide"]
    assert components[groups["tile_slide"]] > 1
