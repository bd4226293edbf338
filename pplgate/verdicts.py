"""Throughput and accuracy verdicts from the history pytest-benchmark keeps.

A fixed percentage against one previous run of three rounds cannot tell a
regression from a shared node's noise (three runs of the same settings here:
4,700-5,600, 3,200-3,600 and 3,400-4,900 tokens/s).  So a run is judged
against the saved runs of the same test on the same machine with the same
settings, and the noise is estimated from them:

- nothing is judged until ``BASELINE_MIN_RUNS`` such runs are saved (the
  verdict says "baseline: k of N runs"): one run's rounds say how steady that
  run was, not how far the next run on a shared node lands (a quiet rerun
  here came out +17% against one saved run, more than a real one-core
  slowdown's -10 to -13%), so the noise must come from several runs;
- the baseline is the median seconds per round of the last ``BASELINE_RUNS``
  such runs, runs taken under load left out (``pplgate.conditions``);
- its noise is 1.4826 x the median absolute deviation of those medians
  (a standard deviation that one wild run does not inflate), relative, and
  never below the typical (median) spread of their rounds, since runs cannot
  agree better than rounds do;
- the run's own median is uncertain by its rounds' spread / sqrt(rounds):
  u = sqrt(noise^2 + (spread / sqrt(rounds))^2);
- a slowdown is reported when tokens/s fell by more than the threshold
  **and** by more than ``SIGMAS`` x u.

Settings are what a user chooses (batch size, threads, provider options,
blocks timed, scoring): another value starts another series.  The
onnxruntime version and build, the providers and the driver are not
settings: a change there is what the history must catch, so the verdict
names it.

Accuracy drift: on the same model bytes, the same blocks and the same
method, the perplexity of the timed blocks should not move at all; when it
does, the runtime, the driver or the provider changed, and the verdict says
by how much and what else differs from the last such run.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field

BASELINE_RUNS = 10
# The fewest saved runs a verdict is given against: the median and the median
# absolute deviation of five runs ignore any two odd ones (of three, only one).
BASELINE_MIN_RUNS = 5
SIGMAS = 3.0
DEFAULT_THRESHOLD = 0.10
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

    @property
    def runtime(self) -> dict:
        return {k: self.extra.get(k) for k in RUNTIME}

    @property
    def under_load(self) -> bool:
        return bool((self.extra.get("conditions") or {}).get("under_load"))

    @property
    def accuracy_key(self) -> tuple:
        return (self.extra.get("model_sha256"), self.extra.get("blocks_sha256"), str(self.extra.get("method")))


class UnreadableRun(ValueError):
    """A saved run, or one benchmark of it, that is not what pytest-benchmark writes: named and set aside, never judged."""


def _number(value, what: str, minimum: float = 0.0, above: bool = True) -> float:
    """``value`` as a finite float above (or at least) ``minimum``; UnreadableRun saying what it is otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnreadableRun(f"{what} is {_shown(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:
        raise UnreadableRun(f"{what} is a {int(abs(value)).bit_length() * 30103 // 100000 + 1}-digit number or so, beyond any float") from None
    if not math.isfinite(number) or (number <= minimum if above else number < minimum):
        raise UnreadableRun(f"{what} is {number!r}, not a finite number {'above' if above else 'of at least'} {minimum:g}")
    return number


def _shown(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, (dict, list)) else ("an object" if isinstance(value, dict) else "a list")
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
    tokens = int(_number(of_type(extra["tokens"], int, f"{test}: extra_info.tokens", optional=False), f"{test}: extra_info.tokens"))
    stddev = 0.0 if stats.get("stddev") is None else _number(stats["stddev"], f"{test}: stats.stddev", above=False)
    rounds = 1 if stats.get("rounds") is None else int(_number(of_type(stats["rounds"], int, f"{test}: stats.rounds"), f"{test}: stats.rounds"))
    if extra.get("perplexity") is not None:
        _number(extra["perplexity"], f"{test}: extra_info.perplexity")
    conditions = of_type(extra.get("conditions"), dict, f"{test}: extra_info.conditions") or {}
    if conditions.get("others_cpu_share") is not None:
        _number(conditions["others_cpu_share"], f"{test}: extra_info.conditions.others_cpu_share", above=False)
    for key in ("model_sha256", "blocks_sha256", *RUNTIME[:2]):
        of_type(extra.get(key), str, f"{test}: extra_info.{key}")
    return Timing(test, run, datetime, commit, node, median, stddev / median, rounds, tokens, extra)


@dataclass
class Verdict:
    test: str
    kind: str  # "first run", "baseline" (too few runs yet), "within noise", "slower", "faster", "under load"
    sentence: str
    change: float | None = None  # relative change in tokens/s; negative: slower
    uncertainty: float | None = None
    baseline_runs: int = 0
    changed: dict = field(default_factory=dict)  # runtime field -> [before, now]

    @property
    def regression(self) -> bool:
        return self.kind == "slower"

    def record(self) -> dict:
        return asdict(self)


def _percent(x: float) -> str:
    return f"{x * 100:+.0f}%"


def _changes(before: dict, now: dict) -> dict:
    return {k: [before.get(k), now.get(k)] for k in now if before.get(k) != now.get(k)}


def _describe(changed: dict) -> str:
    return "; ".join(f"{k} {before} -> {now}" for k, (before, now) in changed.items())


def _settings_key(t: Timing) -> str:
    return json.dumps(t.settings, sort_keys=True, default=str)


class Saved:
    """Saved Timings, oldest first, indexed as the verdicts look them up.

    Each lookup costs the same however many runs are saved, so judging every
    saved run against those before it (``pplgate history``) is linear in them.
    """

    def __init__(self, timings: list[Timing] = ()):
        self._series: dict[tuple, list[Timing]] = {}  # (test, node, settings) -> every run
        self._calm: dict[tuple, list[Timing]] = {}  # the same, runs under load left out
        self._newest_here: dict[tuple, Timing] = {}  # (test, node) -> its newest run
        self._nodes: dict[str, set[str]] = {}  # test -> the machines it ran on
        self._accuracy: dict[tuple, Timing] = {}  # (test, model, blocks, method) -> its newest run with a perplexity
        for t in timings:
            self.add(t)

    def add(self, t: Timing) -> None:
        key = (t.test, t.node, _settings_key(t))
        self._series.setdefault(key, []).append(t)
        if not t.under_load:
            self._calm.setdefault(key, []).append(t)
        self._newest_here[(t.test, t.node)] = t
        self._nodes.setdefault(t.test, set()).add(t.node)
        if t.extra.get("perplexity") is not None:
            self._accuracy[(t.test, *t.accuracy_key)] = t

    def series(self, current: Timing) -> list[Timing]:
        """The saved runs of the same test, machine and settings."""
        return self._series.get((current.test, current.node, _settings_key(current)), [])

    def baseline(self, current: Timing) -> list[Timing]:
        """The last BASELINE_RUNS of them not taken under load."""
        return self._calm.get((current.test, current.node, _settings_key(current)), [])[-BASELINE_RUNS:]

    def newest_here(self, current: Timing) -> Timing | None:
        return self._newest_here.get((current.test, current.node))

    def nodes(self, test: str) -> set[str]:
        return self._nodes.get(test, set())

    def last_on_same_inputs(self, current: Timing) -> Timing | None:
        """The newest run of the test on the same model, blocks and method."""
        return self._accuracy.get((current.test, *current.accuracy_key))


def _saved(history: Saved | list[Timing]) -> Saved:
    return history if isinstance(history, Saved) else Saved(history)


def _new_series(current: Timing, history: Saved) -> str:
    """Why no saved run is comparable: the settings that differ from the newest run of this test here, or the machines it ran on."""
    nearest = history.newest_here(current)
    if nearest is not None:
        differ = ", ".join(f"{k} {nearest.settings[k]!r} (run {nearest.run}) -> {current.settings[k]!r}" for k in SETTINGS
                           if nearest.settings[k] != current.settings[k])
        return f"first run with these settings, a new series: the saved runs of this test on this machine differ in {differ}"
    elsewhere = sorted(history.nodes(current.test))
    if elsewhere:
        return f"first run on this machine ({current.node}): the saved runs of this test are from {', '.join(elsewhere)}, never compared across machines"
    return "first run on this machine with these settings: nothing to compare"


def throughput_verdict(current: Timing, history: Saved | list[Timing], threshold: float = DEFAULT_THRESHOLD) -> Verdict:
    history = _saved(history)
    series = history.series(current)
    baseline = history.baseline(current)
    conditions = current.extra.get("conditions") or {}
    if current.under_load:
        share = conditions.get("others_cpu_share")
        took = f" (other processes took {share:.0%} of the CPU)" if isinstance(share, (int, float)) else ""
        return Verdict(current.test, "under load", f"{current.test}: taken under load{took}: not judged, and not a baseline for later runs")
    if not series:
        return Verdict(current.test, "first run", f"{current.test}: {_new_series(current, history)}")
    if len(baseline) < BASELINE_MIN_RUNS:
        return Verdict(current.test, "baseline",
                       f"{current.test}: baseline: {len(baseline)} of {BASELINE_MIN_RUNS} runs saved with these settings on this machine "
                       f"(runs under load not counted): not judged until {BASELINE_MIN_RUNS}, the fewest whose spread says what noise is",
                       baseline_runs=len(baseline))
    medians = [t.median_seconds for t in baseline]
    center = statistics.median(medians)
    noise = max(statistics.median(t.spread for t in baseline), 1.4826 * statistics.median(abs(m - center) for m in medians) / center)
    u = math.sqrt(noise**2 + current.spread**2 / current.rounds)
    change = center / current.median_seconds - 1.0
    changed = _changes(baseline[-1].runtime, current.runtime)
    where = f"{_percent(change)} ± {u * 100:.0f}% tokens/s against the median of {len(baseline)} runs"
    since = f"; since the last of them: {_describe(changed)}" if changed else ""
    if abs(change) > threshold and abs(change) > SIGMAS * u:
        kind = "slower" if change < 0 else "faster"
        sentence = f"{current.test}: {kind}: {where} (beyond the {threshold:.0%} threshold and {SIGMAS:g}x the noise){since}"
    else:
        kind = "within noise"
        sentence = f"{current.test}: {where}: within the {threshold:.0%} threshold or the noise{since}"
    return Verdict(current.test, kind, sentence, change, u, len(baseline), changed)


def drift(current: Timing, history: Saved | list[Timing]) -> Verdict | None:
    """None when the last run on the same model, blocks and method gave the same perplexity (or there is none)."""
    last = _saved(history).last_on_same_inputs(current)
    if last is None:
        return None
    before, now = last.extra["perplexity"], current.extra.get("perplexity")
    if now is None or before == now:
        return None
    changed = _changes(last.runtime, current.runtime)
    if last.node != current.node:
        changed["machine"] = [last.node, current.node]
    if last.extra.get("provider_options") != current.extra.get("provider_options"):
        changed["provider_options"] = [last.extra.get("provider_options"), current.extra.get("provider_options")]
    relative = now / before - 1.0
    what = _describe(changed) if changed else "nothing recorded differs (the same runtime, provider and machine)"
    return Verdict(current.test, "drift",
                   f"{current.test}: perplexity {now:.10g} moved {relative:+.3g} relative from {before:.10g} (run {last.run}) on the same model, blocks and method; "
                   f"what differs: {what}", relative, None, 1, changed)
