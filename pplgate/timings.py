"""Throughput timings read back from pytest-benchmark's saved runs, and the index the verdicts look them up in.

A saved run is pytest-benchmark's JSON; pplgate's throughput tests put what
the verdicts need in each benchmark's ``extra_info`` (``pplgate.report.throughput_info``).
A benchmark of pplgate's whose fields are not what pplgate writes is
``UnreadableRun``: named and set aside, never judged, never a baseline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

# A round shorter than this timed nothing a model did (a saved run edited by hand, or a clock gone wrong).
SHORTEST_S = 1e-6
# The saved runs of a series a verdict takes its baseline from: the last ten.
BASELINE_RUNS = 10
# What identifies a series (besides the test and the machine): the knobs a user sets.
SETTINGS = ("batch_size", "intra_op_threads", "provider_options", "blocks", "scoring")
# What may change under a series, and is named when it does.
RUNTIME = ("onnxruntime", "onnxruntime_distribution", "providers", "driver")


@dataclass(frozen=True)
class Timing:
    """One test's throughput in one run: pytest-benchmark's stats and pplgate's extra_info."""

    test: str  # tiny-cpu-fp32
    run: str  # the saved run's name (0007), or "this run"
    datetime: str
    commit: str
    node: str  # the machine
    median_seconds: float  # per round
    spread: float  # the rounds' stddev / median
    rounds: int
    tokens_per_round: int
    extra: dict  # extra_info: settings, runtime, perplexity, model and blocks sha256, conditions

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_round / self.median_seconds

    @property
    def settings(self) -> dict:
        return {k: self.extra.get(k) for k in SETTINGS}

    def __post_init__(self) -> None:
        # What every verdict looks up, made once: a history judges each of 100,000 runs against those before it.
        extra = self.extra
        conditions = extra.get("conditions")
        method = extra.get("method")
        derived = {
            "runtime": {k: extra.get(k) for k in RUNTIME},
            "under_load": bool(conditions.get("under_load")) if isinstance(conditions, dict) else False,
            "settings_key": repr(tuple(_frozen(extra.get(k)) for k in SETTINGS)),
            "accuracy_key": (extra.get("model_sha256"), extra.get("blocks_sha256"), repr(_frozen(method))),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    # Set by __post_init__, as above.
    runtime: ClassVar[dict]
    under_load: ClassVar[bool]
    settings_key: ClassVar[str]  # the settings as one comparable value
    accuracy_key: ClassVar[tuple]  # model, blocks and method: what a perplexity level is of


def _frozen(value):
    """A settings value as a comparable one: an object's items sorted, a list a tuple."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class UnreadableRun(ValueError):
    """A saved run, or one benchmark of it, that is not what pytest-benchmark writes: named and set aside, never
    judged.
    """


def _number(value, what: str, minimum: float = 0.0, above: bool = True) -> float:
    """``value`` as a finite float above (or at least) ``minimum``; UnreadableRun saying what it is otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnreadableRun(f"{what} is {_shown(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise UnreadableRun(
            f"{what} is a {int(abs(value)).bit_length() * 30103 // 100000 + 1}-digit number or so, beyond any float"
        ) from None
    if not math.isfinite(number) or (number <= minimum if above else number < minimum):
        raise UnreadableRun(
            f"{what} is {number!r}, not a finite number {'above' if above else 'of at least'} {minimum:g}"
        )
    return number


def _shown(value) -> str:
    text = (
        json.dumps(value, default=str)
        if not isinstance(value, (dict, list))
        else ("an object" if isinstance(value, dict) else "a list")
    )
    return text if len(text) <= 40 else text[:37] + "..."


def of_type(value, kinds, what: str, optional: bool = True):
    if (value is None and optional) or (isinstance(value, kinds) and not isinstance(value, bool)):
        return value
    names = {dict: "an object", list: "a list", str: "text", int: "an integer"}
    wanted = " or ".join(names.get(k, k.__name__) for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
    raise UnreadableRun(f"{what} is {_shown(value)}, not {wanted}")


def timing_of(bench: dict, run: str, datetime: str, commit: str, node: str) -> Timing | None:
    """A Timing from one benchmark of a saved run (or of this run's JSON); None if it is not pplgate's.

    A benchmark of pplgate's whose fields are not what pplgate writes (text
    where numbers belong, a zero or NaN time, a perplexity of 0) raises
    UnreadableRun: the run is set aside and named, never judged.
    """
    bench = of_type(bench, dict, "a benchmark", optional=False)
    extra = of_type(bench.get("extra_info"), dict, "extra_info") or {}
    if "tokens" not in extra or "test" not in extra:
        return None
    test = of_type(extra["test"], str, "extra_info.test", optional=False)
    stats = of_type(bench.get("stats"), dict, f"{test}: stats", optional=False)
    median = _number(stats.get("median"), f"{test}: stats.median")
    if median < SHORTEST_S:
        raise UnreadableRun(f"{test}: stats.median is {median!r} s, shorter than any model runs a block in")
    tokens = int(
        _number(
            of_type(extra["tokens"], int, f"{test}: extra_info.tokens", optional=False), f"{test}: extra_info.tokens"
        )
    )
    stddev = 0.0 if stats.get("stddev") is None else _number(stats["stddev"], f"{test}: stats.stddev", above=False)
    rounds = (
        1
        if stats.get("rounds") is None
        else int(_number(of_type(stats["rounds"], int, f"{test}: stats.rounds"), f"{test}: stats.rounds"))
    )
    if extra.get("perplexity") is not None:
        _number(extra["perplexity"], f"{test}: extra_info.perplexity")
    conditions = of_type(extra.get("conditions"), dict, f"{test}: extra_info.conditions") or {}
    if conditions.get("others_cpu_share") is not None:
        _number(conditions["others_cpu_share"], f"{test}: extra_info.conditions.others_cpu_share", above=False)
    for key in ("model_sha256", "blocks_sha256", *RUNTIME[:2]):
        of_type(extra.get(key), str, f"{test}: extra_info.{key}")
    return Timing(test, run, datetime, commit, node, median, stddev / median, rounds, tokens, extra)


def _settings_key(t: Timing) -> str:
    return t.settings_key


def run_number(run: str) -> int | None:
    """A saved run's number (0007 -> 7); None for the run being judged now."""
    return int(run) if run.isdigit() else None


class Saved:
    """Saved Timings, oldest first, indexed as the verdicts look them up.

    Each lookup costs the same however many runs are saved, so judging every
    saved run against those before it (``pplgate history``) is linear in them.

    A run judged slower or faster than its baseline never joins later
    baselines: a lasting change is not absorbed into the level it left, and
    every later night keeps saying since when it holds, until a person accepts
    the new level (``accepted``: (test, machine) -> the run from which it is
    accepted).  From that run on, the series' baseline starts again.  The same
    for perplexity: a run's perplexity is compared with the level first seen on
    the same model, blocks and method (or accepted), not with the night before.
    """

    def __init__(self, timings: Iterable[Timing] = (), accepted: dict | None = None):
        self._series: dict[tuple, list[Timing]] = {}  # (test, node, settings) -> every run
        self._calm: dict[tuple, list[Timing]] = {}  # the same: the runs a baseline may take
        self._streak: dict[tuple, tuple[Timing, Timing | None]] = {}  # series -> (first of a change, the run before)
        self._last_calm: dict[tuple, Timing] = {}
        self._newest_here: dict[tuple, Timing] = {}  # (test, node) -> its newest run
        self._nodes: dict[str, set[str]] = {}  # test -> the machines it ran on
        self._accuracy: dict[tuple, Timing] = {}  # (test, model, blocks, method) -> the level: its first perplexity
        self._accepted = {kind: dict(found) for kind, found in (accepted or {}).items() if found}
        self._reset: set[tuple] = set()  # (kind, test, node) whose acceptance has been applied
        for t in timings:
            self.add(t)

    def __len__(self) -> int:
        return sum(len(runs) for runs in self._series.values())

    def _apply_acceptances(self, t: Timing) -> None:
        if not self._accepted:
            return
        number = run_number(t.run)
        for kind in ("throughput", "accuracy"):
            since = self._accepted.get(kind, {}).get((t.test, t.node))
            if since is None or (kind, t.test, t.node) in self._reset:
                continue
            if number is None or number >= since:
                self._reset.add((kind, t.test, t.node))
                if kind == "throughput":
                    for key in [k for k in self._calm if k[:2] == (t.test, t.node)]:
                        self._calm[key] = []
                        self._streak.pop(key, None)
                else:
                    for key in [k for k in self._accuracy if k[0] == t.test]:
                        del self._accuracy[key]

    def add(self, t: Timing, changed: bool = False) -> None:
        """``t`` joins the history; ``changed``: it was judged slower or faster, so it joins no baseline."""
        self._apply_acceptances(t)
        key = (t.test, t.node, _settings_key(t))
        self._series.setdefault(key, []).append(t)
        if changed:
            self._streak.setdefault(key, (t, self._last_calm.get(key)))
        elif not t.under_load:
            self._calm.setdefault(key, []).append(t)
            self._last_calm[key] = t
            self._streak.pop(key, None)
        self._newest_here[(t.test, t.node)] = t
        self._nodes.setdefault(t.test, set()).add(t.node)
        if t.extra.get("perplexity") is not None:
            self._accuracy.setdefault((t.test, *t.accuracy_key), t)

    def series(self, current: Timing) -> list[Timing]:
        """The saved runs of the same test, machine and settings."""
        return self._series.get((current.test, current.node, _settings_key(current)), [])

    def baseline(self, current: Timing) -> list[Timing]:
        """The last BASELINE_RUNS of them a baseline may take: not under load, not a change."""
        self._apply_acceptances(current)
        return self._calm.get((current.test, current.node, _settings_key(current)), [])[-BASELINE_RUNS:]

    def change_since(self, current: Timing) -> tuple[Timing, Timing | None] | None:
        """The first run of the change still holding in ``current``'s series, and the run before it; None if none."""
        return self._streak.get((current.test, current.node, _settings_key(current)))

    def newest_here(self, current: Timing) -> Timing | None:
        return self._newest_here.get((current.test, current.node))

    def nodes(self, test: str) -> set[str]:
        return self._nodes.get(test, set())

    def level_on_same_inputs(self, current: Timing) -> Timing | None:
        """The run that set the perplexity level of the test on the same model, blocks and method: the first, or the
        first since an acceptance."""
        self._apply_acceptances(current)
        return self._accuracy.get((current.test, *current.accuracy_key))
