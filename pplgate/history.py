"""Runs saved by pytest-benchmark: a table with each run's verdicts, and a plot.

Reads pytest-benchmark's file storage (``--benchmark-autosave`` writes
``.benchmarks/<machine>/<NNNN>_<commit>_<date>.json``): one line per
benchmark, one point per saved run, the runs at integer positions labelled
with their date and commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic
from pplgate.verdicts import DEFAULT_THRESHOLD, Timing, Verdict, drift, throughput_verdict, timing_of


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
    """One benchmark across saved runs; ``runs`` index into the history's run list."""

    runs: list[int] = field(default_factory=list)
    tokens_per_second: list[float] = field(default_factory=list)
    tokens_per_second_std: list[float] = field(default_factory=list)
    perplexity: list[float] = field(default_factory=list)

    @property
    def perplexity_change_percent(self) -> list[float]:
        """Each run's perplexity against this series' first, in percent: 0.01% is visible at any magnitude."""
        first = self.perplexity[0]
        return [100.0 * (p / first - 1.0) for p in self.perplexity]


@dataclass(frozen=True)
class History:
    runs: list[SavedRun]
    series: dict[str, Series]  # by test id, e.g. tiny-cpu-fp32


def _test_id(name: str) -> str:
    """test_throughput[tiny-cpu-fp32] -> tiny-cpu-fp32."""
    return name.partition("[")[2].rstrip("]") or name


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


def saved_runs(storage: Path) -> list[tuple[str, dict]]:
    """(name, data) of every run saved under ``storage``, oldest first."""
    files = sorted(Path(storage).rglob("*.json"))
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

    timing: Timing
    verdict: Verdict
    drift: Verdict | None


def judged_rows(storage: Path, threshold: float = DEFAULT_THRESHOLD) -> dict[str, list[Row]]:
    """Per test, every saved run with its verdicts, as the gate would have given them then."""
    earlier: list[Timing] = []
    rows: dict[str, list[Row]] = {}
    for name, data in saved_runs(storage):
        timings = timings_of_run(name, data)
        for t in timings:
            rows.setdefault(t.test, []).append(Row(t, throughput_verdict(t, earlier, threshold), drift(t, earlier)))
        earlier += timings
    if not rows:
        raise PplgateError(f"the runs under {storage} hold no pplgate throughput benchmarks with their timings: save runs of tests/test_throughput.py.")
    return rows


def _cells(row: Row) -> list[str]:
    t, v = row.timing, row.verdict
    verdict = v.kind if v.change is None else f"{v.kind} ({v.change * 100:+.0f}% ± {v.uncertainty * 100:.0f}%)"
    if row.drift is not None:
        verdict += f"; perplexity {row.drift.change:+.2g}"
    return [t.run, t.datetime[:16].replace("T", " "), t.commit or "-", f"{t.tokens_per_second:,.0f} ± {t.tokens_per_second * t.spread:,.0f}",
            f"{t.extra.get('perplexity', float('nan')):.10g}", verdict]


HEADER = ["run", "date", "commit", "tokens/s", "perplexity", "verdict"]


def render_table(rows: dict[str, list[Row]]) -> str:
    out = []
    for test, runs in rows.items():
        table = [HEADER] + [_cells(r) for r in runs]
        widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
        out.append(test)
        out += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_markdown(rows: dict[str, list[Row]], plot_name: str | None = None) -> str:
    out = ["## pplgate throughput history", ""]
    for test, runs in rows.items():
        out += [f"### {test}", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in runs]
        newest = runs[-1]
        out += ["", f"Newest: {newest.verdict.sentence}" + (f"  \n{newest.drift.sentence}" if newest.drift else ""), ""]
    if plot_name:
        out += [f"![perplexity and tokens/s per saved run]({plot_name})", ""]
    return "\n".join(out)


def read_history(storage: Path) -> History:
    saved = saved_runs(storage)
    runs: list[SavedRun] = []
    series: dict[str, Series] = {}
    for name, data in saved:
        benches = [b for b in data.get("benchmarks", []) if {"tokens_per_second", "perplexity"} <= b.get("extra_info", {}).keys()]
        if not benches:
            continue  # not a run of pplgate's throughput tests
        runs.append(SavedRun(name, data.get("datetime", ""), _commit(data.get("commit_info") or {})))
        for bench in benches:
            extra, stats = bench["extra_info"], bench.get("stats", {})
            s = series.setdefault(_test_id(bench["name"]), Series())
            tps = extra["tokens_per_second"]
            s.runs.append(len(runs) - 1)
            s.tokens_per_second.append(tps)
            # tokens/s = tokens / mean seconds, so its spread is tps * (stddev / mean).
            mean, std = stats.get("mean"), stats.get("stddev")
            s.tokens_per_second_std.append(tps * std / mean if mean and std else 0.0)
            s.perplexity.append(extra["perplexity"])
    if not series:
        raise PplgateError(f"the runs under {storage} hold no pplgate throughput benchmarks: save runs of tests/test_throughput.py.")
    return History(runs, series)


def draw_history(history: History, title: str):
    """The figure: tokens/s with its spread above, perplexity change in percent below."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI nodes; chosen here, never at import
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(history.runs) + 4), 8), sharex=True)
    for name, s in history.series.items():
        top.errorbar(s.runs, s.tokens_per_second, yerr=s.tokens_per_second_std, marker="o", capsize=3, label=name)
        bottom.plot(s.runs, s.perplexity_change_percent, marker="o", label=f"{name} (first run: {s.perplexity[0]:.6g})")
    top.set_ylabel("tokens / s (± stddev of rounds)")
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


def plot_history(storage: Path, output: Path) -> Path:
    fig = draw_history(read_history(storage), f"pplgate history: {storage}")
    import matplotlib.pyplot as plt

    write_atomic(Path(output), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(output)
