"""Runs saved by pytest-benchmark: a table with each run's verdicts, and a plot.

Reads pytest-benchmark's file storage (``--benchmark-autosave`` writes
``.benchmarks/<machine>/<NNNN>_<commit>_<date>.json``, or where
``--benchmark-storage=file://FOLDER`` says): a table per test with each
run's machine and verdicts, and a plot with one line per series (a test on
one machine with one set of settings, as the verdicts compare them), the
runs at integer positions labelled with their date and commit.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic
from pplgate.redact import printable
from pplgate.store import open_store
from pplgate.timings import Saved, Timing, UnreadableRun, of_type, run_number, timing_of
from pplgate.verdicts import (
    BASELINE_MIN_RUNS,
    DEFAULT_THRESHOLD,
    ThroughputJudgment,
    Verdict,
    replay,
)
from pplgate.window import Light, LightResult, pick_results, pick_runs


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
    perplexity: list[float] = field(default_factory=list)  # the timed blocks' (extra_info), not the whole split's
    kinds: list[Verdict] = field(default_factory=list)  # each run's verdict: slower, under load, ...
    # The baseline's tokens/s each run was judged against; None where it was not judged (first, baseline, load).
    baseline: list[float | None] = field(default_factory=list)

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
    threshold: float = DEFAULT_THRESHOLD  # the band around the baseline within which a run is not slower or faster


_HEX = re.compile(r"[0-9a-f]*")


def _commit(info: dict) -> str:
    """abcd1234, abcd1234+dirty, or pytest-benchmark's word for a run outside git (unversioned)."""
    return _short_commit(str(info.get("id") or ""), bool(info.get("dirty")))


def _short_commit(commit: str, dirty: bool) -> str:
    if _HEX.fullmatch(commit):
        commit = commit[:8]
    return commit + ("+dirty" if dirty else "")


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


@dataclass(frozen=True)
class SetAside:
    """A saved run that cannot be read: named, never judged, never a baseline."""

    where: str  # its file, or its store and number
    reason: str

    def line(self) -> str:
        return f"set aside {self.where}: {self.reason}; not judged and not a baseline: remove it or restore it"


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


@contextlib.contextmanager
def no_cycle_collection():
    """Reading a history makes a few hundred thousand objects that live until it is shown, and no reference cycles:
    Python's cycle collector would walk them all again and again (half the time of 100,000 runs), for nothing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def as_store(storage):
    """A store (``pplgate.store``), from one or from what --storage says."""
    return storage if hasattr(storage, "runs") else open_store(storage)


def stored_timings(
    store, test: str | None = None, node: str | None = None, seqs: list[int] | None = None
) -> tuple[list[tuple[SavedRun, list[Timing]]], list[SetAside]]:
    """Every run holding pplgate's throughput timings (of ``test`` on ``node`` only, where given; of the runs ``seqs``
    of a database only, where given), oldest first, with them; and the runs that cannot be read."""
    if hasattr(store, "timing_rows"):  # a database: one row a benchmark, checked when its run was kept
        return _grouped(store.timing_rows(test, node, seqs)), []
    runs, unread = store.runs()
    aside = [SetAside(where, reason) for where, reason in unread]
    found = []
    for run in runs:
        try:
            timings = timings_of_run(run.name, run.data)
        except UnreadableRun as err:
            aside.append(SetAside(run.where, str(err)))
            continue
        timings = [t for t in timings if (test is None or t.test == test) and (node is None or t.node == node)]
        if timings:
            found.append(
                (
                    SavedRun(run.name, run.data.get("datetime") or "", _commit(run.data.get("commit_info") or {})),
                    timings,
                )
            )
    return found, aside


def _grouped(rows) -> list[tuple[SavedRun, list[Timing]]]:
    """A database's benchmark rows (``PostgresStore.timing_rows``) as runs with their Timings."""
    out: list[tuple[SavedRun, list[Timing]]] = []
    last: tuple[SavedRun, list[Timing]] | None = None
    for seq, _, when, commit, dirty, node, median, stddev, rounds, extra in rows:
        name = f"{seq:04d}"
        if last is None or last[0].name != name:
            last = (SavedRun(name, when, _short_commit(commit, dirty == "true")), [])
            out.append(last)
        median = float(median)
        last[1].append(
            Timing(
                extra["test"],
                name,
                when,
                last[0].commit,
                node,
                median,
                float(stddev or 0.0) / median,
                int(rounds or 1),
                int(extra["tokens"]),
                extra,
            )
        )
    return out


