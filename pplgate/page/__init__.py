"""The history as one self-contained HTML page: the morning table, the regressions, two plots a series.

``pplgate history --html report.html`` writes it from any store.  Everything
is inlined (the data as JSON, uPlot and the page's own script and style), so
it opens from a CI artifact or a file share with no network.

What the page shows is decided here, in Python, from the verdicts the gate
gives (``pplgate.history``): the page's script draws and filters, it judges
nothing.  uPlot (MIT, vendored beside this file: ``uPlot.iife.min.js``, see
``VENDORED.md``) draws the plots: 51 kB, and 150 plots of 10,000 runs in
a fraction of a second, where plotly's bundle alone is 4.6 MB.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pplgate.fileio import write_atomic
from pplgate.history import AccuracyRow, Judged, Row
from pplgate.verdicts import BASELINE_MIN_RUNS, Verdict

HERE = Path(__file__).resolve().parent
ASSETS = ("uPlot.min.css", "page.css", "uPlot.iife.min.js", "page.js")

# How much a row needs a look, first to last: what failed or moved, what cannot be judged yet, what is fine.
LOOK = {"look": 0, "wait": 1, "fine": 2}
ACCURACY_LOOK = {
    "FAIL": "look",
    "error": "look",
    "crashed": "look",
    "not run": "look",
    "pass": "fine",
    "updated": "fine",
}
THROUGHPUT_LOOK = {
    Verdict.SLOWER: "look",
    Verdict.FASTER: "look",
    Verdict.WITHIN_NOISE: "fine",
    Verdict.BASELINE: "wait",
    Verdict.FIRST_RUN: "wait",
    Verdict.UNDER_LOAD: "wait",
}
# What may change under a series from one night to the next, and is named in the morning table.
CHANGES = ("onnxruntime", "onnxruntime_distribution", "driver", "provider_options", "model_sha256")
# A point's fields that hold a number in the page's table of texts.
TEXTS = ("cell", "runtime", "settings", "drift", "moved", "reason")


def _epoch(when: str) -> float | None:
    """An ISO date as seconds since 1970 (UTC where it names no zone); None where it is not one."""
    try:
        moment = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def _split_test(test: str) -> tuple[str, str, str]:
    """tiny-cpu-fp32 -> (tiny, cpu, fp32); gpt2-small-gcu:1-fp16 -> (gpt2-small, gcu:1, fp16)."""
    parts = test.rsplit("-", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else (test, "", "")


def _shown(value) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _changed(before: dict, now: dict, keys, commit: tuple[str, str] | None = None) -> list[str]:
    """What differs from one night to the next: each of ``keys``, and the commit where given."""
    out = [f"{k} {_shown(before.get(k))} → {_shown(now.get(k))}" for k in keys if before.get(k) != now.get(k)]
    if commit is not None and commit[0] != commit[1]:
        out.append(f"commit {commit[0] or '-'} → {commit[1] or '-'}")
    return out


class Texts:
    """Each distinct text once: the runtime, settings and verdict texts repeat night after night, and a page of
    10,000 runs would be most of its size in them."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int | None:
        if text is None:
            return None
        if text not in self.index:
            self.index[text] = len(self.texts)
            self.texts.append(text)
        return self.index[text]


def _throughput_point(row: Row, text: Texts) -> dict:
    t, v = row.timing, row.verdict
    return {
        "t": _epoch(t.datetime),
        "run": t.run,
        "date": t.datetime[:16].replace("T", " "),
        "commit": t.commit,
        "tps": t.tokens_per_second,
        "spread": t.tokens_per_second * t.spread,
        "load": t.under_load,
        "verdict": str(v.verdict),
        "cell": text(_verdict_cell(row)),
        "runtime": text(", ".join(f"{k} {_shown(val)}" for k, val in t.runtime.items())),
        "settings": text(", ".join(f"{k} {_shown(val)}" for k, val in t.settings.items())),
        "perplexity": t.extra.get("perplexity"),
        "drift": text(row.drift.sentence if row.drift else None),
    }


def _verdict_cell(row: Row) -> str:
    v = row.verdict
    if v.verdict is Verdict.BASELINE:
        return f"baseline: {v.baseline_runs} of {BASELINE_MIN_RUNS}"
    if v.change is None or v.uncertainty is None:
        return str(v.verdict)
    cell = f"{v.verdict} ({v.change * 100:+.1f}% ± {v.uncertainty * 100:.1f}%)"
    return cell + (f" since run {v.since}" if v.since else "")


