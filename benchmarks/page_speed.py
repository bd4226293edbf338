"""How fast and how big the history page is for a fleet: 10,000 saved runs, opened in headless Chromium.

    .venv/bin/python benchmarks/page_speed.py
    .venv/bin/python benchmarks/page_speed.py --runs 10000 --plotly /tmp/plotly.min.js

Writes ``--runs`` runs (8 machines x 3 cases x 3 precisions, a throughput
benchmark and an accuracy result each) into a folder store, makes the page
with ``pplgate history --html``, and opens it in headless Chromium (Debian's
chromium and chromium-driver) five times: the page's own script time (data
parsed, tables and every plot drawn) and the load event, best and median.
With ``--plotly FILE`` (plotly.min.js, e.g. from plotly's wheel), the same
plots drawn by plotly, for the choice of library.  A measurement, never a
pass or fail.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pplgate.cli import main as pplgate

CASES = ("gpt2-small", "gpt2-medium", "tiny")
PRECISIONS = ("fp32", "fp16", "tf32")
NODES = [f"node-{i}" for i in range(8)]


def fleet(count: int) -> list[dict]:
    rng = random.Random(0)
    series = [(c, p, n) for c in CASES for p in PRECISIONS for n in NODES]
    start = dt.datetime(2026, 1, 1, 2)
    runs = []
    for i in range(count):
        case, precision, node = series[i % len(series)]
        test = f"{case}-gpu-{precision}"
        night = i // len(series)
        slow = 1.25 if night > 100 and node == "node-3" else 1.0
        seconds = 0.5 * slow * (1 + rng.gauss(0, 0.01))
        ppl = 29.372 if night < 120 or precision != "fp16" else 29.383
        extra = {
            "test": test, "tokens": 8192, "perplexity": ppl, "batch_size": 1, "intra_op_threads": 0,
            "provider_options": {}, "blocks": 8, "scoring": "graph", "onnxruntime": "1.9.1",
            "onnxruntime_distribution": "onnxruntime-gpu", "providers": ["CUDAExecutionProvider"], "driver": "550.1",
            "model_sha256": "m" * 64, "blocks_sha256": "b" * 64, "method": {"grouping": "vendor"},
            "conditions": {"under_load": rng.random() < 0.03, "others_cpu_share": 0.01},
        }  # fmt: skip
        record = {
            "id": test, "case": case, "device": "gpu", "precision": precision, "verdict": "pass", "perplexity": ppl,
            "perplexity_stderr": 0.1, "expected": 29.372, "rel_tol": 1e-3, "model_sha256": "m" * 64,
            "blocks_sha256": "b" * 64, "onnxruntime": "1.9.1", "onnxruntime_distribution": "onnxruntime-gpu",
            "driver": "550.1", "provider_options": {},
        }  # fmt: skip
        runs.append(
            {
                "machine_info": {"node": node},
                "commit_info": {"id": f"{night:040x}", "dirty": False},
                "datetime": (start + dt.timedelta(days=night)).isoformat(),
                "benchmarks": [
                    {
                        "name": f"test_throughput[{test}]",
                        "stats": {"median": seconds, "mean": seconds, "stddev": seconds * 0.01, "rounds": 3},
                        "extra_info": extra,
                    }
                ],
                "pplgate": {"run_id": f"{i:032x}", "accuracy": [record]},
            }
        )
    return runs


def plotly_page(page: Path, plotly: Path, out: Path) -> None:
    """The page's series drawn by plotly instead: two charts a series, as the page draws them."""
    text = page.read_text(encoding="utf-8")
    data = text.split('<script id="pplgate-data" type="application/json">', 1)[1].split("</script>", 1)[0]
    script = """
var started = performance.now();
var data = JSON.parse(document.getElementById('pplgate-data').textContent);
data.series.forEach(function (s) {
  [['throughput', 'tps'], ['accuracy', 'pct']].forEach(function (kind) {
    var div = document.createElement('div'); document.body.appendChild(div);
    var pts = s[kind[0]];
    var x = pts.map(function (p) { return p.t * 1000; }), y = pts.map(function (p) { return p[kind[1]]; });
    Plotly.newPlot(div, [{x: x, y: y, mode: 'lines+markers', type: 'scatter'}],
                   {height: 220, width: 1100, xaxis: {type: 'date'}});
  });
});
document.body.dataset.rendered = String(Math.round(performance.now() - started));
requestAnimationFrame(function () { document.body.dataset.drawn = String(Math.round(performance.now())); });
"""
    out.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        f'<script id="pplgate-data" type="application/json">{data}</script>'
        f"<script>{plotly.read_text(encoding='utf-8')}</script><script>{script}</script></body></html>",
        encoding="utf-8",
    )


def open_times(path: Path, times: int) -> tuple[list[float], list[float]]:
    """Seconds from navigation to the page's script done, and to the first frame after it drew every plot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000")
    for flag in flags:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    scripts, drawn = [], []
    try:
        for _ in range(times):
            browser.get(path.as_uri())
            WebDriverWait(browser, 60).until(lambda b: b.execute_script("return document.body.dataset.drawn"))
            scripts.append(float(browser.execute_script("return document.body.dataset.rendered")) / 1000)
            drawn.append(float(browser.execute_script("return document.body.dataset.drawn")) / 1000)
    finally:
        browser.quit()
    return scripts, drawn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="saved runs (default: %(default)s)")
    parser.add_argument("--plotly", type=Path, default=None, help="plotly.min.js, to draw the same plots with it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench" / "machine"
        folder.mkdir(parents=True)
        for i, run in enumerate(fleet(args.runs), 1):
            (folder / f"{i:05d}_{run['commit_info']['id'][:8]}_pplgate.json").write_text(json.dumps(run))
        page = Path(tmp) / "history.html"
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert pplgate(["history", "--storage", str(folder.parent), "--html", str(page), "--last", "1"]) == 0
        made = time.perf_counter() - started
        print(f"{args.runs:,} runs: 'pplgate history --html' {made:.1f} s, the page {page.stat().st_size / 1e6:.2f} MB")
        for label, path in (("uPlot (the page)", page), ("plotly", Path(tmp) / "plotly.html")):
            if label == "plotly":
                if args.plotly is None:
                    break
                plotly_page(page, args.plotly, path)
            scripts, drawn = open_times(path, 5)
            print(
                f"{label}: {path.stat().st_size / 1e6:.2f} MB; drawn {min(drawn):.2f} s after navigation (best of 5, "
                f"median {statistics.median(drawn):.2f}), of which its script (data, tables, every plot) "
                f"{min(scripts):.2f} s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
