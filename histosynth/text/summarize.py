"""``summarize_reports``: one short conditioning text per case, cached per report.

Backends:
- ``extractive`` (offline default): :mod:`histosynth.text.extract`, fitted to the token budget.
- ``openai``: any OpenAI-compatible chat-completions server through the official ``openai`` client.
  The client's own retry machinery handles 429 / 5xx / timeouts with exponential backoff (and
  honours ``Retry-After``); a thread pool bounds concurrency; every answer is written to a
  persistent cache as soon as it arrives, keyed by (model, template, report-text hash), so a rerun
  or a restart after a crash never asks for a summary it already has. The API key is read from an
  environment variable only and never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
from ..progress import progress_bar

from ..atomic import atomic_path
from ..errors import InputError, ResourceError
from .extract import compose, extract_fields

log = logging.getLogger(__name__)


@dataclass
class Report:
    case_id: str
    text: str


def read_reports(path: str | os.PathLike, id_column: str, text_column: str) -> list[Report]:
    """Reports from a CSV (or TSV) or a folder of ``<case_id>.txt``; errors name file, row or id."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"reports: {p} (config key pathology_reports.path) does not exist")
    if p.is_dir():
        reports = []
        for f in sorted(p.glob("*.txt")):
            raw = f.read_bytes()
            text = raw.decode("utf-8", errors="replace")
            if "\ufffd" in text:
                log.warning("pathology_reports: %s is not valid UTF-8; undecodable bytes replaced", f)
            reports.append(Report(f.stem, text))
        if not reports:
            raise InputError(f"reports: no .txt files in {p}")
    else:
        df = pd.read_csv(
            p,
            sep="\t" if p.suffix.lower() in (".tsv", ".tab") else ",",
            dtype=str,
            encoding="utf-8",
            encoding_errors="replace",
            keep_default_na=False,
            index_col=False,
        )
        missing = [c for c in (id_column, text_column) if c not in df.columns]
        if missing:
            raise InputError(
                f"reports: {p} lacks column(s) {missing} (pathology_reports.id_column / pathology_reports.text_column); has {list(df.columns)}"
            )
        bad = df.index[df[text_column].str.contains("\ufffd", regex=False)].tolist()
        if bad:
            log.warning(
                "pathology_reports: %s rows %s are not valid UTF-8; undecodable bytes replaced", p, [i + 2 for i in bad]
            )
        no_id = df.index[df[id_column].str.strip() == ""].tolist()
        if no_id:
            raise InputError(f"reports: {p} has rows without {id_column!r} (lines {[i + 2 for i in no_id]})")
        reports = [Report(str(i).strip(), str(t)) for i, t in zip(df[id_column], df[text_column])]
    ids = [r.case_id for r in reports]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"reports: {p} has duplicate ids {dup[:10]}{' ...' if len(dup) > 10 else ''}")
    return reports


class SummaryCache:
    """One JSON file per summary, written atomically: safe under crashes and parallel writers."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(model: str, template: str, text: str) -> str:
        h = hashlib.sha256()
        for part in (model, template, text):
            h.update(hashlib.sha256(part.encode("utf-8")).digest())
        return h.hexdigest()

    def get(self, key: str) -> str | None:
        f = self.dir / f"{key}.json"
        if not f.is_file():
            return None
        try:
            return json.loads(f.read_text())["summary"]
        except (json.JSONDecodeError, KeyError):
            return None

    def put(self, key: str, summary: str, meta: dict) -> None:
        with atomic_path(self.dir / f"{key}.json") as tmp:
            tmp.write_text(json.dumps({"summary": summary, **meta}))


def openai_client(cfg: dict):
    """The official client; retries and backoff are its own (``max_retries``, ``timeout``)."""
    from openai import OpenAI

    env = cfg.get("api_key_env")
    key = os.environ.get(env) if env else "not-needed"
    if not key:
        raise InputError(
            f"pathology_reports.openai: environment variable {env!r} (pathology_reports.openai.api_key_env) is not set; "
            "export the API key there (it is never read from the config)"
        )
    return OpenAI(
        api_key=key, base_url=cfg.get("base_url") or None, max_retries=cfg["max_retries"], timeout=cfg["timeout_s"]
    )


def _openai_error(e: Exception, cfg: dict, case_id: str) -> Exception:
    """The client's error, restated with the config key to check (summaries already received stay cached)."""
    import openai

    url = cfg.get("base_url") or "https://api.openai.com/v1 (the default; pathology_reports.openai.base_url is empty)"
    where = f"reports: summarising case {case_id!r} with model {cfg['model']!r}"
    if isinstance(e, openai.APITimeoutError):
        return ResourceError(
            f"{where}: the server at pathology_reports.openai.base_url = {url} did not answer within "
            f"pathology_reports.openai.timeout_s = {cfg['timeout_s']} s ({cfg['max_retries']} retries)"
        )
    if isinstance(e, openai.APIConnectionError):
        return ResourceError(
            f"{where}: cannot connect to pathology_reports.openai.base_url = {url} ({e.__cause__ or e}); "
            "is the server running and reachable from this machine?"
        )
    if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return InputError(
            f"{where}: the server at pathology_reports.openai.base_url = {url} refused the API key read from "
            f"${cfg.get('api_key_env')} (pathology_reports.openai.api_key_env): {e.status_code}"
        )
    if isinstance(e, openai.NotFoundError):
        return InputError(
            f"{where}: the server at pathology_reports.openai.base_url = {url} has no model {cfg['model']!r} "
            f"(pathology_reports.openai.model) or no chat-completions endpoint there: {e.status_code}"
        )
    if isinstance(e, openai.APIStatusError):
        return ResourceError(
            f"{where}: the server at pathology_reports.openai.base_url = {url} answered "
            f"{e.status_code} after {cfg['max_retries']} retries (pathology_reports.openai.max_retries): {e.message}"
        )
    return e


