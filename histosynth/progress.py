"""Progress of long steps: tqdm's detailed bar goes to the rule's log (a job's stderr is its log),
and every ``SUMMARY_EVERY_S`` seconds and at the end one summary line goes to the console —
done/total, rate, ETA and the bar's postfix (e.g. the training loss) — so a person watching
``snakemake`` sees that a long job moves without opening its log."""

from __future__ import annotations

import time

from tqdm import tqdm

SUMMARY_EVERY_S = 30.0
_console = None  # the job's real stderr, set by workflow_scripts/_common.run; None: no summaries


def set_console(stream) -> None:
    global _console
    _console = stream


class progress_bar(tqdm):  # noqa: N801  (used like tqdm itself)
    """``tqdm`` with periodic one-line console summaries (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        self._last_summary = time.monotonic()
        super().__init__(*args, **kwargs)

    def display(self, *args, **kwargs):
        shown = super().display(*args, **kwargs)
        if (
            _console is not None
            and not getattr(self, "_summarised_final", False)
            and time.monotonic() - self._last_summary >= SUMMARY_EVERY_S
        ):
            self._summarise()
        return shown

    def close(self):
        if _console is not None and not self.disable and not getattr(self, "_summarised_final", False):
            self._summarised_final = True
            self._summarise(final=True)
        super().close()

    def _summarise(self, final: bool = False) -> None:
        self._last_summary = time.monotonic()
        print(summary_line(self.format_dict, final), file=_console, flush=True)


def summary_line(d: dict, final: bool = False) -> str:
    """``histosynth: train (lora): 40/120 step (33%), 2.10 step/s, ETA 00:38, loss=0.123``."""
    n, total, unit = d["n"], d.get("total"), d.get("unit", "it")
    rate = d.get("rate") or (n / d["elapsed"] if d.get("elapsed") else None)
    done = f"{n}/{total} {unit} ({100 * n / total:.0f}%)" if total else f"{n} {unit}"
    parts = [done, f"{rate:.2f} {unit}/s" if rate else None]
    if final:
        parts.append(f"done in {tqdm.format_interval(d.get('elapsed', 0))}")
    elif total and rate:
        parts.append(f"ETA {tqdm.format_interval((total - n) / rate)}")
    if d.get("postfix"):
        parts.append(str(d["postfix"]).lstrip(", "))
    return f"histosynth: {d.get('prefix') or 'progress'}: " + ", ".join(p for p in parts if p)