def light_of(ref, t: Timing) -> Light:
    """What deciding ``t``'s verdict needs, as a database reads it from its columns."""
    return Light(
        ref,
        run_number(t.run),
        t.test,
        t.node,
        t.settings_key,
        t.median_seconds,
        t.spread,
        t.rounds,
        t.under_load,
        t.accuracy_key if t.extra.get("perplexity") is not None else None,
    )


def _picked_from_database(
    store, test: str | None, node: str | None, shown: int, accepted: dict, threshold: float
) -> tuple[list[tuple[SavedRun, list[Timing]]], dict[int, bool], list[str]]:
    """The runs ``pplgate.window.pick_runs`` picks, read whole, with the flags of those that join unjudged, and the
    tests in the order the history first holds them."""
    lights = store.timing_lights(test, node)
    picked = pick_runs(lights, shown, accepted, threshold)
    refs = {lights[i].ref: flag for i, flag in picked.items()}
    rows = [row for row in store.timing_rows(test, node, sorted({seq for seq, _ in refs})) if row[:2] in refs]
    known = {j: flag for j, row in enumerate(rows) if (flag := refs[row[:2]]) is not None}
    return _grouped(rows), known, list(dict.fromkeys(light.test for light in lights))


def saved_history(store, threshold: float = DEFAULT_THRESHOLD) -> tuple[Saved, list[SetAside]]:
    """What the next run is judged against: the history replaying every saved run makes (from a database, only the
    runs its verdicts look back at are read whole), and the runs that cannot be read."""
    accepted = accepted_levels(store.acceptances())
    if hasattr(store, "timing_lights"):
        found, known, _ = _picked_from_database(store, None, None, 0, accepted, threshold)
        aside: list[SetAside] = []
    else:
        (found, aside), known = stored_timings(store), None
    return replay_found(found, accepted, threshold, known), aside


def replay_found(found, accepted: dict, threshold: float, known: dict[int, bool] | None = None) -> Saved:
    """The history runs make, replayed as the gate judged them, so what was a change joins no baseline."""
    saved, _ = replay([t for _, timings in found for t in timings], accepted, threshold, known)
    return saved


def _timings_to_judge(
    store, test: str | None, node: str | None, shown: int, accepted: dict, threshold: float
) -> tuple[list[tuple[SavedRun, list[Timing]]], list[SetAside], dict[int, bool] | None, list[str]]:
    """The runs to replay, the positions (in their Timings, flattened) that join unjudged with whether each was a
    change, and the tests in the order the history first holds them: every run when ``shown`` is 0; else each test's
    last ``shown`` runs and those ``pplgate.window`` picks."""
    if not shown:
        found, aside = stored_timings(store, test, node)
        return found, aside, None, []
    if hasattr(store, "timing_lights"):
        found, known, order = _picked_from_database(store, test, node, shown, accepted, threshold)
        return found, [], known, order
    found, aside = stored_timings(store, test, node)
    flat = [(run, t) for run, timings in found for t in timings]
    lights = [light_of(i, t) for i, (_, t) in enumerate(flat)]
    picked = pick_runs(lights, shown, accepted, threshold)
    chosen = sorted(picked)
    regrouped: list[tuple[SavedRun, list[Timing]]] = []
    for i in chosen:
        run, t = flat[i]
        if not regrouped or regrouped[-1][0] is not run:
            regrouped.append((run, []))
        regrouped[-1][1].append(t)
    known = {j: flag for j, i in enumerate(chosen) if (flag := picked[i]) is not None}
    return regrouped, aside, known, list(dict.fromkeys(light.test for light in lights))


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


def accepted_levels(acceptances) -> dict:
    """{kind: {(test, machine): the run number from which the level is accepted}}, the latest acceptance winning."""
    levels: dict = {}
    for a in acceptances:
        if a.since.isdigit():
            levels.setdefault(a.kind, {})[(a.test, a.node)] = int(a.since)
    return levels