def _fit(summary: str, count_tokens: Callable[[str], int], max_tokens: int) -> tuple[str, bool]:
    """Trim an LLM line at field (then word) boundaries until it fits; report whether it was cut."""
    s = " ".join(summary.split())
    if count_tokens(s) <= max_tokens:
        return s, False
    parts = [p.strip() for p in s.split(";")]
    while len(parts) > 1 and count_tokens("; ".join(parts)) > max_tokens:
        parts.pop()
    s = "; ".join(parts)
    words = s.split()
    while words and count_tokens(" ".join(words)) > max_tokens:
        words.pop()
    return " ".join(words), True


def summarize_openai(
    reports: list[Report],
    cfg: dict,
    cache: SummaryCache,
    count_tokens,
    max_tokens: int,
    client=None,
    progress: bool = True,
) -> dict[str, tuple[str, str]]:
    """case_id -> (summary, status) with status cached / requested / truncated / empty."""
    model, template = cfg["model"], cfg["prompt_template"]
    if "{report}" not in template:
        raise InputError("pathology_reports.openai.prompt_template must contain '{report}'")
    results: dict[str, tuple[str, str]] = {}
    todo = []
    for r in reports:
        if not r.text.strip():
            results[r.case_id] = ("", "empty")
            continue
        hit = cache.get(cache.key(model, template, r.text))
        if hit is not None:
            results[r.case_id] = (*_fit(hit, count_tokens, max_tokens)[:1], "cached")
        else:
            todo.append(r)
    log.info(
        "pathology_reports: %d cached, %d to request from %s (model %s)",
        len(results),
        len(todo),
        cfg.get("base_url") or "OpenAI",
        model,
    )
    if todo:
        client = client or openai_client(cfg)

        def ask(r: Report) -> str:
            resp = client.chat.completions.create(
                model=model,
                temperature=cfg["temperature"],
                messages=[{"role": "user", "content": template.replace("{report}", r.text)}],
            )
            return (resp.choices[0].message.content or "").strip()

        with ThreadPoolExecutor(cfg["max_concurrency"]) as pool:
            futures = {pool.submit(ask, r): r for r in todo}
            for fut in progress_bar(
                as_completed(futures), total=len(futures), desc="summaries", disable=not progress, mininterval=2
            ):
                r = futures[fut]
                try:
                    raw = fut.result()  # the client already retried; what fails here fails the rule
                except Exception as e:
                    pool.shutdown(wait=False, cancel_futures=True)  # the rest would fail the same way
                    err = _openai_error(e, cfg, r.case_id)
                    if err is e:
                        raise
                    raise err from e
                cache.put(cache.key(model, template, r.text), raw, {"case_id": r.case_id, "model": model})
                s, cut = _fit(raw, count_tokens, max_tokens)
                results[r.case_id] = (s, "truncated" if cut else "requested")
    return results


def summarize_extractive(reports: list[Report], count_tokens, max_tokens: int) -> dict[str, tuple[str, str]]:
    """Rule-based summaries (see :mod:`histosynth.text.extract`): only what a report states with certainty,
    fitted to ``max_tokens`` by dropping the least important fields (margins and stage first)."""
    out = {}
    for r in reports:
        fields = extract_fields(r.text)
        s, kept = compose(fields, count_tokens, max_tokens)
        status = (
            "empty"
            if not r.text.strip()
            else ("no fields" if not fields.values else "truncated" if len(kept) < len(fields.values) else "extracted")
        )
        out[r.case_id] = (s, status)
    return out


def summarize_reports(
    reports_path, out_tsv, cfg: dict, count_tokens: Callable[[str], int], client=None, progress=True
) -> pd.DataFrame:
    """Summarise every report of ``reports_path`` (``cfg``: the ``reports:`` section) within ``cfg["max_tokens"]``
    CLIP tokens, counted by ``count_tokens``, into ``out_tsv``: case_id, summary, n_tokens, status, backend.

    The openai backend caches each answer in ``cfg["cache_dir"]`` per (model, template, report), so a
    rerun asks the server only for reports it has not summarised yet; the extractive one caches nothing.
    """
    reports = read_reports(reports_path, cfg["id_column"], cfg["text_column"])
    max_tokens = cfg["max_tokens"]
    if cfg["backend"] == "extractive":
        res = summarize_extractive(reports, count_tokens, max_tokens)
        backend = "extractive"
    else:
        res = summarize_openai(
            reports, cfg["openai"], SummaryCache(cfg["cache_dir"]), count_tokens, max_tokens, client, progress
        )
        backend = f"openai:{cfg['openai']['model']}"
    df = pd.DataFrame(
        [
            {
                "case_id": r.case_id,
                "summary": res[r.case_id][0],
                "n_tokens": count_tokens(res[r.case_id][0]),
                "status": res[r.case_id][1],
                "backend": backend,
            }
            for r in reports
        ]
    )
    counts = df["status"].value_counts().to_dict()
    log.info("pathology_reports: %d summaries (%s)", len(df), ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if counts.get("empty"):
        log.warning(
            "pathology_reports: %d report(s) have empty text: %s",
            counts["empty"],
            df.loc[df.status == "empty", "case_id"].tolist()[:10],
        )
    if counts.get("no fields"):  # e.g. a clinical history only, no diagnosis, or only conflicting statements
        log.warning(
            "pathology_reports: %d report(s) state no field with certainty; their summary is empty (they use the label prompt): %s",
            counts["no fields"],
            df.loc[df.status == "no fields", "case_id"].tolist()[:10],
        )
    with atomic_path(out_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    return df
