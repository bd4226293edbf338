"""Verdicts: pure functions from what a run obtained (and what was expected or saved before) to a Judgment.

The fixtures of the gate only record and fail; every decision, and the
sentence that explains it, is made here, so each can be tested as a function.

Accuracy: a perplexity against its golden value (``pplgate.golden``), after
the pins (the blocks and the model it was recorded on), and a run against a
reference session within the case's limits.

Throughput: from the history pytest-benchmark keeps (``pplgate.timings``).

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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from pplgate.golden import BlocksPin, Limits, ModelPin, Resolved, Tolerance
from pplgate.target import Target
from pplgate.timings import SETTINGS, Saved, Timing

# The fewest saved runs a verdict is given against: the median and the median
# absolute deviation of five runs ignore any two odd ones (of three, only one).
BASELINE_MIN_RUNS = 5
SIGMAS = 3.0
DEFAULT_THRESHOLD = 0.10
# The timed blocks' perplexity against the accuracy path's on the same blocks
# (MLPerf's TEST01): the same session and settings compute the same float32
# losses, so anything past rounding is a fast path computing something else.
TEST01_REL_TOL = 1e-6


class Verdict(str, Enum):
    """Every verdict the gate gives, as the summary, the reports and the history write it."""

    # A gate test's outcome.
    PASS = "pass"
    FAIL = "FAIL"
    NO_GOLDEN = "no golden"
    UPDATED = "updated"
    SKIP = "skip"
    ERROR = "error"
    CRASHED = "crashed"  # its pytest-xdist worker died
    NOT_RUN = "not run"  # selected, and the session ended before it ran
    # A throughput run against the saved runs.
    FIRST_RUN = "first run"
    BASELINE = "baseline"  # too few saved runs to judge yet
    WITHIN_NOISE = "within noise"
    SLOWER = "slower"
    FASTER = "faster"
    UNDER_LOAD = "under load"
    DRIFT = "drift"  # the perplexity moved on the same model, blocks and method

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


@dataclass(frozen=True)
class Judgment:
    """A verdict and the sentence that explains it ("" for a plain pass)."""

    verdict: Verdict
    sentence: str = ""
    expected: float | None = None  # the perplexity compared with, where one was
    rel_tol: float | None = None

    @property
    def failed(self) -> bool:
        return self.verdict in (Verdict.FAIL, Verdict.NO_GOLDEN)


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def judge_missing(path, target: Target, obtained: float, command: str) -> Judgment:
    """A case with no entry for the target."""
    return Judgment(
        Verdict.NO_GOLDEN,
        f"{path} has no expected perplexity for {target.key} (obtained {obtained:.6g}): record it with\n  {command}",
    )


def judge_pins(test: str, resolved: Resolved, report: dict, where: str, command: str) -> Judgment | None:
    """FAIL when the run's blocks or model are not those the value was recorded on; None when they are, or nothing is
    pinned.
    """
    obtained = BlocksPin.of(report)
    if resolved.blocks is not None and resolved.blocks != obtained:
        return Judgment(
            Verdict.FAIL,
            f"the blocks of {test} differ from those the value in {where} was recorded on "
            f"(recorded: {resolved.blocks.describe()}; now: {obtained.describe()}), so the data, the tokenizer or the "
            f"grouping changed, "
            f"not the model: pass the --dataset and --tokenizer it was recorded with, or re-record with\n  {command}",
        )
    model = ModelPin.of(report)
    pinned = resolved.model
    if pinned is None:
        return None
    if pinned.sha256 != model.sha256:
        return Judgment(
            Verdict.FAIL,
            f"the model of {test} is not the one the value in {where} was measured on "
            f"(recorded sha256 {pinned.sha256}, {pinned.bytes} bytes; now {model.sha256}, {model.bytes} bytes, "
            f"{report['model']}): "
            f"point --model at the original, or re-record with\n  {command}",
        )
    if (
        resolved.via is None
        and None not in (pinned.converted_sha256, model.converted_sha256)
        and pinned.converted_sha256 != model.converted_sha256
    ):
        return Judgment(
            Verdict.FAIL,
            f"the fp16 conversion of {test} is not the one the value in {where} was measured on "
            f"(recorded sha256 {pinned.converted_sha256}; now {model.converted_sha256}), though the model is the same: "
            f"onnxruntime's float16 converter changed; re-record with\n  {command}",
        )
    return None


def judge_perplexity(
    case: str, target: Target, obtained: float, expected: float, rel_tol: float, where: str, command: str, hint: str
) -> Judgment:
    """PASS within the tolerance, else FAIL with the table (obtained, expected, difference, tolerance) and what to run
    next.
    """
    c = Tolerance(obtained, expected, rel_tol)
    if c.passed:
        return Judgment(Verdict.PASS, expected=expected, rel_tol=rel_tol)
    table = columns(
        [
            ("", "obtained", "expected", "difference", "tolerance"),
            (
                "perplexity",
                f"{c.obtained:.6g}",
                f"{c.expected:.6g}",
                f"{c.difference:+.6g} ({c.difference / c.expected:+.4%})",
                f"±{c.rel_tol:.4%} (±{c.rel_tol * c.expected:.4g})",
            ),
        ]
    )
    return Judgment(
        Verdict.FAIL,
        f"perplexity of {case} on {target.spec} is outside its tolerance\n"
        f"{table}\ndevice {target.device.spec}, precision {target.precision}, golden {where}\n"
        f"If the change is intended, record the obtained value with:\n  {command}\n{hint}",
        expected,
        rel_tol,
    )


def judge_limits(test: str, limits: Limits, summary: dict, where: str, hint: str) -> Judgment:
    """A run against its reference session: PASS within every bound, else FAIL with the broken ones."""
    broken = limits.violations(summary)
    if not broken:
        return Judgment(Verdict.PASS)
    table = columns([("", "obtained", "limit")] + [(m, f"{v:.6g}", f"{side} {b:.6g}") for m, v, side, b in broken])
    return Judgment(
        Verdict.FAIL,
        f"{test} against {limits.reference.spec} on {limits.blocks or 'all'} blocks breaks its limits\n{table}\n"
        f"limits: {where}\n{hint}",
    )


def judge_timed(test: str, blocks: int, timed: float, accuracy: float) -> Judgment:
    """MLPerf's TEST01: the timed run's perplexity is the accuracy path's on the same blocks, or the timed path
    computes something else.
    """
    if abs(timed / accuracy - 1.0) <= TEST01_REL_TOL:
        return Judgment(Verdict.PASS)
    return Judgment(
        Verdict.FAIL,
        f"{test}: the timed run's perplexity of its {blocks} blocks is {timed!r}, "
        f"the accuracy path's on the same blocks {accuracy!r} ({timed / accuracy - 1.0:+.3g} relative, tolerance "
        f"{TEST01_REL_TOL:g}): "
        "the timed path computes something else; compare both with --device cpu --precision fp32.",
    )


def judge_nothing_timed(test: str, strict: bool) -> Judgment:
    """Never a pass: a throughput test that timed nothing has checked nothing."""
    why = (
        f"{test}: nothing was timed: pytest-benchmark is off (--benchmark-disable, or pytest-xdist, under which it "
        f"turns "
        "itself off): run the throughput tests without -n and without --benchmark-disable"
    )
    return Judgment(Verdict.FAIL, f"{why} (--gate-strict)") if strict else Judgment(Verdict.SKIP, why)


@dataclass(frozen=True)
class ThroughputJudgment:
    """A throughput run against the saved runs of its series."""

    test: str
    verdict: Verdict  # first run, baseline, within noise, slower, faster, under load; drift for a perplexity that moved
    # The sentence, or what writes it when first asked for: the history judges every saved run and shows a few.
    text: str | Callable[[], str]
    change: float | None = None  # relative change in tokens/s (or perplexity, for drift); negative: slower
    uncertainty: float | None = None
    baseline_runs: int = 0
    changed: dict = field(default_factory=dict)  # runtime field -> [before, now]
    since: str | None = None  # the run a change still holding began at, when before this one

    @property
    def sentence(self) -> str:
        if callable(self.text):
            object.__setattr__(self, "text", self.text())
        return str(self.text)

    @property
    def regression(self) -> bool:
        return self.verdict is Verdict.SLOWER

    def record(self) -> dict:
        """As reports keep it: the verdict under "kind"."""
        return {
            "test": self.test,
            "kind": self.verdict.value,
            "sentence": self.sentence,
            "change": self.change,
            "uncertainty": self.uncertainty,
            "baseline_runs": self.baseline_runs,
            "changed": self.changed,
            "since": self.since,
        }


def throughput_failure(
    judgment: ThroughputJudgment, moved: ThroughputJudgment | None, fail_beyond: float | None, drift_fails: bool
) -> str | None:
    """What fails a throughput test once judged: a slowdown with --gate-throughput-fail, a drift with
    --gate-drift-fail.
    """
    if judgment.regression and fail_beyond is not None:
        return f"{judgment.sentence}; --gate-throughput-fail={fail_beyond:.0%}"
    if moved is not None and drift_fails:
        return f"{moved.sentence}; --gate-drift-fail"
    return None


def _percent(x: float) -> str:
    return f"{x * 100:+.0f}%"


def _changes(before: dict, now: dict) -> dict:
    return {k: [before.get(k), now.get(k)] for k in now if before.get(k) != now.get(k)}


def _describe(changed: dict) -> str:
    return "; ".join(f"{k} {before} -> {now}" for k, (before, now) in changed.items())


def _saved(history: Saved | list[Timing]) -> Saved:
    return history if isinstance(history, Saved) else Saved(history)


def _new_series(current: Timing, history: Saved) -> str:
    """Why no saved run is comparable: the settings that differ from the newest run of this test here, or the machines
    it ran on.
    """
    nearest = history.newest_here(current)
    if nearest is not None:
        differ = ", ".join(
            f"{k} {nearest.settings[k]!r} (run {nearest.run}) -> {current.settings[k]!r}"
            for k in SETTINGS
            if nearest.settings[k] != current.settings[k]
        )
        return (
            f"first run with these settings, a new series: the saved runs of this test on this machine differ in "
            f"{differ}"
        )
    elsewhere = sorted(history.nodes(current.test))
    if elsewhere:
        return (
            f"first run on this machine ({current.node}): the saved runs of this test are from "
            f"{', '.join(elsewhere)}, never compared across machines"
        )
    return "first run on this machine with these settings: nothing to compare"


def throughput_verdict(
    current: Timing, history: Saved | list[Timing], threshold: float = DEFAULT_THRESHOLD
) -> ThroughputJudgment:
    history = _saved(history)
    series = history.series(current)
    baseline = history.baseline(current)
    conditions = current.extra.get("conditions") or {}
    if current.under_load:
        share = conditions.get("others_cpu_share")
        took = f" (other processes took {share:.0%} of the CPU)" if isinstance(share, (int, float)) else ""
        return ThroughputJudgment(
            current.test,
            Verdict.UNDER_LOAD,
            f"{current.test}: taken under load{took}: not judged, and not a baseline for later runs",
        )
    if not series:
        return ThroughputJudgment(current.test, Verdict.FIRST_RUN, f"{current.test}: {_new_series(current, history)}")
    if len(baseline) < BASELINE_MIN_RUNS:
        return ThroughputJudgment(
            current.test,
            Verdict.BASELINE,
            f"{current.test}: baseline: {len(baseline)} of {BASELINE_MIN_RUNS} runs saved with these settings on this "
            f"machine "
            f"(runs under load not counted): not judged until {BASELINE_MIN_RUNS}, the fewest whose spread says what "
            f"noise is",
            baseline_runs=len(baseline),
        )
    n = len(baseline)
    kind, change, u = step(
        [t.median_seconds for t in baseline],
        [t.spread for t in baseline],
        current.median_seconds,
        current.spread,
        current.rounds,
        threshold,
    )
    before_runtime, runtime = baseline[-1].runtime, current.runtime
    changed = {} if before_runtime == runtime else _changes(before_runtime, runtime)
    held = history.change_since(current) if kind is not Verdict.WITHIN_NOISE else None

    def sentence() -> str:
        where = f"{_percent(change)} ± {u * 100:.0f}% tokens/s against the median of {n} runs"
        since = f"; since the last of them: {_describe(changed)}" if changed else ""
        if kind is Verdict.WITHIN_NOISE:
            return f"{current.test}: {where}: within the {threshold:.0%} threshold or the noise{since}"
        if held is not None:
            first, before = held
            what = _changes(before.runtime, first.runtime) if before is not None else {}
            when = f"{first.datetime[:10]}, " if first.datetime else ""
            since = (
                f"; {kind} since run {first.run} ({when}commit {first.commit or 'unknown'}"
                + (f"; what changed then: {_describe(what)}" if what else "")
                + "): accept the new level with 'python -m pplgate history accept' once it is understood"
            )
        return (
            f"{current.test}: {kind}: {where} (beyond the {threshold:.0%} threshold and {SIGMAS:g}x the noise){since}"
        )

    return ThroughputJudgment(
        current.test, kind, sentence, change, u, n, changed, held[0].run if held is not None else None
    )


def step(
    medians: list[float], spreads: list[float], median: float, spread: float, rounds: int, threshold: float
) -> tuple[Verdict, float, float]:
    """Slower, faster or within the noise: a run's median seconds per round against its baseline's (at least
    BASELINE_MIN_RUNS runs); with the relative change in tokens/s and its uncertainty u.  The whole decision, shared by
    the verdict and by ``pplgate.window``'s pass over a long history."""
    medians = sorted(medians)
    center = _median_sorted(medians)
    noise = max(
        _median_sorted(sorted(spreads)),
        1.4826 * _median_sorted(sorted([abs(m - center) for m in medians])) / center,
    )
    u = math.sqrt(noise**2 + spread**2 / rounds)
    change = center / median - 1.0
    if abs(change) > threshold and abs(change) > SIGMAS * u:
        return (Verdict.SLOWER if change < 0 else Verdict.FASTER), change, u
    return Verdict.WITHIN_NOISE, change, u