def judged(
    storage, threshold: float = DEFAULT_THRESHOLD, test: str | None = None, node: str | None = None, shown: int = 0
) -> Judged:
    """The saved runs holding pplgate's timings, and per test every run with its verdicts, as the gate would have given
    them then; ``shown``: each test's last ``shown`` runs only (the same verdicts, from a fraction of the reading:
    ``pplgate.window``).
    """
    store = as_store(storage)
    if store.is_empty():
        raise PplgateError(
            f"no saved benchmark runs under {store.label}: run the gate with --benchmark-autosave (or --gate-history) "
            "first, or pass --storage with the folder or database the runs were saved in."
        )
    accepted = accepted_levels(store.acceptances())
    found, aside, known, order = _timings_to_judge(store, test, node, shown, accepted, threshold)
    if not found:
        why = f" ({len(aside)} set aside: {aside[0].where}: {aside[0].reason})" if aside else ""
        if test is not None or node is not None:
            which = " ".join(p for p in (f"of {test}" if test else "", f"on machine {node}" if node else "") if p)
            raise PplgateError(
                f"the runs under {store.label} hold no pplgate throughput benchmarks {which}{why}: name the test and "
                "the machine as 'python -m pplgate history' shows them."
            )
        raise PplgateError(
            f"the runs under {store.label} hold no pplgate throughput benchmarks with their timings{why}: save runs "
            f"of tests/test_throughput.py."
        )
    _, judgments = replay([t for _, timings in found for t in timings], accepted, threshold, known)
    shown_runs = {j.timing.run for j in judgments}
    runs = [run for run, _ in found if run.name in shown_runs]
    index = {run.name: i for i, run in enumerate(runs)}
    rows: dict[str, list[Row]] = {}
    for j in judgments:
        rows.setdefault(j.timing.test, []).append(Row(index[j.timing.run], j.timing, j.verdict, j.drift))
    return Judged(runs, _in_order(rows, order), aside)


def _in_order(rows: dict, order: list[str]) -> dict:
    """The series as the history first holds them, however few of their runs are read."""
    return {key: rows[key] for key in order if key in rows} if order else rows


def judged_rows(storage, threshold: float = DEFAULT_THRESHOLD) -> dict[str, list[Row]]:
    """Per test, every saved run with its verdicts, as the gate would have given them then."""
    return judged(storage, threshold).rows


def _verdict_cell(v: ThroughputJudgment) -> str:
    if v.verdict is Verdict.BASELINE:
        return f"baseline ({v.baseline_runs} of {BASELINE_MIN_RUNS})"
    cell = (
        str(v.verdict)
        if v.change is None or v.uncertainty is None
        else f"{v.verdict} ({v.change * 100:+.0f}% ± {v.uncertainty * 100:.0f}%)"
    )
    return cell + (f" since run {v.since}" if v.since else "")


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


# The perplexity a throughput run carries is its timed blocks', not the whole split's: the column says so.
HEADER = ["run", "date", "machine", "commit", "tokens/s", "timed-blocks perplexity", "verdict"]


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


# The accuracy history: per case, device and precision on each machine, the perplexity night after night.
ACCURACY_HEADER = ["run", "date", "commit", "perplexity", "±", "expected", "verdict", "moved"]
# What may change under an accuracy series, and is named when its perplexity moves.
ACCURACY_RUNTIME = ("onnxruntime", "onnxruntime_distribution", "driver", "provider_options")


@dataclass(frozen=True)
class AccuracyRow:
    run: SavedRun
    record: dict  # the gate's result for the test that night (pplgate.recording.accuracy_record)
    moved: str | None  # since when, from what level and with what change, while the perplexity is off its level


def accuracy_records(
    store, test: str | None = None, node: str | None = None, seqs: list[int] | None = None
) -> list[tuple[SavedRun, str, dict]]:
    """(run, machine, result) of every accuracy result the store holds (of ``test`` on ``node``; of the runs ``seqs``
    of a database only, where given), oldest first."""
    return [(run, machine, record) for _, run, machine, record in _accuracy_records(store, test, node, seqs)]


