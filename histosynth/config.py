"""Config and sample-sheet loading, shared by the Snakefile and the tests.

The JSON schemas in ``config/schemas/`` are the single source of defaults and of what is allowed;
``snakemake.utils.validate`` applies them (and fills defaults) here and in ``rules/common.smk``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pandas as pd
import yaml

from .errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "config" / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"
SAMPLES_SCHEMA = SCHEMA_DIR / "samples.schema.yaml"
SAMPLE_COLUMNS = ("slide_id", "slide_path", "case_id")


def validate_config(config: dict) -> dict:
    """Validate ``config`` against the schema, filling defaults in place; returns it."""
    from snakemake.utils import validate

    validate(config, str(CONFIG_SCHEMA))
    _check_experiment_overrides(config)
    return config


def _without_defaults(schema: dict) -> dict:
    """The schema of a section with its defaults removed, to validate partial overrides."""
    if isinstance(schema, dict):
        return {k: _without_defaults(v) for k, v in schema.items() if k != "default"}
    if isinstance(schema, list):
        return [_without_defaults(v) for v in schema]
    return schema


def _check_experiment_overrides(config: dict) -> None:
    """``experiments.<name>.train|sample`` may only name keys of the top-level sections, with valid values."""
    import jsonschema

    props = yaml.safe_load(CONFIG_SCHEMA.read_text())["properties"]
    for name, exp in config.get("experiments", {}).items():
        for section in ("train", "sample"):
            override = exp.get(section) or {}
            errors = sorted(jsonschema.Draft202012Validator(_without_defaults(props[section])).iter_errors(override), key=str)
            if errors:
                e = errors[0]
                where = ".".join(["experiments", name, section, *map(str, e.absolute_path)])
                raise InputError(f"config {where}: {e.message}")


def settings_hash(*parts) -> str:
    """Short stable hash of settings (e.g. to key training checkpoints by what produced them)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def experiment_settings(config: dict, experiment: str, section: str) -> dict:
    """The top-level ``train`` / ``sample`` settings with the experiment's overrides applied."""
    return {**config[section], **(config["experiments"][experiment].get(section) or {})}


def default_config(**overrides) -> dict:
    """The schema's defaults, with top-level ``overrides`` merged in (for tests and notebooks)."""
    cfg = copy.deepcopy(overrides)
    return validate_config(cfg)


def load_config(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return validate_config(yaml.safe_load(fh) or {})


def load_samples(path: str | os.PathLike | None) -> pd.DataFrame:
    """Read and check the sample sheet; errors name the file, the column or the slide."""
    from snakemake.utils import validate

    if not path:
        return pd.DataFrame(columns=[*SAMPLE_COLUMNS, "label"])
    p = Path(path)
    if not p.is_file():
        raise InputError(f"sample sheet {p} (config key 'samples') does not exist")
    df = pd.read_csv(p, sep="\t", dtype=str, comment="#").dropna(how="all")
    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"sample sheet {p}: missing column(s) {missing}; it has {list(df.columns)} (tab-separated?)")
    for col in SAMPLE_COLUMNS:
        empty = df[df[col].isna() | (df[col].str.strip() == "")]
        if len(empty):
            raise InputError(f"sample sheet {p}: empty {col!r} in row(s) {[int(i) + 2 for i in empty.index]} (line numbers)")
    dup = df.loc[df["slide_id"].duplicated(keep=False), "slide_id"]
    if len(dup):
        raise InputError(f"sample sheet {p}: duplicate slide_id {sorted(set(dup))}")
    if "label" not in df.columns:
        df["label"] = pd.NA
    try:
        validate(df, str(SAMPLES_SCHEMA))
    except Exception as e:  # snakemake's WorkflowError carries the row number and jsonschema's reason
        raise InputError(f"sample sheet {p}: {e}") from e
    return df.set_index("slide_id", drop=False)


def check_output_names(samples: pd.DataFrame, config: dict) -> None:
    """Slides and imported datasets share results/tiles/; their names must not collide."""
    names = [d["name"] for d in config.get("patch_datasets", [])]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"config 'patch_datasets': duplicate name(s) {dup}")
    clash = sorted(set(names) & set(samples["slide_id"]))
    if clash:
        raise InputError(f"config 'patch_datasets' name(s) {clash} equal slide_id(s) in the sample sheet; rename one")


def sample_label_names(samples: pd.DataFrame) -> list[str]:
    """Slide-level classes, sorted, so every slide's file uses the same label indices."""
    return sorted(str(x) for x in samples["label"].dropna().unique())


def _schema_rows(props: dict, prefix: str = "", required=()):
    for key, spec in props.items():
        name = prefix + key
        if spec.get("type") == "object" and "properties" in spec:
            yield from _schema_rows(spec["properties"], name + ".")
            continue
        items = spec.get("items")
        if spec.get("type") == "array" and isinstance(items, dict) and "properties" in items:
            yield name, "list", "[]", spec.get("description", "")
            yield from _schema_rows(items["properties"], name + "[].", items.get("required", ()))
            continue
        extra = spec.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in extra:  # a map of named entries, e.g. experiments
            yield name, "map", json_default(spec.get("default", "—")), spec.get("description", "named entries")
            yield from _schema_rows(extra["properties"], name + ".<name>.", extra.get("required", ()))
            continue
        kind = spec.get("type", "")
        kind = "/".join(kind) if isinstance(kind, list) else kind or ('"otsu" or integer' if "oneOf" in spec else "")
        desc = spec.get("description", "")
        if "enum" in spec:
            desc += f" (one of: {', '.join(map(str, spec['enum']))})"
        default = "required" if key in required else spec.get("default", "—")
        yield name, kind, json_default(default), desc.replace("|", "/").replace("\n", " ")


def json_default(value) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def config_reference_markdown() -> str:
    """The key table of config/README.md, generated from the schema (a test keeps them in sync)."""
    schema = yaml.safe_load(CONFIG_SCHEMA.read_text())
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, kind, default, desc in _schema_rows(schema["properties"]):
        lines.append(f"| `{name}` | {kind} | `{default}` | {desc} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m histosynth.config  -> prints the key table
    print(config_reference_markdown())
