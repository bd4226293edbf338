"""Showing a long history's last nights exactly as judging every night would, without reading every night whole.

A night's verdicts depend on nights long before it: the baseline is the last
ten calm runs of its series, which a lasting change keeps from moving for as
long as it holds; a slowdown names the run it began with; a perplexity is
compared with the level first seen on the same model and blocks.  So
``pplgate history`` cannot judge only the nights it shows.  But what those
verdicts look back at is a handful of runs per series.  This module walks
every run once, over the few numbers each verdict's decision needs (a
``Light`` a run: its series, median, spread, rounds, load; a ``LightResult``
an accuracy result: its perplexity, pins and expected value), deciding each
with the same function the verdict uses (``verdicts.step``), and picks:

- the runs shown: each test's last N;
- and, as they stood the moment the first shown run of a test was judged,
  the runs its verdicts look back at: each series' baseline, the first run
  of a change still holding, the newest run of each series and of each
  machine, the run that set each perplexity level, and the run each
  acceptance starts from; with whether each was a change.

The history then reads those runs whole and judges the shown ones through
``verdicts.replay`` (the picked ones join unjudged, with the flag found
here), which is what judging all of them would give: the selftests check it
against the whole replay.  100,000 runs in PostgreSQL: the numbers of each in
a fifth of a second, a few hundred runs read whole.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

from pplgate.timings import BASELINE_RUNS
from pplgate.verdicts import BASELINE_MIN_RUNS, Verdict, step


class Light(NamedTuple):
    """What deciding one throughput verdict needs of a run, and what finds the run again."""

    ref: Hashable  # (run, position) in a database; the position in a list for a folder
    number: int | None  # the run's number in its store, which acceptances count in
    test: str
    node: str
    settings: Hashable  # equal for runs of the same settings
    median: float  # seconds per round
    spread: float  # the rounds' stddev / median
    rounds: int
    under_load: bool
    level: Hashable | None  # the model, blocks and method, where the run has a perplexity


def last_of_each(tests: Sequence[str], shown: int) -> dict[str, int]:
    """test -> the position of the first of its last ``shown`` entries."""
    first: dict[str, int] = {}
    left: dict[str, int] = {}
    for i in range(len(tests) - 1, -1, -1):
        test = tests[i]
        n = left.get(test, shown)
        if n:
            left[test] = n - 1
            first[test] = i
    return first


def pick_runs(lights: Sequence[Light], shown: int, accepted: dict | None, threshold: float) -> dict[int, bool | None]:
    """Positions in ``lights`` to read whole: None for a run shown (to be judged), or whether a run before them was a
    change (to join the history unjudged).  ``shown`` 0: no run is shown, and those picked are what the verdicts of
    the next run will look back at.  Mirrors ``timings.Saved`` and ``verdicts.throughput_verdict`` step by step."""
    cut = last_of_each([light.test for light in lights], shown) if shown else {}
    acceptances = {kind: dict(found) for kind, found in (accepted or {}).items() if found}
    changed = [False] * len(lights)
    calm: dict[tuple, list[tuple[int, float, float]]] = {}  # series -> its last BASELINE_RUNS calm (i, median, spread)
    streak: dict[tuple, int] = {}  # series -> the first run of the change holding
    newest: dict[tuple, int] = {}  # series, and (test, machine) -> the newest run
    levels: dict[tuple, int] = {}  # (test, model, blocks, method) -> the run that set the perplexity level
    reset: set[tuple] = set()
    picked: dict[int, bool | None] = {}

    def looked_back_at(test: str) -> None:
        before = [p for key, runs in calm.items() if key[0] == test for p, _, _ in runs]
        for found in (streak, newest, levels):
            before += [p for key, p in found.items() if key[0] == test]
        picked.update((p, changed[p]) for p in before)

    for i, light in enumerate(lights):
        test, node = light.test, light.node
        first = cut.get(test, len(lights))
        if i >= first:
            if i == first:
                looked_back_at(test)
            picked[i] = None
            continue
        if acceptances:
            for kind in ("throughput", "accuracy"):
                since = acceptances.get(kind, {}).get((test, node))
                if since is None or (kind, test, node) in reset:
                    continue
                if light.number is None or light.number >= since:
                    reset.add((kind, test, node))
                    picked[i] = None  # its flag is set below
                    if kind == "throughput":
                        for key in [k for k in calm if k[:2] == (test, node)]:
                            calm[key] = []
                            streak.pop(key, None)
                    else:
                        for key in [k for k in levels if k[0] == test]:
                            del levels[key]
        series = (test, node, light.settings)
        baseline = calm.get(series, ())
        if light.under_load or series not in newest or len(baseline) < BASELINE_MIN_RUNS:
            change = False
        else:
            kind, _, _ = step(
                [m for _, m, _ in baseline],
                [s for _, _, s in baseline],
                light.median,
                light.spread,
                light.rounds,
                threshold,
            )
            change = kind is not Verdict.WITHIN_NOISE
        changed[i] = change
        if i in picked:
            picked[i] = change
        newest[series] = i
        newest[(test, node)] = i
        if change:
            streak.setdefault(series, i)
        elif not light.under_load:
            runs = calm.setdefault(series, [])
            runs.append((i, light.median, light.spread))
            if len(runs) > BASELINE_RUNS:
                del runs[0]
            streak.pop(series, None)
        if light.level is not None:
            levels.setdefault((test, light.level), i)
    for test in dict.fromkeys(light.test for light in lights):
        if test not in cut:
            looked_back_at(test)
    return picked


class LightResult(NamedTuple):
    """What following one accuracy result's level needs, and what finds it again."""

    ref: Hashable
    number: int | None
    key: str  # "tiny-cpu-fp32 on node-a": the test and the machine
    accepted_as: tuple  # (test, machine), as acceptances name it
    perplexity: float | None  # None where the result is not a number (skipped, failed)
    pins: tuple  # (model sha256, blocks sha256)
    expected: object


def pick_results(results: Sequence[LightResult], shown: int, accepted: dict | None) -> dict[int, bool]:
    """Positions in ``results`` to read whole: True for a result shown, False for one before them that its moves look
    back at (the level, the night a move began and the night before it, the last night).  Mirrors
    ``history.accuracy_history``."""
    cut = last_of_each([r.key for r in results], shown)
    levels = (accepted or {}).get("accuracy", {})
    state: dict[str, list] = {}  # key -> [level (i, perplexity, pins, expected), since (first, before), last, accepted]
    picked: dict[int, bool] = {}
    for i, r in enumerate(results):
        first = cut[r.key]
        if i >= first:
            if i == first and r.key in state:
                level, since, last, _ = state[r.key]
                picked.update((p, False) for p in (level and level[0], *(since or ()), last) if p is not None)
            picked[i] = True
            continue
        s = state.setdefault(r.key, [None, None, None, False])
        since = levels.get(r.accepted_as)
        if since is not None and not s[3] and r.number is not None and r.number >= since:
            # Each series follows its own level, so the first of its results read from here on resets it as well.
            s[:] = [None, None, s[2], True]
        if r.perplexity is None:
            continue
        level = s[0]
        if level is None or r.pins != level[2] or r.expected != level[3]:
            s[0], s[1] = (i, r.perplexity, r.pins, r.expected), None
        elif r.perplexity == level[1]:
            s[1] = None
        elif s[1] is None:
            s[1] = (i, s[2])
        s[2] = i
    return picked
