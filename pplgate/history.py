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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic
from pplgate.redact import printable
from pplgate.timings import Saved, Timing, UnreadableRun, of_type, timing_of
from pplgate.verdicts import (
    BASELINE_MIN_RUNS,
    DEFAULT_THRESHOLD,
    ThroughputJudgment,
    Verdict,
    drift,
    throughput_verdict,
)


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
    kinds: list[Verdict] = field(default_factory=list)  # each run's verdict: slower, under load, ...

    @property
    def perplexity_change_percent(self) -> list[float]:
        """Each run's perplexity against this series' first, in percent: 0.01% is visible at any magnitude."""
        first = self.perplexity[0]
        return [100.0 * (p / first - 1.0) if first else float("nan") for p in self.perplexity]


@dataclass(frozen=True)
class History:
    runs: list[SavedRun]
    # By label: the test id (tiny-cpu-fp32), with the machine and settings where a test has several.
    series: dict[str, Series]
    set_aside: list[SetAside] = field(default_factory=list)  # runs that could not be read: named, never drawn


def _commit(info: dict) -> str:
    """abcd1234, abcd1234+dirty, or pytest-benchmark's word for a run outside git (unversioned)."""
    commit = str(info.get("id") or "")
    if all(c in "0123456789abcdef" for c in commit):
        commit = commit[:8]
    return commit + ("+dirty" if info.get("dirty") else "")


def timings_of_run(name: str, data: dict) -> list[Timing]:
    """pplgate's throughput benchmarks in one saved run (pytest-benchmark's JSON), as Timings; UnreadableRun if it is
    not such a run.
    """
    data = of_type(data, dict, "the file", optional=False)
    when = of_type(data.get("datetime"), str, "datetime") or ""
    node = str((of_type(data.get("machine_info"), dict, "machine_info") and data["machine_info"].get("node")) or "")
    commit = _commit(of_type(data.get("commit_info"), dict, "commit_info") or {})
    benchmarks = of_type(data.get("benchmarks"), list, "benchmarks") or []
    found = (timing_of(b, name, when, commit, node) for b in benchmarks)
    return [t for t in found if t is not None]


def storage_folder(storage: str | Path) -> Path:
    """pytest-benchmark's storage as a folder: a path, or its own spelling ``file://PATH`` (``file://./.benchmarks``)."""
    text = str(storage)
    if not text.strip() or text.strip() == "file://":
        raise PplgateError(
            f"--storage {text!r} names no folder: pass the folder pytest-benchmark saved its runs in "
            "(--benchmark-storage's, .benchmarks by default)."
        )
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if "://" in text:
        raise PplgateError(
            f"--storage {text}: only pytest-benchmark's file storage (a folder, or file://FOLDER) can be read; "
            "pass the folder its runs were saved in."
        )
    return Path(text)


@dataclass(frozen=True)
class SetAside:
    """A saved run that cannot be read: named, never judged, never a baseline."""

    path: Path
    reason: str

    def line(self) -> str:
        return f"set aside {self.path}: {self.reason}; not judged and not a baseline: remove it or restore it"


def load_run(path: Path) -> dict:
    """One saved run's JSON; UnreadableRun saying why it cannot be read."""
    try:
        return json.loads(path.read_bytes())
    except OSError as err:
        raise UnreadableRun(f"it cannot be read ({err.strerror or err})") from None
    except RecursionError:
        raise UnreadableRun("it is nested deeper than any run pytest-benchmark writes") from None
    except ValueError as err:  # not JSON, not UTF-8, or an integer of more digits than Python converts
        raise UnreadableRun(
            f"it is not valid JSON ({getattr(err, 'msg', None) or str(err).splitlines()[0][:80]})"
        ) from None


def saved_runs(storage: Path) -> tuple[list[tuple[str, dict, Path]], list[SetAside]]:
    """(name, data, path) of every run saved under ``storage``, oldest first, and the files that cannot be read."""
    files = sorted(storage_folder(storage).rglob("*.json"))
    if not files:
        raise PplgateError(
            f"no saved benchmark runs under {storage}: run the gate with --benchmark-autosave first, or pass "
            f"--storage with pytest-benchmark's folder."
        )
    saved, aside = [], []
    for path in files:
        try:
            saved.append((path.stem.split("_")[0], load_run(path), path))
        except UnreadableRun as err:
            aside.append(SetAside(path, str(err)))
    return sorted(saved, key=lambda r: saved_order(r[2])), aside


