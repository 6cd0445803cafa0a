"""Config and slide-sheet loading, shared by the Snakefile and the tests.

The JSON schemas in ``config/schemas/`` are the single source of defaults and of what is allowed;
``snakemake.utils.validate`` applies them (and fills defaults) here and in ``rules/common.smk``.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import pandas as pd
import yaml

from .errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "config" / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"
SLIDES_SCHEMA = SCHEMA_DIR / "slides.schema.yaml"
SLIDE_COLUMNS = ("slide_id", "slide_path", "case_id")


DEMO_CONFIG = "config/config.yaml"  # relative to the working directory, as snakemake's `configfile:`

# Config keys that were renamed (old -> new), so an old config stops with the new name instead of a bare "unknown
# key". Top-level sections, and the per-experiment override of a renamed section. A pair applies once the old
# name has left the schema (the rename touched every other mention; lines marked rename-keep keep the old names).
RENAMED_KEYS = {"samples": "slides", "sample": "sampling", "reports": "pathology_reports"}  # rename-keep
RENAMED_EXPERIMENT_KEYS = {"sample": "sampling"}  # rename-keep


def validate_config(config: dict, sources: list[tuple[str, dict]] | None = None) -> dict:
    """Validate ``config`` against the schema, filling defaults in place; returns it.

    ``sources`` (name, raw dict) are the files (and ``--config``) the config was merged from: an
    error names the one that set the offending key. Errors are one sentence, not a schema dump.
    """
    from snakemake.utils import validate

    _check_renamed(config, sources or [])
    _check_schema(config, sources or [])
    validate(config, str(CONFIG_SCHEMA))  # fills the schema's defaults
    _check_experiment_overrides(config)
    _check_split(config)
    return config


def _source_of(path: list, sources: list[tuple[str, dict]]) -> str | None:
    """The last source that sets the key at ``path`` (later sources override earlier ones)."""
    found = None
    for name, raw in sources:
        node = raw
        for step in path:
            if isinstance(node, dict) and step in node:
                node = node[step]
            elif isinstance(node, list) and isinstance(step, int) and step < len(node):
                node = node[step]
            else:
                break
        else:
            found = name
    return found


def _key_name(path) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


@functools.lru_cache(maxsize=1)
def _parsed_schema() -> dict:
    # parsed once per process with libyaml where present: the Snakefile's checks asked for it 8
    # times per `snakemake -n`, ~0.65 s of CPU with the pure-Python parser
    return yaml.load(CONFIG_SCHEMA.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_schema() -> dict:
    """The config schema, with the values only the package knows filled in: the prompt strategies'
    enum comes from their registry (``histosynth.text.prompts.STRATEGIES``), never a copy."""
    from .text.prompts import STRATEGIES

    schema = copy.deepcopy(_parsed_schema())
    experiment = schema["properties"]["experiments"]["additionalProperties"]
    experiment["properties"]["prompts"]["enum"] = list(STRATEGIES)
    return schema


def _check_schema(config: dict, sources: list[tuple[str, dict]]) -> None:
    """One clear sentence for the first schema violation: the key, the file, what is wrong."""
    import difflib

    import jsonschema

    schema = load_schema()
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if not errors:
        return
    # unknown keys first: they are the usual typo, and their message must name the key itself
    unknown = [e for e in errors if e.validator == "additionalProperties"]
    e = unknown[0] if unknown else jsonschema.exceptions.best_match(errors)
    path = list(e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = sorted(e.schema.get("properties", {}))
        key = sorted(set(e.instance) - set(allowed))[0]
        path.append(key)
        close = difflib.get_close_matches(key, allowed, n=1)
        what = f"unknown key '{_key_name(path)}'" + (
            f" (did you mean '{close[0]}'?)" if close else f" (allowed here: {', '.join(allowed)})"
        )
    else:
        what = f"config key '{_key_name(path) or '<top level>'}': {e.message[:300]}"
    src = _source_of(path, sources)
    raise InputError(f"{what}{f' in {src}' if src else ''}; see config/README.md")


def _check_renamed(
    config: dict,
    sources: list[tuple[str, dict]],
    renamed: dict | None = None,
    renamed_in_experiments: dict | None = None,
) -> None:
    """An old key name stops with its new name and the file that set it (never silently ignored)."""
    renamed = RENAMED_KEYS if renamed is None else renamed
    renamed_in_experiments = RENAMED_EXPERIMENT_KEYS if renamed_in_experiments is None else renamed_in_experiments
    schema = load_schema()
    known = set(schema["properties"])
    known_in_experiment = set(schema["properties"]["experiments"]["additionalProperties"]["properties"])
    found = [([old], new) for old, new in renamed.items() if old in config and old not in known]
    for name, exp in (config.get("experiments") or {}).items():
        if isinstance(exp, dict):
            found += [
                (["experiments", name, old], new)
                for old, new in renamed_in_experiments.items()
                if old in exp and old not in known_in_experiment
            ]
    if found:
        path, new = found[0]
        src = _source_of(path, sources)
        raise InputError(
            f"config key '{path[-1]}' was renamed to '{new}': write '{_key_name(path[:-1] + [new])}'"
            f"{f' in {src}' if src else ''}; see config/README.md"
        )


def _check_split(config: dict) -> None:
    s = config["split"]
    if s["val"] + s["test"] >= 1:
        raise InputError(
            f"config split.val ({s['val']}) + split.test ({s['test']}) must be below 1, leaving groups for training"
        )


def read_config_file(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"config file {p} is not valid YAML: {e}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"config file {p} must be a mapping of keys (got {type(raw).__name__})")
    return raw


def config_sources(files: list[str | os.PathLike], overrides: dict | None = None) -> list[tuple[str, dict]]:
    """(name, raw dict) of each config file, then ``--config``; no file named = the demo config."""
    names = [str(f) for f in files] or [DEMO_CONFIG]
    out = [(n, read_config_file(n)) for n in names]
    return out + ([("--config", overrides)] if overrides else [])


def effective_config(files: list[str | os.PathLike], overrides: dict | None = None) -> dict:
    """The config a run uses: schema defaults + exactly ``files`` (later ones override earlier
    ones, nested sections merged) + ``--config`` ``overrides``; the demo config only when no file
    is named. The Snakefile builds the same from snakemake's ``--configfile`` / ``--config``."""
    from snakemake.utils import update_config

    sources = config_sources(files, overrides)
    cfg: dict = {}
    for _, raw in sources:
        update_config(cfg, copy.deepcopy(raw))
    return validate_config(cfg, sources)


