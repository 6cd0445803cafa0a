"""``report``: one self-contained HTML page that answers "which method wins", and its tables.

The page is rendered from the jinja2 templates in ``templates/`` (one per section), reading only
the files the ``html_report`` rule declares (``report_inputs`` in rules/common.smk): per-experiment
lists in experiment order, and global files. Images are embedded as data URIs (no network,
nothing beside the file needed); jinja2's autoescape escapes every string from data or config.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..config import experiment_settings
from ..patchfile import PatchFile
from ..plots import patch_strip
from .features import RANDOM_NOTE
from .metric_files import (
    KEY_EXTRACTOR,
    KEY_FILTER_CLASSIFIER,
    KEY_JUDGE,
    KEY_OVERALL,
    KEY_REFERENCE,
    KEY_RESULTS,
    KEY_SETS,
    KEY_TEST,
    KEY_WARNINGS,
    METRICS,
    interval_key,
    read_classifier_metrics,
    read_interval,
    read_metrics,
)
from .metrics import BOOTSTRAP_METHOD, class_name, macro_over_present

TEMPLATES = Path(__file__).parent / "templates"
SETS = ("raw", "filtered")
PER_EXPERIMENT = (
    "fd",
    "kid",
    "prdc",
    "agreement",
    "downstream",
    "coverage",
    "raw",
    "filtered",
    "raw_grid",
    "filtered_grid",
    "acceptance",
    "acceptance_plot",
    "filter_summary",
    "loss_curve",
    "validation",
    "prompt_frequencies",
)
STRIP = 6  # patches per class and set in the side-by-side pictures
TILE_PX = 96  # each patch is shown at least this large
CHANCE_AUC = 0.5


# --- small helpers -------------------------------------------------------------------------------


def _load(path):
    p = Path(path) if path else None
    return json.loads(p.read_text()) if p and p.is_file() else None


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def fmt(v, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def is_numeric(v) -> bool:
    """A number or a number's text ("64", "1e-04"): right-aligned in the page's tables; anything else is text, left."""
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float, np.number)):
        return True
    try:
        float(str(v))
    except ValueError:
        return False
    return True


def data_uri(path) -> str | None:
    p = Path(path) if path else None
    if not p or not p.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()


def _png_uri(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def strip(imgs: np.ndarray) -> str | None:
    """A row of at most ``STRIP`` patches as one PNG data URI, each at least ``TILE_PX`` wide."""
    picture = patch_strip(imgs, STRIP, TILE_PX)
    return None if picture is None else _png_uri(picture)


def _pick(labels: np.ndarray, c: int, k: int, seed: int = 0) -> np.ndarray:
    rows = np.flatnonzero(labels == c)
    return np.sort(np.random.default_rng(seed).choice(rows, min(k, len(rows)), replace=False)) if len(rows) else rows


# --- the metric table --------------------------------------------------------------------------


def columns(fd_head: tuple[str, str]) -> list[dict]:
    """One column per metric, with its better direction (None: not ranked). A header is a short ``name``
    (with the arrow, never broken) over a smaller qualifier ``sub``; ``label`` is both on one line (TSV)."""
    cols = [
        ("n", "N", "real / synthetic", None),
        ("fd", *fd_head, "lower"),
        ("kid", "KID", "", "lower"),
        ("precision", "precision", "", "higher"),
        ("recall", "recall", "", "higher"),
        ("density", "density", "(≈ 1)", None),
        ("coverage", "coverage", "", "higher"),
        ("judge_f1", "judge F1", "", "higher"),
        ("filter_f1", "filter clf F1", "(raw)", "higher"),
        ("auc_syn", "AUC", "synthetic only", "higher"),
        ("auc_mix", "AUC", "real + synthetic", "higher"),
    ]
    return [
        {"key": k, "name": name, "sub": sub, "label": f"{name} {sub}".strip(), "better": better}
        for k, name, sub, better in cols
    ]


def _cell(value, digits=3, flags=(), random=False, text=None, interval=None, ranged=False) -> dict:
    """A table cell. ``interval``: the number's bootstrap interval; ``ranged``: its column has intervals, so a
    number without one (a metric file from before intervals) says so."""
    return {
        "value": _num(value),
        "text": text if text is not None else fmt(value, digits),
        "flags": list(flags),
        "random": random,
        "best": False,
        "interval": interval if _num(value) is not None else None,
        "interval_text": f"[{fmt(interval[0], digits)}, {fmt(interval[1], digits)}]" if interval else "",
        "no_interval": ranged and interval is None and _num(value) is not None,
    }


def metric_rows(experiments: list[str], docs: dict) -> tuple[list[dict], tuple[str, str]]:
    """Rows (experiment x set) of cells, the FD column's head (metric, features), best values marked per column."""
    rows = []
    fd_head = ("FD", "")
    for exp in experiments:
        d = docs[exp]
        fd, kid, prdc, agree, down = (d[m] for m in METRICS)
        fd_head = (fd["name"], f"({fd[KEY_EXTRACTOR]['kind']})")
        rnd = bool(fd[KEY_EXTRACTOR].get("random_network"))
        for s in SETS:
            g = fd[KEY_SETS][s]
            absent = g.get("classes_absent", [])
            p = prdc[KEY_SETS][s][KEY_OVERALL] or {}
            judge = agree[KEY_JUDGE][KEY_SETS].get(s, {})
            filt = agree[KEY_FILTER_CLASSIFIER][KEY_SETS].get(s) if s == "raw" else None
            res = down[KEY_RESULTS] if s == down["synthetic_set"] else {}
            mix = partial(_mix_flag, absent)
            fd_v, kid_v = g[KEY_OVERALL], kid[KEY_SETS][s][KEY_OVERALL]
            cells = {
                "n": _cell(
                    None, flags=[f"no synthetic {c}" for c in absent], text=f"{g['n_real']} / {g['n_synthetic']}"
                ),
                "fd": _cell(fd_v, 2, flags=mix(fd_v), random=rnd),
                "kid": _cell(kid_v, 4, flags=mix(kid_v), random=rnd),
                **{
                    k: _cell(p.get(k), flags=mix(p.get(k)), random=rnd)
                    for k in ("precision", "recall", "density", "coverage")
                },
                **{
                    key: _cell(a.get("macro_f1"), flags=_absent(a), interval=read_interval(a, "macro_f1"), ranged=True)
                    for key, a in (("judge_f1", judge), ("filter_f1", filt or {}))
                },
            }
            for key, run in (("auc_syn", "synthetic_only"), ("auc_mix", "real_plus_synthetic")):
                auc = (res.get(run) or {}).get("macro_auc")
                flags = ["below chance"] if _num(auc) is not None and auc < CHANCE_AUC else []
                if key == "auc_syn" and absent and _num(auc) is not None:
                    # trained without some classes: the classifier cannot tell them apart (evaluate_downstream warns)
                    flags.append(f"not meaningful: no synthetic {', '.join(absent)}")
                cells[key] = _cell(auc, flags=flags, interval=read_interval(res.get(run), "macro_auc"), ranged=True)
            rows.append({"experiment": exp, "set": s, "cells": cells})
    for col in columns(fd_head):
        if col["better"]:
            _mark_best([r["cells"][col["key"]] for r in rows], col["better"])
    return rows, fd_head


