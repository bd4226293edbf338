"""Runs saved by pytest-benchmark: a table with each run's verdicts, and a plot.

Reads pytest-benchmark's file storage (``--benchmark-autosave`` writes
``.benchmarks/<machine>/<NNNN>_<commit>_<date>.json``, or where
``--benchmark-storage=file://FOLDER`` says): a table per test with each
run's machine and verdicts, and a plot with one line per series (a test on
one machine with one set of settings, as the verdicts compare them), the
runs at integer positions labelled with their date and commit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic
from pplgate.verdicts import BASELINE_MIN_RUNS, DEFAULT_THRESHOLD, Saved, Timing, Verdict, drift, throughput_verdict, timing_of


@dataclass(frozen=True)
class SavedRun:
    name: str  # the file's number, 0001, as --benchmark-compare=0001 names it
    datetime: str  # ISO, as pytest-benchmark writes it
    commit: str  # short id, "" when the run was not in a git checkout

    @property
    def label(self) -> str:
        when = self.datetime[:16].replace("T", " ")
        return f"{self.name} {when}\n{self.commit}" if self.commit else f"{self.name} {when}"


@dataclass
class Series:
    """One test on one machine with one set of settings across saved runs, as the verdicts compare them.

    ``runs`` index into the history's run list; tokens/s is the median
    round's, as the verdicts and the table give it.
    """

    runs: list[int] = field(default_factory=list)
    tokens_per_second: list[float] = field(default_factory=list)
    tokens_per_second_std: list[float] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # each run's verdict: "slower", "under load", ...

    @property
    def perplexity_change_percent(self) -> list[float]:
        """Each run's perplexity against this series' first, in percent: 0.01% is visible at any magnitude."""
        first = self.perplexity[0]
        return [100.0 * (p / first - 1.0) if first else float("nan") for p in self.perplexity]


@dataclass(frozen=True)
class History:
    runs: list[SavedRun]
    series: dict[str, Series]  # by label: the test id (tiny-cpu-fp32), with the machine and settings where a test has several


def _commit(info: dict) -> str:
    """abcd1234, abcd1234+dirty, or pytest-benchmark's word for a run outside git (unversioned)."""
    commit = str(info.get("id") or "")
    if all(c in "0123456789abcdef" for c in commit):
        commit = commit[:8]
    return commit + ("+dirty" if info.get("dirty") else "")


def timings_of_run(name: str, data: dict) -> list[Timing]:
    """pplgate's throughput benchmarks in one saved run (pytest-benchmark's JSON), as Timings."""
    node = str((data.get("machine_info") or {}).get("node", ""))
    commit = _commit(data.get("commit_info") or {})
    found = (timing_of(b, name, data.get("datetime", ""), commit, node) for b in data.get("benchmarks", []))
    return [t for t in found if t is not None]


def storage_folder(storage: str | Path) -> Path:
    """pytest-benchmark's storage as a folder: a path, or its own spelling ``file://PATH`` (``file://./.benchmarks``)."""
    text = str(storage)
    if text.startswith("file://"):
        return Path(text[len("file://"):] or ".")
    if "://" in text:
        raise PplgateError(f"--storage {text}: only pytest-benchmark's file storage (a folder, or file://FOLDER) can be read; "
                           "pass the folder its runs were saved in.")
    return Path(text)


def saved_runs(storage: Path) -> list[tuple[str, dict]]:
    """(name, data) of every run saved under ``storage``, oldest first."""
    files = sorted(storage_folder(storage).rglob("*.json"))
    if not files:
        raise PplgateError(f"no saved benchmark runs under {storage}: run the gate with --benchmark-autosave first, or pass --storage with pytest-benchmark's folder.")
    saved = []
    for path in files:
        try:
            saved.append((path.stem.split("_")[0], json.loads(path.read_text())))
        except json.JSONDecodeError as err:
            raise PplgateError(f"saved run {path} is not valid JSON ({err.msg}): remove it or restore it.") from err
    return sorted(saved, key=lambda r: r[1].get("datetime", ""))