def config_summary(config: dict, files: list[str]) -> str:
    """The short block logged at start: which files, experiments, data sources and models a run uses."""
    experiments = [f"{n} ({e['prompts']})" for n, e in config["experiments"].items()]
    datasets = [f"{d['name']} ({d['format']}: {d['path']})" for d in config["patch_datasets"]]
    models = [
        f"base_model={config['base_model']}",
        f"embedding={config['embedding']['backbone']}",
        f"classifier weights={config['classifier']['weights'] or 'random init'}",
    ]
    return "\n".join(
        [
            f"histosynth config: {', '.join(map(str, files))}",
            f"  experiments: {', '.join(experiments) or 'none'}",
            f"  slides: {config['slides'] or 'none'}",
            f"  patch datasets: {', '.join(datasets) or 'none'}",
            f"  reports: {config['pathology_reports']['path'] or 'none'}",
            f"  models: {', '.join(models)}",
        ]
    )


def _without_defaults(schema: dict) -> dict:
    """The schema of a section with its defaults removed, to validate partial overrides."""
    if isinstance(schema, dict):
        return {k: _without_defaults(v) for k, v in schema.items() if k != "default"}
    if isinstance(schema, list):
        return [_without_defaults(v) for v in schema]
    return schema


def _check_experiment_overrides(config: dict) -> None:
    """``experiments.<name>.train|sampling`` may only name keys of the top-level sections, with valid values."""
    import jsonschema

    props = load_schema()["properties"]
    for name, exp in config.get("experiments", {}).items():
        for section in ("train", "sampling"):
            override = exp.get(section) or {}
            errors = sorted(
                jsonschema.Draft202012Validator(_without_defaults(props[section])).iter_errors(override), key=str
            )
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
    """The top-level ``train`` / ``sampling`` settings with the experiment's overrides applied."""
    return {**config[section], **(config["experiments"][experiment].get(section) or {})}