def _mix_flag(absent: list[str], value) -> list[str]:
    """A distance of a set without some class compares another class mix than the real set: not a result."""
    return [f"not comparable: no synthetic {', '.join(absent)}"] if absent and _num(value) is not None else []


def _span(cell: dict) -> tuple[float, float]:
    """A number's 95 % interval; a number without one (FD, KID, an old metric file) is its own point."""
    return cell["interval"] or (cell["value"], cell["value"])


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def tie(a: dict, b: dict) -> bool:
    """THE noise rule: two numbers differ only when their 95 % intervals do not overlap (points: when unequal)."""
    (alo, ahi), (blo, bhi) = _span(a), _span(b)
    return (alo <= bhi or _close(alo, bhi)) and (blo <= ahi or _close(blo, ahi))


def within_noise(a: dict, b: dict) -> bool:
    """Different numbers that ``tie`` says are not different: a tie only the intervals make."""
    return tie(a, b) and not _close(a["value"], b["value"])


def _leaders(cells: dict, better: str) -> list:
    """The keys of the best of ``cells`` (numbers, no flags) and of every cell that ties with it."""
    vals = {k: c["value"] for k, c in cells.items()}
    top = (min if better == "lower" else max)(vals.values())
    tops = [cells[k] for k, v in vals.items() if _close(v, top)]
    return [k for k, c in cells.items() if any(tie(c, t) for t in tops)]


