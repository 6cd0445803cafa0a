"""histosynth.progress: the detailed bar stays in the log, the console gets one-line summaries."""

import io

from histosynth import progress


def test_console_gets_summaries_with_rate_eta_and_postfix(monkeypatch):
    console, log = io.StringIO(), io.StringIO()
    monkeypatch.setattr(progress, "SUMMARY_EVERY_S", 0.0)
    monkeypatch.setattr(progress, "_console", console)
    bar = progress.progress_bar(total=4, desc="train (lora)", unit="step", file=log, mininterval=0)
    for _ in range(4):
        bar.update(1)
        bar.set_postfix(loss=0.25)
    bar.close()
    lines = [line for line in console.getvalue().splitlines() if line]
    assert lines[-1].startswith("histosynth: train (lora): 4/4 step (100%)")
    assert "done in" in lines[-1] and "loss=0.25" in lines[-1] and sum("done in" in x for x in lines) == 1
    assert any("ETA" in x for x in lines[:-1])
    assert "histosynth:" not in log.getvalue()  # the bar itself went to the log stream


def test_no_console_no_summaries(monkeypatch):
    monkeypatch.setattr(progress, "_console", None)
    log = io.StringIO()
    for _ in progress.progress_bar(range(3), desc="x", file=log):
        pass
    assert "3/3" in log.getvalue()


def test_summary_line_without_total():
    line = progress.summary_line({"n": 7, "total": None, "unit": "batch", "elapsed": 2.0, "prefix": "embed"})
    assert line == "histosynth: embed: 7 batch, 3.50 batch/s"