@dataclass(frozen=True)
class Row:
    """One test in one saved run, judged against the runs saved before it."""

    index: int  # the saved run's position in the history, oldest first
    timing: Timing
    verdict: Verdict
    drift: Verdict | None


def _judged(storage: Path, threshold: float) -> tuple[list[SavedRun], dict[str, list[Row]]]:
    """The saved runs holding pplgate's timings, and per test every run with its verdicts, as the gate would have given them then."""
    earlier = Saved()
    runs: list[SavedRun] = []
    rows: dict[str, list[Row]] = {}
    for name, data in saved_runs(storage):
        timings = timings_of_run(name, data)
        if not timings:
            continue  # not a run of pplgate's throughput tests
        runs.append(SavedRun(name, data.get("datetime", ""), _commit(data.get("commit_info") or {})))
        for t in timings:
            rows.setdefault(t.test, []).append(Row(len(runs) - 1, t, throughput_verdict(t, earlier, threshold), drift(t, earlier)))
        for t in timings:
            earlier.add(t)
    if not rows:
        raise PplgateError(f"the runs under {storage} hold no pplgate throughput benchmarks with their timings: save runs of tests/test_throughput.py.")
    return runs, rows


def judged_rows(storage: Path, threshold: float = DEFAULT_THRESHOLD) -> dict[str, list[Row]]:
    """Per test, every saved run with its verdicts, as the gate would have given them then."""
    return _judged(storage, threshold)[1]


def _verdict_cell(v: Verdict) -> str:
    if v.kind == "baseline":
        return f"baseline ({v.baseline_runs} of {BASELINE_MIN_RUNS})"
    return v.kind if v.change is None else f"{v.kind} ({v.change * 100:+.0f}% ± {v.uncertainty * 100:.0f}%)"


def _cells(row: Row) -> list[str]:
    t, v = row.timing, row.verdict
    verdict = _verdict_cell(v)
    if row.drift is not None:
        verdict += f"; perplexity {row.drift.change:+.2g}"
    return [t.run, t.datetime[:16].replace("T", " "), t.node or "-", t.commit or "-", f"{t.tokens_per_second:,.0f} ± {t.tokens_per_second * t.spread:,.0f}",
            f"{t.extra.get('perplexity', float('nan')):.10g}", verdict]


HEADER = ["run", "date", "machine", "commit", "tokens/s", "perplexity", "verdict"]


def render_table(rows: dict[str, list[Row]]) -> str:
    out = []
    for test, runs in rows.items():
        table = [HEADER] + [_cells(r) for r in runs]
        widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
        out.append(test)
        out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_markdown(rows: dict[str, list[Row]], plot: str | None = None, plot_note: str | None = None) -> str:
    """The tables as markdown; ``plot``: a link to the figure that works from where the markdown is read, or ``plot_note``: where it went."""
    out = ["## pplgate throughput history", ""]
    for test, runs in rows.items():
        out += [f"### {test}", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in runs]
        newest = runs[-1]
        out += ["", f"Newest: {newest.verdict.sentence}" + (f"  \n{newest.drift.sentence}" if newest.drift else ""), ""]
    if plot:
        out += [f"![perplexity and tokens/s per saved run]({plot})", ""]
    elif plot_note:
        out += [plot_note, ""]
    return "\n".join(out)


STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def plot_reference(markdown: Path, plot: Path | None) -> tuple[str | None, str | None]:
    """(link, None) to the plot from the markdown's folder, or (None, a sentence saying where it went) where no link can work.

    GitHub shows a job's step summary on its own page, where no file of the
    runner can be linked: there the sentence says where the PNG was written.
    """
    if plot is None:
        return None, None
    if os.environ.get(STEP_SUMMARY_ENV) and Path(os.environ[STEP_SUMMARY_ENV]).resolve() == Path(markdown).resolve():
        return None, (f"The plot was written to {Path(plot).resolve()} on the runner; a step summary cannot show a runner's file: "
                      "upload it as an artifact to see it.")
    return os.path.relpath(Path(plot).resolve(), Path(markdown).resolve().parent).replace(os.sep, "/"), None