def _accuracy_point(row: AccuracyRow, text: Texts) -> dict:
    r = row.record
    ppl, expected, tol = r.get("perplexity"), r.get("expected"), r.get("rel_tol")
    numeric = isinstance(ppl, (int, float)) and not isinstance(ppl, bool)
    pct = None
    if isinstance(ppl, (int, float)) and isinstance(expected, (int, float)) and numeric and expected:
        pct = 100.0 * (ppl / expected - 1.0)
    return {
        "t": _epoch(row.run.datetime),
        "run": row.run.name,
        "date": row.run.datetime[:16].replace("T", " "),
        "commit": row.run.commit,
        "perplexity": ppl if numeric else None,
        "stderr": r.get("perplexity_stderr"),
        "expected": expected,
        "pct": pct,
        "tol_pct": 100.0 * tol if isinstance(tol, (int, float)) and not isinstance(tol, bool) else None,
        "verdict": str(r.get("verdict")),
        "reason": text(r.get("reason")),
        "moved": text(row.moved),
        "runtime": text(
            ", ".join(f"{k} {_shown(r.get(k))}" for k in ("onnxruntime", "onnxruntime_distribution", "driver"))
        ),
        "settings": text(f"provider_options {_shown(r.get('provider_options'))}"),
    }


def page_data(judged: Judged, accuracy: dict[str, list[AccuracyRow]], store: str, threshold: float) -> dict:
    """Everything the page shows, as JSON-ready values: the series (a test on a machine) with their nights, the
    morning table's rows (those needing a look first), the regressions (newest first), the runs set aside."""
    series: dict[str, dict] = {}
    text = Texts()

    def one(test: str, machine: str) -> dict:
        key = f"{test} on {machine}" if machine else test
        if key not in series:
            case, device, precision = _split_test(test)
            series[key] = {
                "id": key,
                "test": test,
                "case": case,
                "device": device,
                "precision": precision,
                "machine": machine,
                "throughput": [],
                "accuracy": [],
            }
        return series[key]

    by_series: dict[str, list[Row]] = {}
    for test, rows in judged.rows.items():
        for row in rows:
            s = one(test, row.timing.node)
            s["throughput"].append(_throughput_point(row, text))
            by_series.setdefault(s["id"], []).append(row)
    accuracy_rows: dict[str, list[AccuracyRow]] = {}
    for key, results in accuracy.items():
        for result in results:
            test = result.record["id"]
            # accuracy_history names a series "test on machine", the machine as the store keeps it.
            s = one(test, key[len(test) + 4 :] if key.startswith(f"{test} on ") else "")
            s["accuracy"].append(_accuracy_point(result, text))
            accuracy_rows.setdefault(s["id"], []).append(result)
    morning = [
        _morning(s, by_series.get(s["id"], []), accuracy_rows.get(s["id"], []), text.texts) for s in series.values()
    ]
    morning.sort(key=lambda m: (LOOK[m["look"]], m["series"]))
    regressions = _throughput_changes(by_series, series) + _accuracy_moves(accuracy_rows, series)
    regressions.sort(key=lambda r: (r["t"] or 0.0, r["run"]), reverse=True)
    return {
        "store": store,
        "threshold": threshold,
        "made": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # Grouped as a fleet is read: by case, then device, precision and machine.
        "series": sorted(series.values(), key=lambda s: (s["case"], s["device"], s["precision"], s["machine"])),
        "morning": morning,
        "regressions": regressions,
        "set_aside": [{"where": a.where, "reason": a.reason} for a in judged.set_aside],
        "baseline_min": BASELINE_MIN_RUNS,
        "texts": text.texts,  # what the points' cell, runtime, settings, drift, moved and reason number
    }


def _morning(s: dict, throughput: list[Row], accuracy: list[AccuracyRow], texts: list[str]) -> dict:
    """The series' last night: both verdicts (their texts written out), and what changed since the night before."""

    def written(point: dict) -> dict:
        return {k: texts[v] if k in TEXTS and v is not None else v for k, v in point.items()}

    out: dict = {"series": s["id"], "case": s["case"], "device": s["device"], "precision": s["precision"]}
    out["machine"] = s["machine"]
    looks = []
    changed: list[str] = []
    if accuracy:
        last = written(s["accuracy"][-1])
        out["accuracy"] = last
        looks.append("look" if last["moved"] else ACCURACY_LOOK.get(last["verdict"], "wait"))
        if len(accuracy) > 1:
            before, now = accuracy[-2], accuracy[-1]
            changed += _changed(before.record, now.record, CHANGES, (before.run.commit, now.run.commit))
    if throughput:
        last = written(s["throughput"][-1])
        out["throughput"] = last
        looks.append(THROUGHPUT_LOOK.get(throughput[-1].verdict.verdict, "wait"))
        if len(throughput) > 1 and not changed:
            before_t, now_t = throughput[-2].timing, throughput[-1].timing
            changed += _changed(before_t.extra, now_t.extra, CHANGES, (before_t.commit, now_t.commit))
    out["changed"] = changed
    out["look"] = min(looks, key=LOOK.__getitem__) if looks else "wait"
    return out


