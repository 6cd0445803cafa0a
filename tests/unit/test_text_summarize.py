"""``histosynth.text.summarize``: reading reports, the extractive backend's table, and the real ``openai`` client
against an OpenAI-compatible server on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from histosynth.config import default_config
from histosynth.errors import InputError, ResourceError
from histosynth.text.prompts import token_counter
from histosynth.text.summarize import read_reports, summarize_reports

from fake_openai import FakeOpenAI


def words(s):
    return len(s.split()) + 2


def write_reports(path, n, special=None):
    special = special or {}
    rows = [
        {"case_id": f"C{i}", "text": f"CASE[C{i}] invasive carcinoma report {special.get(i, '')}"} for i in range(n)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def cfg_for(server, tmp_path, **openai):
    cfg = default_config()["pathology_reports"]
    cfg.update(path=str(tmp_path / "r.csv"), backend="openai", cache_dir=str(tmp_path / "cache"))
    cfg["openai"].update(base_url=server.base_url, api_key_env="HISTOSYNTH_TEST_KEY", max_retries=3, **openai)
    return cfg


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("HISTOSYNTH_TEST_KEY", "sk-test-secret")


def test_retries_on_429_and_500_then_caches(tmp_path):
    write_reports(tmp_path / "r.csv", 5, {1: "RATE-LIMIT", 3: "SERVER-ERROR"})
    with FakeOpenAI() as server:
        cfg = cfg_for(server, tmp_path, max_concurrency=2)
        df = summarize_reports(cfg["path"], tmp_path / "s.tsv", cfg, words, progress=False)
        assert sorted(server.requests) == sorted([f"C{i}" for i in range(5)] + ["C1", "C3"])  # one retry each
        assert sorted(server.answered) == [f"C{i}" for i in range(5)]
        assert server.auth == {"Bearer sk-test-secret"}
        assert set(df["status"]) == {"requested"} and df.set_index("case_id").loc["C3", "summary"].endswith("case C3")
        # a rerun asks nothing: everything comes from the cache
        server.requests.clear()
        df2 = summarize_reports(cfg["path"], tmp_path / "s2.tsv", cfg, words, progress=False)
        assert server.requests == [] and set(df2["status"]) == {"cached"}
        assert df2["summary"].tolist() == df["summary"].tolist()
    # the key is never written to results
    for f in [tmp_path / "s.tsv", *(tmp_path / "cache").iterdir()]:
        assert "sk-test-secret" not in f.read_text()


def test_token_budget_trims_long_answers(tmp_path):
    write_reports(tmp_path / "r.csv", 1)
    with FakeOpenAI() as server:
        cfg = cfg_for(server, tmp_path)
        cfg["max_tokens"] = 6  # "invasive ductal carcinoma" (3 words) + 2 specials fits, the rest does not
        df = summarize_reports(cfg["path"], tmp_path / "s.tsv", cfg, words, progress=False)
    assert df.loc[0, "summary"] == "invasive ductal carcinoma" and df.loc[0, "status"] == "truncated"


def test_missing_api_key_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("HISTOSYNTH_TEST_KEY")
    write_reports(tmp_path / "r.csv", 1)
    with FakeOpenAI() as server:
        cfg = cfg_for(server, tmp_path)
        with pytest.raises(Exception, match="HISTOSYNTH_TEST_KEY"):
            summarize_reports(cfg["path"], tmp_path / "s.tsv", cfg, words, progress=False)


KILLABLE = """
import sys
from histosynth.config import default_config
from histosynth.text.summarize import summarize_reports
cfg = default_config()["pathology_reports"]
cfg.update(path=sys.argv[1], backend="openai", cache_dir=sys.argv[2])
cfg["openai"].update(base_url=sys.argv[3], api_key_env="HISTOSYNTH_TEST_KEY", max_concurrency=1)
summarize_reports(cfg["path"], sys.argv[4], cfg, lambda s: len(s.split()) + 2, progress=False)
"""


def test_killed_run_resumes_without_asking_again(tmp_path):
    n, done = 12, 4
    write_reports(tmp_path / "r.csv", n)
    # the server answers four requests and holds the fifth, so the kill lands after exactly four
    # cached answers however slow the machine is (no race between the client and this test)
    with FakeOpenAI(hold_after=done) as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                KILLABLE,
                str(tmp_path / "r.csv"),
                str(tmp_path / "cache"),
                server.base_url,
                str(tmp_path / "s.tsv"),
            ],
            env=dict(os.environ),
            cwd=tmp_path,
        )
        deadline = time.monotonic() + 300  # a liveness bound for a loaded machine, not a timing assertion
        while (
            len(list((tmp_path / "cache").glob("*.json"))) < done
            and time.monotonic() < deadline
            and proc.poll() is None
        ):
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
        server.release()
        done_before = {p.stem for p in (tmp_path / "cache").glob("*.json")}
        assert len(done_before) == done, f"expected {done} cached answers before the kill, found {len(done_before)}"
        assert not (tmp_path / "s.tsv").exists()
        first_round = list(server.answered)
    # the rerun asks a fresh server: a request the killed client left in flight cannot land in its record
    with FakeOpenAI() as server:
        cfg = cfg_for(server, tmp_path)
        df = summarize_reports(cfg["path"], tmp_path / "s.tsv", cfg, words, progress=False)
        assert len(server.requests) == n - len(done_before)
        assert not set(server.requests) & set(first_round[: len(done_before)])
        assert (df["status"] == "cached").sum() == len(done_before) and len(df) == n


def test_report_reading_errors(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("case_id,text\nA,one\nA,two\n")
    with pytest.raises(InputError, match=r"duplicate ids \['A'\]"):
        read_reports(f, "case_id", "text")
    f.write_text("id,body\nA,one\n")
    with pytest.raises(InputError, match="lacks column"):
        read_reports(f, "case_id", "text")
    f.write_bytes(b"case_id,text\nA,caf\xe9 carcinoma\n,orphan\n")
    with pytest.raises(InputError, match="rows without 'case_id'"):
        read_reports(f, "case_id", "text")
    f.write_bytes(b"case_id,text\nA,caf\xe9 carcinoma\nB,\n")
    reps = read_reports(f, "case_id", "text")
    assert reps[0].text == "caf\ufffd carcinoma" and reps[1].text == ""
    d = tmp_path / "txt"
    d.mkdir()
    (d / "P1.txt").write_bytes(b"Invasive ductal carcinoma \xff")
    assert read_reports(d, "case_id", "text")[0].case_id == "P1"


def test_extractive_summaries_tsv_counts_empty_reports(tmp_path, tokenizer):
    f = tmp_path / "r.csv"
    f.write_text("case_id,text\nA,Invasive ductal carcinoma grade 2\nB,\n")
    cfg = default_config()["pathology_reports"]
    df = summarize_reports(f, tmp_path / "s.tsv", cfg, token_counter(tokenizer), progress=False)
    assert df.set_index("case_id")["status"].to_dict() == {"A": "extracted", "B": "empty"}
    assert pd.read_csv(tmp_path / "s.tsv", sep="\t").shape == (2, 5)


def test_unreachable_llm_server_names_base_url(tmp_path, monkeypatch):
    import pandas as pd

    from histosynth.config import default_config
    from histosynth.text.summarize import summarize_reports

    with socket.socket() as s:  # a port nobody listens on: bound, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    pd.DataFrame({"case_id": ["C1", "C2"], "text": ["carcinoma", "adenoma"]}).to_csv(tmp_path / "r.csv", index=False)
    cfg = default_config()["pathology_reports"]
    cfg.update(path=str(tmp_path / "r.csv"), backend="openai", cache_dir=str(tmp_path / "cache"))
    cfg["openai"].update(base_url=url, api_key_env="HISTOSYNTH_TEST_KEY", max_retries=0, timeout_s=10)
    monkeypatch.setenv("HISTOSYNTH_TEST_KEY", "sk-secret")
    with pytest.raises(ResourceError, match=rf"cannot connect to pathology_reports\.openai\.base_url = {url}") as info:
        summarize_reports(cfg["path"], tmp_path / "s.tsv", cfg, lambda t: len(t.split()), progress=False)
    assert "sk-secret" not in str(info.value)
    assert not (tmp_path / "s.tsv").exists()