def saved_order(path: Path | str) -> tuple[int, str]:
    """Where a saved run stands in its storage: pytest-benchmark's run number (0001_...), the order it was saved in.

    Never its date: a node with a wrong clock would make its run "the newest".
    """
    number = Path(str(path)).name.split("_")[0]
    return (int(number) if number.isdigit() else 10**9, str(path))


@dataclass(frozen=True)
class Row:
    """One test in one saved run, judged against the runs saved before it."""

    index: int  # the saved run's position in the history, oldest first
    timing: Timing
    verdict: ThroughputJudgment
    drift: ThroughputJudgment | None


@dataclass(frozen=True)
class Judged:
    runs: list[SavedRun]
    rows: dict[str, list[Row]]  # per test, every run with its verdicts
    set_aside: list[SetAside]


def judged(storage: Path, threshold: float = DEFAULT_THRESHOLD) -> Judged:
    """The saved runs holding pplgate's timings, and per test every run with its verdicts, as the gate would have given
    them then.
    """
    earlier = Saved()
    runs: list[SavedRun] = []
    rows: dict[str, list[Row]] = {}
    saved, aside = saved_runs(storage)
    for name, data, path in saved:
        try:
            timings = timings_of_run(name, data)
        except UnreadableRun as err:
            aside.append(SetAside(path, str(err)))
            continue
        if not timings:
            continue  # not a run of pplgate's throughput tests
        runs.append(SavedRun(name, data.get("datetime") or "", _commit(data.get("commit_info") or {})))
        for t in timings:
            rows.setdefault(t.test, []).append(
                Row(len(runs) - 1, t, throughput_verdict(t, earlier, threshold), drift(t, earlier))
            )
        for t in timings:
            earlier.add(t)
    if not rows:
        why = f" ({len(aside)} set aside: {aside[0].path}: {aside[0].reason})" if aside else ""
        raise PplgateError(
            f"the runs under {storage} hold no pplgate throughput benchmarks with their timings{why}: save runs of "
            f"tests/test_throughput.py."
        )
    return Judged(runs, rows, aside)


def judged_rows(storage: Path, threshold: float = DEFAULT_THRESHOLD) -> dict[str, list[Row]]:
    """Per test, every saved run with its verdicts, as the gate would have given them then."""
    return judged(storage, threshold).rows


def _verdict_cell(v: ThroughputJudgment) -> str:
    if v.verdict is Verdict.BASELINE:
        return f"baseline ({v.baseline_runs} of {BASELINE_MIN_RUNS})"
    return (
        str(v.verdict)
        if v.change is None or v.uncertainty is None
        else f"{v.verdict} ({v.change * 100:+.0f}% ± {v.uncertainty * 100:.0f}%)"
    )


def _cells(row: Row) -> list[str]:
    t, v = row.timing, row.verdict
    verdict = _verdict_cell(v)
    if row.drift is not None:
        verdict += f"; perplexity {row.drift.change:+.2g}"
    return [
        t.run,
        t.datetime[:16].replace("T", " "),
        t.node or "-",
        t.commit or "-",
        f"{t.tokens_per_second:,.0f} ± {t.tokens_per_second * t.spread:,.0f}",
        f"{_perplexity(t):.10g}",
        verdict,
    ]


def _perplexity(t: Timing) -> float:
    value = t.extra.get("perplexity")
    return float("nan") if value is None else float(value)


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


def render_markdown(
    rows: dict[str, list[Row]],
    plot: str | None = None,
    plot_note: str | None = None,
    set_aside: Sequence[SetAside] = (),
) -> str:
    """The tables as markdown; ``plot``: a link to the figure that works from where the markdown is read, or
    ``plot_note``: where it went.
    """
    out = ["## pplgate throughput history", ""]
    for test, runs in rows.items():
        out += [f"### {test}", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in runs]
        newest = runs[-1]
        out += ["", f"Newest: {newest.verdict.sentence}" + (f"  \n{newest.drift.sentence}" if newest.drift else ""), ""]
    out += [f"- {printable(a.line())}" for a in set_aside] + ([""] if set_aside else [])
    if plot:
        out += [f"![perplexity and tokens/s per saved run]({plot})", ""]
    elif plot_note:
        out += [plot_note, ""]
    return "\n".join(out)


STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def plot_reference(markdown: Path, plot: Path | None) -> tuple[str | None, str | None]:
    """(link, None) to the plot from the markdown's folder, or (None, a sentence saying where it went) where no link
    can work.

    GitHub shows a job's step summary on its own page, where no file of the
    runner can be linked: there the sentence says where the PNG was written.
    """
    if plot is None:
        return None, None
    if os.environ.get(STEP_SUMMARY_ENV) and Path(os.environ[STEP_SUMMARY_ENV]).resolve() == Path(markdown).resolve():
        return None, (
            f"The plot was written to {Path(plot).resolve()} on the runner; a step summary cannot show a runner's "
            f"file: "
            "upload it as an artifact to see it."
        )
    return os.path.relpath(Path(plot).resolve(), Path(markdown).resolve().parent).replace(os.sep, "/"), None


def _series_labels(rows: dict[str, list[Row]]) -> dict[tuple, str]:
    """A label per (test, machine, settings): the test id, with the machine and the settings that differ where a test
    has several.
    """
    labels = {}
    for test, runs in rows.items():
        keys = {(r.timing.node, json.dumps(r.timing.settings, sort_keys=True)): r.timing for r in runs}
        nodes = {node for node, _ in keys}
        for (node, settings), t in keys.items():
            differ = [
                k for k in t.settings if len({json.dumps(o.settings[k], sort_keys=True) for o in keys.values()}) > 1
            ]
            parts = ([node] if len(nodes) > 1 else []) + [f"{k}={t.settings[k]}" for k in differ]
            labels[(test, node, settings)] = f"{test} ({', '.join(parts)})" if parts else test
    return labels


def read_history(storage: Path, threshold: float = DEFAULT_THRESHOLD) -> History:
    found = judged(storage, threshold)
    runs, rows = found.runs, found.rows
    labels = _series_labels(rows)
    series: dict[str, Series] = {}
    for test, test_rows in rows.items():
        for r in test_rows:
            t = r.timing
            s = series.setdefault(labels[(test, t.node, json.dumps(t.settings, sort_keys=True))], Series())
            s.runs.append(r.index)
            s.tokens_per_second.append(t.tokens_per_second)
            s.tokens_per_second_std.append(t.tokens_per_second * t.spread)
            s.perplexity.append(_perplexity(t))
            s.kinds.append(r.verdict.verdict)
    return History(runs, series, found.set_aside)


# How each verdict is marked on the tokens/s line.
MARKS = {Verdict.SLOWER: ("v", "red"), Verdict.FASTER: ("^", "green")}


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
        judged = [i for i, kind in enumerate(s.kinds) if kind is not Verdict.UNDER_LOAD]
        loaded = [i for i, kind in enumerate(s.kinds) if kind is Verdict.UNDER_LOAD]
        line = top.errorbar(
            [s.runs[i] for i in judged],
            [s.tokens_per_second[i] for i in judged],
            yerr=[s.tokens_per_second_std[i] for i in judged],
            marker="o",
            capsize=3,
            label=name,
        )
        color = line[0].get_color()
        if loaded:
            top.scatter(
                [s.runs[i] for i in loaded],
                [s.tokens_per_second[i] for i in loaded],
                marker="x",
                color=color,
                label=f"{name}: under load, not judged",
            )
        for kind, (marker, mark_color) in MARKS.items():
            marked = [i for i, k in enumerate(s.kinds) if k == kind]
            if marked:
                top.scatter(
                    [s.runs[i] for i in marked],
                    [s.tokens_per_second[i] for i in marked],
                    marker=marker,
                    s=120,
                    color=mark_color,
                    zorder=3,
                    label=f"{name}: {kind}",
                )
        bottom.plot(
            s.runs,
            s.perplexity_change_percent,
            marker="o",
            color=color,
            label=f"{name} (first run: {s.perplexity[0]:.6g})",
        )
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


def plot_history(storage: Path, output: Path, threshold: float = DEFAULT_THRESHOLD) -> list[SetAside]:
    """Draws the history of ``storage`` into ``output``; returns the saved runs set aside, which the plot leaves out."""
    history = read_history(storage, threshold)
    fig = draw_history(history, f"pplgate history: {storage}")
    import matplotlib.pyplot as plt

    write_atomic(Path(output), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return history.set_aside