def _series_labels(rows: dict[str, list[Row]]) -> dict[tuple, str]:
    """A label per (test, machine, settings): the test id, with the machine and the settings that differ where a test has several."""
    labels = {}
    for test, runs in rows.items():
        keys = {(r.timing.node, json.dumps(r.timing.settings, sort_keys=True)): r.timing for r in runs}
        nodes = {node for node, _ in keys}
        for (node, settings), t in keys.items():
            differ = [k for k in t.settings if len({json.dumps(o.settings[k], sort_keys=True) for o in keys.values()}) > 1]
            parts = ([node] if len(nodes) > 1 else []) + [f"{k}={t.settings[k]}" for k in differ]
            labels[(test, node, settings)] = f"{test} ({', '.join(parts)})" if parts else test
    return labels


def read_history(storage: Path, threshold: float = DEFAULT_THRESHOLD) -> History:
    runs, rows = _judged(storage, threshold)
    labels = _series_labels(rows)
    series: dict[str, Series] = {}
    for test, test_rows in rows.items():
        for r in test_rows:
            t = r.timing
            s = series.setdefault(labels[(test, t.node, json.dumps(t.settings, sort_keys=True))], Series())
            s.runs.append(r.index)
            s.tokens_per_second.append(t.tokens_per_second)
            s.tokens_per_second_std.append(t.tokens_per_second * t.spread)
            s.perplexity.append(float(t.extra.get("perplexity", float("nan"))))
            s.kinds.append(r.verdict.kind)
    return History(runs, series)


# How each verdict is marked on the tokens/s line.
MARKS = {"slower": ("v", "red"), "faster": ("^", "green")}


def draw_history(history: History, title: str):
    """The figure: per series, the median tokens/s with its spread above, perplexity change in percent below.

    Runs taken under load are crosses off the line (never judged, never a
    baseline); slower and faster verdicts are red and green triangles.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on CI nodes; chosen here, never at import
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(history.runs) + 4), 8), sharex=True)
    for name, s in history.series.items():
        judged = [i for i, kind in enumerate(s.kinds) if kind != "under load"]
        loaded = [i for i, kind in enumerate(s.kinds) if kind == "under load"]
        line = top.errorbar([s.runs[i] for i in judged], [s.tokens_per_second[i] for i in judged],
                            yerr=[s.tokens_per_second_std[i] for i in judged], marker="o", capsize=3, label=name)
        color = line[0].get_color()
        if loaded:
            top.scatter([s.runs[i] for i in loaded], [s.tokens_per_second[i] for i in loaded], marker="x", color=color, label=f"{name}: under load, not judged")
        for kind, (marker, mark_color) in MARKS.items():
            marked = [i for i, k in enumerate(s.kinds) if k == kind]
            if marked:
                top.scatter([s.runs[i] for i in marked], [s.tokens_per_second[i] for i in marked], marker=marker, s=120, color=mark_color,
                            zorder=3, label=f"{name}: {kind}")
        bottom.plot(s.runs, s.perplexity_change_percent, marker="o", color=color, label=f"{name} (first run: {s.perplexity[0]:.6g})")
    top.set_ylabel("tokens / s, median round (± stddev of rounds)")
    top.set_title(title)
    bottom.set_ylabel("perplexity change from the first run (%)")
    bottom.axhline(0.0, color="grey", linewidth=0.8)
    bottom.set_xlabel("saved run (date, commit)")
    bottom.set_xticks(range(len(history.runs)), [r.label for r in history.runs], fontsize="small")
    for ax in (top, bottom):
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def plot_history(storage: Path, output: Path, threshold: float = DEFAULT_THRESHOLD) -> Path:
    fig = draw_history(read_history(storage, threshold), f"pplgate history: {storage}")
    import matplotlib.pyplot as plt

    write_atomic(Path(output), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(output)