def _accuracy_records(store, test: str | None, node: str | None, seqs: list[int] | None = None) -> list[tuple]:
    """(ref, run, machine, result): ``ref`` finds the result again ((run, position) in a database)."""
    if hasattr(store, "accuracy_rows"):
        return [
            ((seq, position), SavedRun(f"{seq:04d}", when, _short_commit(commit, dirty == "true")), machine, record)
            for seq, position, when, commit, dirty, machine, record in store.accuracy_rows(test, node, seqs)
        ]
    out: list[tuple] = []
    for run in store.runs()[0]:
        own = run.data.get("pplgate")
        records = own.get("accuracy") if isinstance(own, dict) else None
        if not isinstance(records, list):
            continue
        info = run.data.get("machine_info")
        machine = str(info.get("node") or "") if isinstance(info, dict) else ""
        commit = run.data.get("commit_info")
        saved = SavedRun(
            run.name, str(run.data.get("datetime") or ""), _commit(commit if isinstance(commit, dict) else {})
        )
        if node is None or machine == node:
            out += [
                (len(out) + i, saved, machine, r)
                for i, r in enumerate(
                    r
                    for r in records
                    if isinstance(r, dict) and isinstance(r.get("id"), str) and (test is None or r["id"] == test)
                )
            ]
    return out


def _accuracy_key(record: dict, machine: str) -> str:
    return f"{record['id']} on {machine}" if machine else record["id"]


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _results_to_follow(store, test, node, shown: int, accepted: dict) -> tuple[list[tuple], set | None, list[str]]:
    """The accuracy results to follow, which of them to show, and the series in the order the history first holds
    them: every one when ``shown`` is 0; else each series' last ``shown`` and those its moves look back at
    (``pplgate.window.pick_results``)."""
    if not shown:
        return accuracy_records(store, test, node), None, []
    if hasattr(store, "accuracy_lights"):
        lights = store.accuracy_lights(test, node)
    else:
        every = _accuracy_records(store, test, node)
        lights = [
            LightResult(
                i,
                run_number(run.name),
                _accuracy_key(r, machine),
                (r["id"], machine),
                _number(r.get("perplexity")),
                (r.get("model_sha256"), r.get("blocks_sha256")),
                r.get("expected"),
            )
            for i, (_, run, machine, r) in enumerate(every)
        ]
    picked = {lights[i].ref: show for i, show in pick_results(lights, shown, accepted).items()}
    if hasattr(store, "accuracy_rows"):
        every = _accuracy_records(store, test, node, sorted({seq for seq, _ in picked}))
    chosen = [(ref, run, machine, r) for ref, run, machine, r in every if ref in picked]
    show = {j for j, c in enumerate(chosen) if picked[c[0]]}
    return [(run, machine, r) for _, run, machine, r in chosen], show, list(dict.fromkeys(r.key for r in lights))


def accuracy_history(
    store, accepted: dict | None = None, test: str | None = None, node: str | None = None, shown: int = 0
) -> dict[str, list[AccuracyRow]]:
    """Per test and machine ("tiny-cpu-fp32 on node-a"), every night's result (the last ``shown`` only, where given),
    each perplexity compared with the level of the same model and blocks: the first night's, or the night the golden
    value was recorded again, or the night from which a person accepted a change.  A night off its level is marked,
    and every later one too until the perplexity is back or the change is accepted."""
    levels = (accepted or {}).get("accuracy", {})
    records, show, order = _results_to_follow(store, test, node, shown, accepted or {})
    out: dict[str, list[AccuracyRow]] = {}
    state: dict[str, dict] = {}
    for position, (run, machine, r) in enumerate(records):
        key = _accuracy_key(r, machine)
        s = state.setdefault(key, {"level": None, "since": None, "last": None, "accepted": False})
        since = levels.get((r["id"], machine))
        if since is not None and not s["accepted"] and run.name.isdigit() and int(run.name) >= since:
            s.update(level=None, since=None, accepted=True)
        moved = None
        ppl = r.get("perplexity")
        if _number(ppl) is not None:
            level = s["level"]
            pins = (r.get("model_sha256"), r.get("blocks_sha256"))
            if level is None or pins != level[1] or r.get("expected") != level[2].get("expected"):
                s.update(level=(run, pins, r), since=None)
            elif ppl == level[2]["perplexity"]:
                s["since"] = None
            else:
                if s["since"] is None:
                    s["since"] = ((run, r), s["last"])
                first, before = s["since"]
                changed = _accuracy_changes(before, first)
                moved = (
                    f"{ppl / level[2]['perplexity'] - 1:+.3g} from {level[2]['perplexity']:.10g} (run {level[0].name}) "
                    f"since run {first[0].name}" + (f": {changed}" if changed else "")
                )
            s["last"] = (run, r)
        if show is None or position in show:
            out.setdefault(key, []).append(AccuracyRow(run, r, moved))
    return _in_order(out, order)