def _mark_best(cells: list[dict], better: str) -> None:
    """Star the best value, and each that ties with it (``tie``), among the cells that carry a number and no flag:
    a flagged number is not a result."""
    ranked = {i: c for i, c in enumerate(cells) if c["value"] is not None and not c["flags"]}
    if len(ranked) < 2:
        return
    leaders = _leaders(ranked, better)
    if len(leaders) == len(ranked):
        return  # a column where every row ties has no best value: a star on each would read as a result
    for i in leaders:
        ranked[i]["best"] = True


def _absent(agreement: dict) -> list[str]:
    return [f"macro over {agreement['macro_over']}"] if agreement.get("classes_absent") else []


# --- verdicts ----------------------------------------------------------------------------------


def _shown(cell: dict, digits: int = 3) -> str:
    """A number as the verdict's numbers list it: with its interval, and flagged ones keep their ⚠, as in the table."""
    return (
        fmt(cell["value"], digits)
        + (f" {cell['interval_text']}" if cell["interval"] else "")
        + (" ⚠" if cell["flags"] else "")
    )


def _flags(cells) -> str:
    return "; ".join(dict.fromkeys(f for c in cells for f in c["flags"]))


def verdicts(experiments: dict, rows: list[dict], real: dict, downstream_set: str, fd_name: str) -> list[dict]:
    """One line per comparison the papers make, with the numbers behind it. The verdicts read the table's
    cells (``real``: the real-only classifier's macro AUC as a cell): a flagged number (⚠ in the table) is
    listed but decides nothing, as it gets no star; numbers that ``tie`` within their intervals decide nothing."""
    out = []
    names = list(experiments)
    cells = {(r["experiment"], r["set"]): r["cells"] for r in rows}
    rnd = any(c["random"] for r in rows for c in r["cells"].values())
    rnd_note = f" ({fd_name}: {RANDOM_NOTE})" if rnd else ""
    s = downstream_set
    # 1. prompt strategies
    if len(names) >= 2:
        wins, unranked, listed = [], [], []
        for label, key, better, digits in (
            (fd_name, "fd", "lower", 2),
            ("judge F1", "judge_f1", "higher", 3),
            ("AUC real + synthetic", "auc_mix", "higher", 3),
        ):
            col = {e: cells[e, s][key] for e in names}
            arrow = "↓" if better == "lower" else "↑"
            if any(c["value"] is not None for c in col.values()):
                listed.append(f"{label} ({arrow}): " + ", ".join(f"{e} {_shown(c, digits)}" for e, c in col.items()))
            ranked = {e: c for e, c in col.items() if c["value"] is not None and not c["flags"]}
            if len(ranked) >= 2:
                lead = _leaders(ranked, better)
                wins.append((label, lead, any(within_noise(ranked[a], ranked[b]) for a in lead for b in lead)))
            elif any(c["flags"] for c in col.values()):
                unranked.append(f"{label} not compared (⚠ {_flags(col.values())})")
        decided = [w for w in wins if len(w[1]) == 1]  # a tie decides nothing
        winners = {w[1][0] for w in decided}
        strategies = ", ".join(f"{e} ({experiments[e]['prompts']})" for e in names)
        ties = [f"{w[0]} ties{' within noise' if w[2] else ''} ({', '.join(w[1])})" for w in wins if len(w[1]) > 1]
        if not decided:
            line = "no winner: " + ("; ".join(ties + unranked) if ties or unranked else "no comparable numbers")
        elif len(winners) == 1:
            line = f"{winners.pop()} wins on " + (
                "every measure"
                if not ties and not unranked
                else " and ".join(w[0] for w in decided) + "; " + "; ".join(ties + unranked)
            )
        else:
            line = "no single winner: " + "; ".join([f"{w[0]} favours {w[1][0]}" for w in decided] + ties + unranked)
        out.append(
            {"comparison": f"Prompts: {strategies}, {s} sets", "verdict": line + rnd_note, "numbers": "; ".join(listed)}
        )
    # 2. raw vs filtered
    lines, better_fd, better_f1, noise_f1, n, n_f1 = [], 0, 0, 0, 0, 0
    for e in names:
        a, b = cells[e, "raw"]["fd"], cells[e, "filtered"]["fd"]
        ja, jb = cells[e, "raw"]["judge_f1"], cells[e, "filtered"]["judge_f1"]
        if a["value"] is not None and b["value"] is not None and not a["flags"] + b["flags"]:
            n += 1
            better_fd += b["value"] < a["value"]
        if ja["value"] is not None and jb["value"] is not None and not ja["flags"] + jb["flags"]:
            n_f1 += 1
            better_f1 += jb["value"] > ja["value"] and not tie(ja, jb)
            noise_f1 += within_noise(ja, jb)
        lines.append(f"{e}: {fd_name} {_shown(a, 2)} → {_shown(b, 2)}, judge F1 {_shown(ja)} → {_shown(jb)}")
    fd_flags = _flags(cells[e, t]["fd"] for e in names for t in SETS)
    judged = (
        f"raised the independent judge's F1 in {better_f1} of {n_f1}"
        + (f" ({noise_f1} within noise)" if noise_f1 else "")
        if n_f1
        else "the independent judge's F1 is not compared "
        f"(⚠ {_flags(cells[e, t]['judge_f1'] for e in names for t in SETS)})"
    )
    out.append(
        {
            "comparison": "Raw vs filtered synthetic sets",
            "verdict": (
                f"{fd_name} is not compared (⚠ {fd_flags})"
                if not n and fd_flags
                else f"filtering lowered {fd_name} in {better_fd} of {n} experiments"
            )
            + f"; {judged}"
            + rnd_note,
            "numbers": "; ".join(lines),
        }
    )
    # 3. real vs real + synthetic
    deltas, noise, lines = {}, [], []
    for e in names:
        mix, syn = cells[e, s]["auc_mix"], cells[e, s]["auc_syn"]
        if mix["value"] is not None and not mix["flags"] and real["value"] is not None:
            deltas[e] = mix["value"] - real["value"]
            if within_noise(mix, real):
                noise.append(e)
        lines.append(f"{e}: real + synthetic {_shown(mix)}, synthetic only {_shown(syn)}")
    if deltas:
        up = [e for e, d in deltas.items() if d > 0 and e not in noise]
        if up:
            best = max(up, key=deltas.get)
            verdict = (
                f"adding synthetic images raised the macro AUC in {len(up)} of {len(deltas)} experiments; "
                f"most with {best} ({deltas[best]:+.3f})"
            )
        else:
            best = max(deltas, key=deltas.get)
            verdict = (
                f"adding synthetic images did not raise the macro AUC in any of {len(deltas)} experiments "
                f"(best change: {best}, {deltas[best]:+.3f})"
            )
        if noise:
            verdict += "; within noise (95 % intervals overlap): " + ", ".join(f"{e} ({deltas[e]:+.3f})" for e in noise)
    else:
        verdict = "no downstream AUC to compare"
    out.append(
        {
            "comparison": f"Real only vs real + synthetic ({s} set), ResNet-18 on the real test split",
            "verdict": verdict,
            "numbers": f"real only {_shown(real)}; " + "; ".join(lines),
        }
    )
    return out


