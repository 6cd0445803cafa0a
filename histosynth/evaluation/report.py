"""``report``: one self-contained HTML page comparing every experiment.

Images are embedded as data URIs (no network, nothing beside the file needed). Every string that
comes from data or config — ids, prompts, report summaries, paths — is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from html import escape
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr:nth-child(even){background:#fafafa}
.warn{background:#fff4e0;border-left:4px solid #f0a000;padding:.5em 1em;margin:.5em 0}
.muted{color:#777;font-size:.85em}img{max-width:100%;border:1px solid #eee;margin:.3em 0}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}.grid{display:flex;flex-wrap:wrap;gap:1em}
.grid figure{margin:0;flex:1 1 45%}figcaption{font-size:.85em;color:#555}code{background:#f3f3f3;padding:0 .2em}
"""


def _img(path, caption: str = "") -> str:
    p = Path(path)
    if not p.is_file():
        return ""
    data = base64.b64encode(p.read_bytes()).decode()
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return escape(str(v))


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    h = "".join(f'<th class="{"l" if i < left else ""}">{escape(c)}</th>' for i, c in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _load(path):
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None


def metrics_rows(experiments: dict, eval_dir: Path) -> tuple[list[list], list[str]]:
    rows, warnings = [], set()
    for exp in experiments:
        m = {k: _load(eval_dir / exp / f"{k}.json") for k in ("fid", "fd_embedding", "kid", "prdc", "classifier_agreement", "downstream")}
        for s in ("raw", "filtered"):
            g = lambda k, key="overall": (m[k] or {}).get("sets", {}).get(s, {}).get(key)  # noqa: E731
            prdc = g("prdc") or {}
            agree = (m["classifier_agreement"] or {}).get("sets", {}).get(s, {})
            down = (m["downstream"] or {}).get("results", {}) if s == (m["downstream"] or {}).get("synthetic_set") else {}
            for k in ("fid", "fd_embedding", "kid"):
                warnings.update(g(k, "warnings") or [])
            warnings.update(f"{exp}: {w}" for w in (m["downstream"] or {}).get("warnings", []))
            rows.append([escape(exp), s, _fmt(g("fid", "n")), _fmt(g("fid"), 2), _fmt(g("fd_embedding"), 2), _fmt(g("kid"), 4),
                         _fmt(prdc.get("precision")), _fmt(prdc.get("recall")), _fmt(prdc.get("density")), _fmt(prdc.get("coverage")),
                         _fmt(agree.get("macro_precision")), _fmt(agree.get("macro_recall")), _fmt(agree.get("macro_f1")),
                         _fmt(down.get("synthetic_only", {}).get("macro_auc")), _fmt(down.get("real_plus_synthetic", {}).get("macro_auc"))])
    return rows, sorted(warnings)


def build_report(config: dict, results: Path, out_html, title: str = "histosynth report") -> None:
    results = Path(results)
    experiments = config["experiments"]
    ev = results / "eval"
    parts = [f"<h1>{escape(title)}</h1>",
             f'<p class="muted">Generated {dt.datetime.now().strftime("%Y-%m-%d %H:%M")} · base model '
             f'<code>{escape(config["base_model"])}</code> · embedding backbone <code>{escape(config["embedding"]["backbone"])}</code> · '
             f'FID features <code>{escape(config["evaluation"]["fid_extractor"])}</code> · reference split '
             f'<code>{escape(config["evaluation"]["reference_split"])}</code></p>']

    # metrics side by side
    rows, warnings = metrics_rows(experiments, ev)
    fid_kind = "FID (Inception)" if config["evaluation"]["fid_extractor"] == "inception" else "FD (embedding, not FID)"
    parts.append("<h2>Metrics by experiment</h2>")
    parts += [f'<div class="warn">{escape(w)}</div>' for w in warnings]
    parts.append(_table(["experiment", "set", "N", fid_kind, "FD-embedding", "KID", "precision", "recall", "density", "coverage",
                         "clf P", "clf R", "clf F1", "AUC synth-only", "AUC real+synth"], rows, left=2))
    real = _load(results / "classifier" / "metrics.json")
    if real:
        t = real["test"]
        parts.append(f'<p>Real-only ResNet-18 on the real test split (N = {_fmt(t["n"])}): accuracy {_fmt(t["accuracy"])}, '
                     f'macro AUC {_fmt(t["macro_auc"])}, macro F1 {_fmt(t["macro_f1"])} — the baseline for the downstream columns. '
                     f'Weights: {escape(str(real["weights"]))}.</p>')
    parts.append('<p class="muted">clf P/R/F1: the classifier\'s agreement with each image\'s prompt class, macro means (as the '
                 "LoRA paper defines them). Precision/recall (k = %d) and density/coverage use the FID features. Downstream AUCs "
                 "train a ResNet-18 on the %s synthetic set alone or with the real train split, tested on real patches.</p>"
                 % (config["evaluation"]["prdc_k"], escape(config["evaluation"]["downstream_set"])))

    # per-class detail
    parts.append("<h2>Per class</h2>")
    for exp in experiments:
        fd = _load(ev / exp / "fd_embedding.json")
        agree = _load(ev / exp / "classifier_agreement.json")
        if not fd:
            continue
        classes = [c for c in fd["sets"]["raw"] if c not in ("overall", "n", "resolution", "warnings")]
        crow = []
        for c in classes:
            crow.append([escape(c)] + [_fmt(fd["sets"][s].get(c), 2) for s in ("raw", "filtered")] +
                        [_fmt((agree or {}).get("sets", {}).get(s, {}).get("per_class", {}).get(c, {}).get("f1")) for s in ("raw", "filtered")])
        parts.append(f"<details><summary>{escape(exp)}</summary>" +
                     _table(["class", "FD-emb raw", "FD-emb filtered", "clf F1 raw", "clf F1 filtered"], crow) + "</details>")

    # images
    parts.append("<h2>Real and synthetic patches</h2>")
    parts.append(_img(results / "patches" / "examples.png", "real training patches per class"))
    for exp in experiments:
        d = results / "synthetic" / exp
        acc = d / "acceptance.tsv"
        parts.append(f"<h3>{escape(exp)} <span class='muted'>(prompts: {escape(experiments[exp]['prompts'])})</span></h3><div class='grid'>"
                     + _img(d / "raw_grid.png", "synthetic, unfiltered") + _img(d / "filtered_grid.png", "synthetic, accepted by the classifier")
                     + _img(d / "acceptance.png", "filter acceptance per class and round")
                     + _img(ev / exp / "coverage.png", "coverage: real vs synthetic embeddings (PCA)") + "</div>")
        summ = _load(d / "filter_summary.json")
        if summ and summ.get("never_passed"):
            parts.append(f'<div class="warn">classes that never passed the filter: {escape(", ".join(summ["never_passed"]))}</div>')
        if acc.is_file():
            parts.append("<details><summary>filter rounds</summary>" + pd.read_csv(acc, sep="\t").to_html(index=False, escape=True) + "</details>")

    parts.append("<h2>Training</h2><div class='grid'>")
    for exp in experiments:
        parts.append(_img(results / "models" / exp / "loss.png", f"{exp}: training loss"))
        vals = sorted((results / "models" / exp / "validation").glob("step-*.png"))
        if vals:
            parts.append(_img(vals[-1], f"{exp}: validation samples at {vals[-1].stem}"))
    parts.append("</div>")

    # prompts and morphology
    parts.append("<h2>Prompts</h2>")
    for exp in experiments:
        f = results / "prompts" / f"{exp}.freq.tsv"
        if f.is_file():
            top = pd.read_csv(f, sep="\t", keep_default_na=False).head(8)
            parts.append(f"<details><summary>{escape(exp)}: {len(pd.read_csv(f, sep=chr(9)))} distinct prompts</summary>"
                         + top.to_html(index=False, escape=True) + "</details>")
    summaries = results / "reports" / "summaries.tsv"
    if summaries.is_file():
        s = pd.read_csv(summaries, sep="\t", keep_default_na=False).head(10)
        parts.append("<details><summary>report summaries (first 10)</summary>" + s.to_html(index=False, escape=True) + "</details>")
    if (results / "morphology" / "cluster_examples.png").is_file():
        parts.append("<h2>Morphology clusters</h2><div class='grid'>" + _img(results / "morphology" / "cluster_examples.png",
                     "patches nearest each k-means centroid") + _img(results / "morphology" / "k_sweep.png", "choosing k") + "</div>")

    # slides
    thumbs = sorted((results / "tiles").glob("*.thumbnail.png"))[:4]
    if thumbs:
        parts.append("<h2>Tiling</h2><div class='grid'>" + "".join(_img(t, t.name.replace(".thumbnail.png", "")) for t in thumbs) + "</div>")

    # settings
    parts.append("<h2>Settings that produced these numbers</h2>")
    srows = []
    for exp, e in experiments.items():
        tr = {**config["train"], **(e.get("train") or {})}
        sa = {**config["sample"], **(e.get("sample") or {})}
        srows.append([escape(exp), escape(e["prompts"]), _fmt(tr["resolution"] or config["tiling"]["patch_size"]),
                      escape(f"LoRA rank {tr['rank']}" if tr["method"] == "lora" else "full UNet"),
                      _fmt(tr["max_steps"]), _fmt(tr["learning_rate"], 6), escape(tr["lr_scheduler"]), escape(sa["scheduler"]),
                      _fmt(sa["steps"]), _fmt(sa["guidance_scale"], 1)])
    parts.append(_table(["experiment", "prompts", "px", "trained", "steps", "lr", "lr schedule", "sampler", "sampling steps", "CFG"], srows))
    parts.append("<details><summary>full configuration</summary><pre>" + escape(json.dumps(config, indent=1, default=str)) + "</pre></details>")

    html = f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{CSS}</style></head><body>" \
           + "\n".join(p for p in parts if p) + "</body></html>"
    with atomic_path(out_html) as tmp:
        tmp.write_text(html, encoding="utf-8")