def default_config(**overrides) -> dict:
    """The schema's defaults, with top-level ``overrides`` merged in (for tests and notebooks)."""
    if not overrides:
        return copy.deepcopy(_schema_defaults())
    return validate_config(copy.deepcopy(overrides))


@functools.lru_cache(maxsize=1)
def _schema_defaults() -> dict:
    # once per process: snakemake's validate re-reads the schema with the pure-Python YAML parser
    # (~0.3 s of CPU each), and the Snakefile's checks ask for the defaults once per experiment
    return validate_config({})


def load_config(path: str | os.PathLike) -> dict:
    return effective_config([path])


def load_slides(path: str | os.PathLike | None) -> pd.DataFrame:
    """Read and check the slide sheet; errors name the file, the column or the slide."""
    from snakemake.utils import validate

    if not path:
        return pd.DataFrame(columns=[*SLIDE_COLUMNS, "label"])
    p = Path(path)
    if not p.is_file():
        raise InputError(f"slide sheet {p} (config key 'slides') does not exist")
    # no pandas comment="#": it would cut "P#1" to "P" and paths at a '#'; whole-line comments only
    df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    first = df.iloc[:, 0].fillna("") if len(df.columns) else pd.Series(dtype=str)
    df = df[~first.str.lstrip().str.startswith("#")].dropna(how="all")
    missing = [c for c in SLIDE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"slide sheet {p}: missing column(s) {missing}; it has {list(df.columns)} (tab-separated?)")
    for col in SLIDE_COLUMNS:
        empty = df[df[col].isna() | (df[col].str.strip() == "")]
        if len(empty):
            raise InputError(
                f"slide sheet {p}: empty {col!r} in row(s) {[int(i) + 2 for i in empty.index]} (line numbers)"
            )
    dup = df.loc[df["slide_id"].duplicated(keep=False), "slide_id"]
    if len(dup):
        raise InputError(f"slide sheet {p}: duplicate slide_id {sorted(set(dup))}")
    paths = df["slide_path"].map(lambda x: os.path.normpath(x.strip()))
    for path, ids in df.groupby(paths)["slide_id"]:
        if len(ids) > 1:
            raise InputError(
                f"slide sheet {p}: slide_ids {sorted(ids)} all have slide_path {path}; one file must be one slide"
            )
    if "label" not in df.columns:
        df["label"] = pd.NA
    try:
        validate(df, str(SLIDES_SCHEMA))
    except Exception as e:  # snakemake's WorkflowError carries the row number and jsonschema's reason
        raise InputError(f"slide sheet {p}: {e}") from e
    return df.set_index("slide_id", drop=False)


def check_output_names(samples: pd.DataFrame, config: dict) -> None:
    """Slides and imported datasets share results/slide_patches/; their names must not collide."""
    names = [d["name"] for d in config.get("patch_datasets", [])]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"config 'patch_datasets': duplicate name(s) {dup}")
    clash = sorted(set(names) & set(samples["slide_id"]))
    if clash:
        raise InputError(f"config 'patch_datasets' name(s) {clash} equal slide_id(s) in the slide sheet; rename one")


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
    schema = load_schema()
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, kind, default, desc in _schema_rows(schema["properties"]):
        lines.append(f"| `{name}` | {kind} | `{default}` | {desc} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m histosynth.config  -> prints the key table
    print(config_reference_markdown())