def warnings(experiments: list[str], docs: dict, filter_summaries: dict) -> list[dict]:
    """Every warning with the experiment / set it comes from; identical texts are listed once."""
    where: dict[str, list[str]] = {}

    def add(text, exp, s):
        where.setdefault(text, [])
        if f"{exp} / {s}" not in where[text]:
            where[text].append(f"{exp} / {s}")

    for e in experiments:
        for m in ("fd", "kid", "prdc"):
            for s, d in docs[e][m][KEY_SETS].items():
                for w in d.get(KEY_WARNINGS, []):
                    add(w, e, s)
        for w in docs[e]["agreement"].get(KEY_WARNINGS, []):  # e.g. a field of view other than the classifiers'
            for s in docs[e]["agreement"][KEY_JUDGE][KEY_SETS]:
                add(w, e, s)
        for s, d in docs[e]["agreement"][KEY_JUDGE][KEY_SETS].items():
            if d.get("classes_absent"):
                add(f"judge F1 is a macro over {d['macro_over']}; absent: {', '.join(d['classes_absent'])}", e, s)
        down = docs[e]["downstream"]
        for w in down.get(KEY_WARNINGS, []):
            add(w, e, down["synthetic_set"])
        summ = filter_summaries.get(e) or {}
        if summ.get("never_passed"):
            add(f"classes that never passed the filter: {', '.join(summ['never_passed'])}", e, "filtered")
    every = {f"{e} / {s}" for e in experiments for s in SETS}
    # a warning about every experiment and set says so in three words rather than listing them all
    return [
        {"text": t, "where": ["every experiment / set"] if len(experiments) > 1 and set(w) == every else w}
        for t, w in where.items()
    ]