def _throughput_changes(by_series: dict[str, list[Row]], series: dict[str, dict]) -> list[dict]:
    """Each slower or faster change once: its first night, the night before it, how many nights it has held."""
    out = []
    for key, rows in by_series.items():
        held: dict[str, dict] = {}  # the first run of a change -> its entry
        for i, row in enumerate(rows):
            v = row.verdict
            if v.verdict not in (Verdict.SLOWER, Verdict.FASTER):
                continue
            if v.since in held:
                held[v.since]["nights"] += 1
                held[v.since]["last"] = row.timing.run
                continue
            before = rows[i - 1].timing if i else None
            t = row.timing
            open_ = held[t.run] = {
                "kind": str(v.verdict),
                "series": key,
                "run": t.run,
                "t": _epoch(t.datetime),
                "date": t.datetime[:16].replace("T", " "),
                "before": before.run if before else None,
                "before_date": before.datetime[:16].replace("T", " ") if before else None,
                "commits": f"{before.commit or '-'}..{t.commit or '-'}" if before else t.commit,
                "changed": _changed(before.extra, t.extra, CHANGES) if before else [],
                "what": f"tokens/s {v.change * 100:+.1f}% ± {(v.uncertainty or 0) * 100:.1f}%"
                if v.change is not None
                else "",
                "nights": 1,
                "last": t.run,
            }
            if before is not None and before.commit == t.commit:
                open_["commits"] = f"{t.commit or '-'} (the same)"
            out.append(open_)
    return out


def _accuracy_moves(accuracy_rows: dict[str, list[AccuracyRow]], series: dict[str, dict]) -> list[dict]:
    """Each perplexity move on the same model and blocks once: its first night, the night before, how long."""
    out = []
    for key, rows in accuracy_rows.items():
        held: dict[str, dict] = {}  # the first run of a move -> its entry
        last_numeric: AccuracyRow | None = None
        for row in rows:
            if row.moved is None:
                if isinstance(row.record.get("perplexity"), (int, float)):
                    last_numeric = row
                continue
            since = row.moved.split(" since run ")[-1].split(":")[0]
            if since in held:
                held[since]["nights"] += 1
                held[since]["last"] = row.run.name
                last_numeric = row
                continue
            before = last_numeric
            open_ = held[row.run.name] = {
                "kind": "perplexity moved",
                "series": key,
                "run": row.run.name,
                "t": _epoch(row.run.datetime),
                "date": row.run.datetime[:16].replace("T", " "),
                "before": before.run.name if before else None,
                "before_date": before.run.datetime[:16].replace("T", " ") if before else None,
                "commits": f"{before.run.commit or '-'}..{row.run.commit or '-'}" if before else row.run.commit,
                "changed": _changed(before.record, row.record, CHANGES) if before else [],
                "what": f"perplexity {row.moved}",
                "nights": 1,
                "last": row.run.name,
            }
            if before is not None and before.run.commit == row.run.commit:
                open_["commits"] = f"{row.run.commit or '-'} (the same)"
            out.append(open_)
            last_numeric = row
    return out


def render(data: dict) -> str:
    """The page: one HTML file, its script, style and data inlined."""
    assets = {name: (HERE / name).read_text(encoding="utf-8") for name in ASSETS}
    # "</" inside inlined JSON or script would end the script element early.
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>pplgate history: {_escape(data['store'])}</title>\n"
        f"<style>{assets['uPlot.min.css']}</style>\n<style>{assets['page.css']}</style>\n</head>\n<body>\n"
        f'<script id="pplgate-data" type="application/json">{payload}</script>\n'
        f"<script>{assets['uPlot.iife.min.js']}</script>\n<script>{assets['page.js']}</script>\n</body>\n</html>\n"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finite(data):
    """The data with every non-finite number as None: JSON has no NaN, and the page draws no such point."""
    if isinstance(data, float):
        return data if data == data and abs(data) != float("inf") else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    return data


def write_page(path: Path, judged: Judged, accuracy: dict[str, list[AccuracyRow]], store: str, threshold: float):
    """The page at ``path``, whole or not at all."""
    text = render(_finite(page_data(judged, accuracy, store, threshold)))
    return write_atomic(Path(path), lambda out: out.write(text.encode("utf-8")), fix="pass --html a writable path")