def _accuracy_changes(before, first) -> str:
    """What differs between the night before a move and the night it began: runtime, provider options, commit."""
    if before is None:
        return ""
    (run_b, b), (run_f, f) = before, first
    changed = [f"{k} {b.get(k)} -> {f.get(k)}" for k in ACCURACY_RUNTIME if b.get(k) != f.get(k)]
    if run_b.commit != run_f.commit:
        changed.append(f"commit {run_b.commit or 'unknown'} -> {run_f.commit or 'unknown'}")
    return "; ".join(changed)


def _accuracy_cells(row: AccuracyRow) -> list[str]:
    r = row.record

    def number(key: str, spec: str) -> str:
        value = r.get(key)
        return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"

    verdict = str(r.get("verdict") or "")
    if r.get("perplexity") is None and r.get("reason"):
        verdict += f": {str(r['reason']).splitlines()[0][:60]}"
    return [
        row.run.name,
        row.run.datetime[:16].replace("T", " "),
        row.run.commit,
        number("perplexity", ".10g"),
        number("perplexity_stderr", ".3g"),
        number("expected", ".10g"),
        verdict,
        row.moved or "",
    ]


def render_accuracy(rows: dict[str, list[AccuracyRow]], markdown: bool = False) -> str:
    if not rows:
        return ""
    out = ["## pplgate accuracy history", ""] if markdown else ["accuracy"]
    for key, runs in rows.items():
        table = [ACCURACY_HEADER] + [_accuracy_cells(r) for r in runs]
        if markdown:
            out += [f"### {key}", "", "| " + " | ".join(ACCURACY_HEADER) + " |", "|" + " --- |" * len(ACCURACY_HEADER)]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in table[1:]]
            out.append("")
            continue
        widths = [max(len(line[i]) for line in table) for i in range(len(ACCURACY_HEADER))]
        out.append(f"  {key}")
        out += ["    " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
    return "\n".join(out).rstrip() + "\n"


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


def read_history(storage, threshold: float = DEFAULT_THRESHOLD) -> History:
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
            change = r.verdict.change
            # change = tokens/s against the baseline's, less one: the baseline's tokens/s is this run's / (1 + change).
            s.baseline.append(None if change is None else t.tokens_per_second / (1.0 + change))
    return History(runs, series, found.set_aside, threshold)


# How each verdict is marked on the tokens/s line.
MARKS = {Verdict.SLOWER: ("v", "red"), Verdict.FASTER: ("^", "green")}


def _when(run: SavedRun):
    """A run's date as matplotlib takes it; None where it has none it can read."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(run.datetime.replace("Z", "+00:00"))
    except ValueError:
        return None


def draw_history(history: History, title: str):
    """The figure, 12 inches wide however many nights: per series, the median tokens/s with its rounds' spread as a
    band, the baseline each night was judged against with the threshold around it, and below, the timed blocks'
    perplexity change in percent.

    Runs taken under load are crosses off the line (never judged, never a
    baseline); slower and faster verdicts are red and green triangles.  The
    time axis is the runs' dates, ticked by matplotlib's date locator (labels
    that never overlap); the runs' order where a date cannot be read.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on CI nodes; chosen here, never at import
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    dates = [_when(r) for r in history.runs]
    timed = all(d is not None for d in dates)
    position = dates if timed else list(range(len(history.runs)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    for name, s in history.series.items():
        xs = [position[i] for i in s.runs]
        judged = [i for i, kind in enumerate(s.kinds) if kind is not Verdict.UNDER_LOAD]
        tps = [s.tokens_per_second[i] for i in judged]
        spread = [s.tokens_per_second_std[i] for i in judged]
        (line,) = top.plot([xs[i] for i in judged], tps, marker="o", markersize=3, label=name)
        color = line.get_color()
        top.fill_between(
            [xs[i] for i in judged],
            [v - e for v, e in zip(tps, spread)],
            [v + e for v, e in zip(tps, spread)],
            color=color,
            alpha=0.15,
            linewidth=0,
        )
        based = [i for i, b in enumerate(s.baseline) if b is not None]
        if based:
            level = [s.baseline[i] or 0.0 for i in based]
            top.step([xs[i] for i in based], level, where="mid", color=color, linestyle="--", linewidth=1,
                     label=f"{name}: baseline, ±{history.threshold:.0%} band")  # fmt: skip
            top.fill_between(
                [xs[i] for i in based],
                [b * (1 - history.threshold) for b in level],
                [b * (1 + history.threshold) for b in level],
                step="mid",
                color=color,
                alpha=0.07,
                linewidth=0,
            )
        loaded = [i for i, kind in enumerate(s.kinds) if kind is Verdict.UNDER_LOAD]
        if loaded:
            top.scatter(
                [xs[i] for i in loaded],
                [s.tokens_per_second[i] for i in loaded],
                marker="x",
                color=color,
                label=f"{name}: under load, not judged",
            )
        for kind, (marker, mark_color) in MARKS.items():
            marked = [i for i, k in enumerate(s.kinds) if k == kind]
            if marked:
                top.scatter(
                    [xs[i] for i in marked],
                    [s.tokens_per_second[i] for i in marked],
                    marker=marker,
                    s=80,
                    color=mark_color,
                    zorder=3,
                    label=f"{name}: {kind}",
                )
        bottom.plot(
            xs,
            s.perplexity_change_percent,
            marker="o",
            markersize=3,
            color=color,
            label=f"{name} (first run: {s.perplexity[0]:.6g})",
        )
    top.set_ylabel("tokens / s, median round\n(band: the rounds' spread)")
    top.set_title(title)
    bottom.set_ylabel("perplexity of the timed blocks:\nchange from the first run (%)")
    bottom.axhline(0.0, color="grey", linewidth=0.8)
    if timed:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        bottom.set_xlabel("night (the run's date)")
    else:
        names = [r.name for r in history.runs]
        bottom.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        bottom.xaxis.set_major_formatter(FuncFormatter(lambda x, _: names[int(x)] if 0 <= x < len(names) else ""))
        bottom.set_xlabel("saved run")
    for ax in (top, bottom):
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def plot_history(storage, output: Path, threshold: float = DEFAULT_THRESHOLD) -> list[SetAside]:
    """Draws the history of ``storage`` into ``output``; returns the saved runs set aside, which the plot leaves out."""
    store = as_store(storage)
    history = read_history(store, threshold)
    fig = draw_history(history, f"pplgate history: {store.label}")
    import matplotlib.pyplot as plt

    write_atomic(Path(output), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return history.set_aside


def accept(storage, kind: str, test: str, node: str, since: str, why: str, who: str | None = None) -> str:
    """Records that ``test`` on ``node`` has a new level from run ``since`` on; the run must be one of that series."""
    import datetime as dt
    import getpass

    from pplgate.store import Acceptance

    if not why.strip():
        raise PplgateError("--why is empty: say why the new level is right; it is kept with the acceptance.")
    with as_store(storage) as store:
        if kind == "throughput":
            found, _ = stored_timings(store)
            runs = {t.run for _, timings in found for t in timings if t.test == test and t.node == node}
        else:
            runs = {run.name for run, machine, r in accuracy_records(store) if r["id"] == test and machine == node}
        if not runs:
            raise PplgateError(
                f"{store.label} holds no {kind} run of {test} on machine {node}: name the test and the machine as "
                "'python -m pplgate history' shows them."
            )
        number = since.strip().lstrip("0") or "0"
        match = next((r for r in runs if r.lstrip("0") == number), None)
        if match is None:
            shown = ", ".join(sorted(runs)[-5:])
            raise PplgateError(
                f"run {since} is not a {kind} run of {test} on {node} in {store.label} (its last: {shown}): name the "
                "first run of the new level."
            )
        acceptance = Acceptance(
            kind,
            test,
            node,
            match,
            who or getpass.getuser(),
            dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            why,
        )
        store.accept(acceptance)
    return (
        f"accepted: {kind} of {test} on {node} from run {match} on, by {acceptance.who}: later runs are judged against "
        f"that level ({store.label})"
    )