# --- pictures ----------------------------------------------------------------------------------


def class_pictures(real_h5, sets: dict, seed: int = 0) -> list[dict]:
    """Per class: real, raw and filtered strips side by side, with the shown images' full prompts."""
    with PatchFile(real_h5) as real:
        names = real.label_names
        ids = sorted(set(range(len(names))) | set(real.labels.tolist()))  # -1: unlabelled patches (e.g. PathLDM)
        real_strips = {c: strip(real.read(_pick(real.labels, c, STRIP, seed))) for c in ids}
    out = {c: {"name": class_name(c, names), "real": real_strips[c], "sets": [], "prompts": []} for c in ids}
    for s, path in sets.items():
        with PatchFile(path) as pf:
            prompts = pf.column("prompts") if len(pf) else np.array([], object)
            for c in out:
                rows = _pick(pf.labels, c, STRIP, seed)
                out[c]["sets"].append({"set": s, "uri": strip(pf.read(rows)), "n": int((pf.labels == c).sum())})
                for p in prompts[rows]:
                    if p not in out[c]["prompts"]:
                        out[c]["prompts"].append(str(p))
    return list(out.values())


def _latest_validation(folder) -> tuple[str | None, str]:
    p = Path(folder) if folder else None
    files = sorted(p.glob("step-*.png")) if p and p.is_dir() else []
    return (data_uri(files[-1]), files[-1].stem) if files else (None, "")


def _table(path, head: int | None = None) -> dict | None:
    p = Path(path) if path else None
    if not p or not p.is_file():
        return None
    df = pd.read_csv(p, sep="\t", keep_default_na=False)
    return {
        "columns": list(df.columns),
        "rows": df.head(head).values.tolist() if head else df.values.tolist(),
        "n": len(df),
    }


# --- the page ----------------------------------------------------------------------------------


def _per_experiment(inputs: dict, experiments: list[str]) -> dict:
    out = {e: {} for e in experiments}
    for key in PER_EXPERIMENT:
        values = inputs.get(key) or []
        values = [values] if isinstance(values, str) else list(values)
        if len(values) != len(experiments):
            raise ValueError(f"report input {key!r}: {len(values)} files for {len(experiments)} experiments")
        for e, v in zip(experiments, values):
            out[e][key] = v
    return out


def _as_list(v) -> list:
    return [] if v is None else [v] if isinstance(v, str) else list(v)