def _median_sorted(values: list[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def drift(current: Timing, history: Saved | list[Timing]) -> ThroughputJudgment | None:
    """None when the perplexity level on the same model, blocks and method (the first run's, or the first since an
    accepted change) is the one ``current`` gives, or there is none: a move stays flagged every night until accepted."""
    last = _saved(history).level_on_same_inputs(current)
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
    return ThroughputJudgment(
        current.test,
        Verdict.DRIFT,
        f"{current.test}: perplexity {now:.10g} moved {relative:+.3g} relative from {before:.10g} (the level since run "
        f"{last.run}) on the same model, blocks and method; "
        f"what differs: {what}",
        relative,
        None,
        1,
        changed,
    )


@dataclass(frozen=True)
class JudgedTiming:
    """One saved Timing with the verdicts the gate would have given it then."""

    timing: Timing
    verdict: ThroughputJudgment
    drift: ThroughputJudgment | None


def replay(
    timings: list[Timing],
    accepted: dict | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    known: Mapping[int, bool] | None = None,
) -> tuple[Saved, list[JudgedTiming]]:
    """Judges each Timing against those before it, oldest first, as the gate did the night it ran; the history they
    make, which knows what was a change (and so joins no baseline), and each one's verdicts.

    ``known``: positions in ``timings`` whose verdict is known already (whether each was a change): they join the
    history unjudged.  ``pplgate.window`` picks such runs to stand for the thousands before the runs shown."""
    saved = Saved(accepted=accepted)
    judged = []
    for i, t in enumerate(timings):
        if known is not None and i in known:
            saved.add(t, changed=known[i])
            continue
        verdict = throughput_verdict(t, saved, threshold)
        judged.append(JudgedTiming(t, verdict, drift(t, saved)))
        saved.add(t, changed=verdict.verdict in (Verdict.SLOWER, Verdict.FASTER))
    return saved, judged
