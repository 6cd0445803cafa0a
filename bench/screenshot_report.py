"""Screenshots of the HTML report in a real headless browser, at a laptop width and at 1920 px.

Issue 14 asks the report to be checked as people see it: verdicts first, tables that scroll inside
their box rather than the page, readable grid labels. This takes, with Chromium in headless mode,
one viewport-sized shot per width (what a reader sees first) and one shot as tall as the page (every
section, up to ``--max-height``), and prints whether the page is wider than the window: the page's
scroll width and the elements sticking out (tables inside a ``.scroll`` box may, by design).

    .venv/bin/python bench/screenshot_report.py [--report results/html_report/index.html] [--out results/screenshots]

Exits 0 with a "skipped: ..." line when no Chromium is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTHS = {"laptop": (1366, 768), "fhd": (1920, 1080)}
MAX_HEIGHT = 16000  # a taller window is cut here (Chromium's screenshot gets unreliable beyond ~16k px)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# a quiet, offline browser: no network, no first-run dialogs, a throw-away profile
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
)
# prints the page's and every too-wide element's scroll width into the DOM, read back with --dump-dom
PROBE = """<script>addEventListener('load',()=>{const W=document.documentElement.clientWidth,o=[];
for(const e of document.querySelectorAll('body *')){const r=e.getBoundingClientRect();
if(r.right>W+1&&!e.closest('.scroll')&&getComputedStyle(e).position!=='fixed')o.push(e.tagName+(e.className?'.'+e.className:'')+':'+Math.round(r.right));}
const p=document.createElement('pre');p.id='overflow-probe';
p.textContent='PROBE viewport='+W+' page='+document.documentElement.scrollWidth+' height='+document.documentElement.scrollHeight+' view_height='+innerHeight+' wide='+o.slice(0,12).join(' ');
document.body.appendChild(p);});</script>"""


def browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def chrome(exe: str, args: list[str], timeout: int = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout
        )


def overflow(exe: str, report: Path, width: int, height: int) -> str:
    """The probe's line for this window size: page width vs viewport, and the elements sticking out."""
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "probe.html"
        probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
        out = chrome(exe, [f"--window-size={width},{height}", "--dump-dom", probed.as_uri()]).stdout
    m = re.search(r'<pre id="overflow-probe">(PROBE [^<]*)</pre>', out)
    return m.group(1) if m else "PROBE failed (no output)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, default=Path("results/html_report/index.html"))
    ap.add_argument("--out", type=Path, default=Path("results/screenshots"))
    ap.add_argument("--max-height", type=int, default=MAX_HEIGHT)
    a = ap.parse_args(argv)
    exe = browser()
    if exe is None:
        print(f"skipped: no Chromium/Chrome on PATH (tried {', '.join(BROWSERS)}); e.g. apt-get install chromium")
        return 0
    if not a.report.is_file():
        sys.exit(f"{a.report}: no report; run `make demo` (or snakemake results/html_report/index.html) first")
    a.out.mkdir(parents=True, exist_ok=True)
    for name, (w, h) in WIDTHS.items():
        probe = overflow(exe, a.report, w, h)
        print(f"{name} {w} px: {probe}")
        m = re.search(r" height=(\d+) view_height=(\d+)", probe)
        # the window is taller than the page's viewport (headless keeps room for browser chrome): add the difference
        full = min(int(m.group(1)) + max(h - int(m.group(2)), 0) if m else a.max_height, a.max_height)
        for tag, height in (("view", h), ("full", full)):
            png = a.out / f"{name}-{w}-{tag}.png"
            res = chrome(
                exe, [f"--window-size={w},{height}", f"--screenshot={png.resolve()}", a.report.resolve().as_uri()]
            )
            if res.returncode or not png.is_file():
                sys.exit(f"{exe} failed for {png}: rc {res.returncode}\n{res.stderr[-2000:]}")
            print(f"{png}  ({w} x {height} px window, {os.path.getsize(png) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