def context(inputs: dict, config: dict) -> dict:
    """Everything the templates show, from the declared input files only."""
    experiments = config["experiments"]
    names = list(experiments)
    files = _per_experiment(inputs, names)
    docs = {e: {m: read_metrics(files[e][m]) for m in METRICS} for e in names}
    ev = config["evaluation"]
    real, judge = (read_classifier_metrics(inputs[k]) if inputs.get(k) else None for k in ("classifier", "judge"))
    rows, fd_head = metric_rows(names, docs)
    fd_name = " ".join(fd_head).strip()
    summaries = {e: _load(files[e]["filter_summary"]) for e in names}
    extractor = docs[names[0]]["fd"][KEY_EXTRACTOR] if names else {}
    real_test = (real or {}).get(KEY_TEST, {})
    real_auc = _cell(real_test.get("macro_auc"), interval=read_interval(real_test, "macro_auc"), ranged=True)
    exps = []
    for e in names:
        val_uri, val_step = _latest_validation(files[e]["validation"])
        fd = docs[e]["fd"]
        exps.append(
            {
                "name": e,
                "prompts": experiments[e]["prompts"],
                "classes": class_pictures(inputs["real"], {s: files[e][s] for s in SETS}, ev["seed"]),
                "grids": [
                    (data_uri(files[e]["acceptance_plot"]), "filter acceptance per class and round"),
                    (
                        data_uri(files[e]["coverage"]),
                        f"coverage: real vs synthetic features (PCA), {fd[KEY_EXTRACTOR]['name']}",
                    ),
                ],
                "acceptance": _table(files[e]["acceptance"]),
                "loss": data_uri(files[e]["loss_curve"]),
                "validation": val_uri,
                "validation_step": val_step,
                "prompt_table": _table(files[e]["prompt_frequencies"], head=8),
                "per_class": _per_class_rows(docs[e]),
                "harmonisation": {s: fd[KEY_SETS][s]["harmonisation"] for s in SETS},
                "matching": {
                    s: {
                        "n_real": fd[KEY_SETS][s]["n_real"],
                        "n_synthetic": fd[KEY_SETS][s]["n_synthetic"],
                        "real": fd[KEY_SETS][s]["class_counts_real"],
                        "synthetic": fd[KEY_SETS][s]["class_counts_synthetic"],
                    }
                    for s in SETS
                },
            }
        )
    settings = []
    for e in names:
        tr, sa = experiment_settings(config, e, "train"), experiment_settings(config, e, "sampling")
        settings.append(
            [
                e,
                experiments[e]["prompts"],
                fmt(tr["resolution"] or config["tiling"]["patch_size"]),
                f"LoRA rank {tr['rank']}" if tr["method"] == "lora" else "full UNet",
                fmt(tr["max_steps"]),
                f"{tr['learning_rate']:g}",
                tr["lr_scheduler"],
                sa["scheduler"],
                fmt(sa["steps"]),
                fmt(sa["guidance_scale"], 1),
            ]
        )
    thumbs = [(data_uri(t), Path(t).name.replace(".thumbnail.png", "")) for t in _as_list(inputs.get("thumbnails"))]
    morph = _as_list(inputs.get("morphology"))
    summaries_tsv = _as_list(inputs.get("summaries"))
    return {
        "title": "histosynth report",
        "generated": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "config": config,
        "ev": ev,
        "extractor": extractor,
        "random_note": RANDOM_NOTE,
        "interval_method": BOOTSTRAP_METHOD,
        "columns": columns(fd_head),
        "rows": rows,
        "fd_name": fd_name,
        "fd_head": fd_head,
        "verdicts": verdicts(experiments, rows, real_auc, ev["downstream_set"], fd_name),
        "warnings": warnings(names, docs, summaries),
        "real": _real_only(real),
        "judge": judge,
        "judge_note": docs[names[0]]["agreement"][KEY_JUDGE]["description"] if names else "",
        "experiments": exps,
        "settings": settings,
        "split_examples": data_uri(inputs.get("split_examples")),
        "split_summary": _table(inputs.get("split_summary")),
        "thumbnails": thumbs,
        "morphology": [
            (data_uri(p), f"{c} (features: {_embedding_name(config)})")
            for p, c in zip(morph, ("choosing k", "patches nearest each k-means centroid"))
        ],
        "summaries": _table(summaries_tsv[0], head=10) if summaries_tsv else None,
        "reference": docs[names[0]]["fd"][KEY_REFERENCE] if names else {},
        "config_json": json.dumps(config, indent=1, default=str),
    }


def _real_only(real: dict | None) -> dict | None:
    """The real-only classifier's test numbers, macro F1 over the classes the test split contains."""
    if not real:
        return None
    t = real[KEY_TEST]
    out = {
        "n": t["n"],
        "accuracy": t["accuracy"],
        "macro_auc": t["macro_auc"],
        "weights": real["weights"],
        **macro_over_present(t, real["label_names"]),
    }
    for key in ("macro_auc", "macro_f1"):  # the interval in words, or that the file has none
        c = _cell(out[key], interval=read_interval(t, key), ranged=True)
        out[interval_key(key)] = c["interval_text"] or ("no interval" if c["no_interval"] else "")
    return out


def _per_class_rows(d: dict) -> list[list[str]]:
    fd, agree = d["fd"], d["agreement"][KEY_JUDGE][KEY_SETS]
    classes = list(
        dict.fromkeys(
            [
                *fd[KEY_REFERENCE]["class_counts"],
                *fd[KEY_SETS]["raw"]["per_class"],
                *fd[KEY_SETS]["filtered"]["per_class"],
            ]
        )
    )
    rows = []
    for c in classes:
        rows.append(
            [
                c,
                fmt(fd[KEY_REFERENCE]["class_counts"].get(c)),
                *[fmt(fd[KEY_SETS][s]["class_counts_synthetic"].get(c, 0)) for s in SETS],
                *[fmt(fd[KEY_SETS][s]["per_class"].get(c), 2) for s in SETS],
                *[fmt((agree.get(s, {}).get("per_class", {}).get(c) or {}).get("f1")) for s in SETS],
            ]
        )
    return rows


def metrics_frame(ctx: dict) -> pd.DataFrame:
    """The metric table as plain text (for Snakemake's --report), best values starred."""
    rows = []
    for r in ctx["rows"]:
        row = {"experiment": r["experiment"], "set": r["set"]}
        for col in ctx["columns"]:
            c = r["cells"][col["key"]]
            arrow = {"lower": " ↓", "higher": " ↑"}.get(col["better"], "")
            text = (
                c["text"]
                + (f" {c['interval_text']}" if c["interval"] else " (no interval)" if c["no_interval"] else "")
                + (" ★" if c["best"] else "")
                + "".join(f" ⚠ {f}" for f in c["flags"])
            )
            row[col["label"] + arrow] = text + (f" ({RANDOM_NOTE})" if c["random"] else "")
        rows.append(row)
    return pd.DataFrame(rows)


def build_report(inputs: dict, config: dict, out_html, out_metrics=None, out_verdicts=None) -> None:
    """The self-contained HTML page ``out_html`` from the files in ``inputs`` (the rule's named inputs,
    see ``report_inputs`` in rules/common.smk) and the run's ``config``; optionally the metric table
    ``out_metrics`` and ``out_verdicts`` as TSV. Reads nothing but ``inputs``."""
    import jinja2

    ctx = context(inputs, config)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.tests["numeric"] = is_numeric
    html = env.get_template("report.html.j2").render(**ctx)
    with atomic_path(out_html) as tmp:
        tmp.write_text(html, encoding="utf-8")
    if out_metrics:
        with atomic_path(out_metrics) as tmp:
            metrics_frame(ctx).to_csv(tmp, sep="\t", index=False)
    if out_verdicts:
        with atomic_path(out_verdicts) as tmp:
            pd.DataFrame(ctx["verdicts"]).to_csv(tmp, sep="\t", index=False)


def _embedding_name(config: dict) -> str:
    """The features the morphology clusters were made from (embedding.backbone), in words."""
    name = config.get("embedding", {}).get("backbone", "?")
    if name == "classifier":
        return "penultimate layer of the workflow's ResNet-18 trained on the real training split"
    return f"{name} ({RANDOM_NOTE})" if name == "tiny" else f"{name} ({config['embedding']['pooling']} pooling)"
