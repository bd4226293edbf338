"""The throughput check: what was timed computed the right thing, and how it compares with the history."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass

import pytest

from pytest_pplgate.outcome import THROUGHPUT_PROPERTY
from pytest_pplgate.session import GateSession, Target

# The timed blocks' perplexity against the accuracy path's on the same blocks
# (MLPerf's TEST01): the same session and settings compute the same float32
# losses, so anything past rounding is a fast path computing something else.
TEST01_REL_TOL = 1e-6


@dataclass
class ThroughputRegression:
    """The ``throughput_regression`` fixture: ``check(benchmark, result, conditions)`` after the timed rounds."""

    gate: GateSession
    target: Target
    request: pytest.FixtureRequest
    history: list  # pplgate.verdicts.Timing of the saved runs

    def check(self, benchmark, result, conditions) -> None:
        __tracebackhide__ = True
        from pplgate.report import throughput_info
        from pplgate.verdicts import DEFAULT_THRESHOLD, drift, throughput_verdict, timing_of

        settings = self.gate.settings
        session, blocks = self.gate.session(self.target), result.layout
        accuracy = self.gate.accuracy_perplexity(self.target, len(blocks))
        if abs(result.perplexity / accuracy - 1.0) > TEST01_REL_TOL:
            pytest.fail(
                f"{self.target.id}: the timed run's perplexity of its {len(blocks)} blocks is {result.perplexity!r}, "
                f"the accuracy path's on the same blocks {accuracy!r} ({result.perplexity / accuracy - 1.0:+.3g} relative, tolerance {TEST01_REL_TOL:g}): "
                "the timed path computes something else; compare both with --device cpu --precision fp32.",
                pytrace=False,
            )
        stats = benchmark.stats.stats if benchmark.stats else None
        if stats is None:
            # Never a pass: a throughput test that timed nothing has checked nothing.
            why = (f"{self.target.id}: nothing was timed: pytest-benchmark is off (--benchmark-disable, or pytest-xdist, under which it turns "
                   "itself off): run the throughput tests without -n and without --benchmark-disable")
            if settings.strict:
                pytest.fail(f"{why} (--gate-strict)", pytrace=False)
            pytest.skip(why)
        benchmark.extra_info.update(throughput_info(test=self.target.id, case=self.target.case.name, session=session, evaluation=result,
                                                    mean_seconds=stats.mean, method=self.target.case.method, conditions=conditions.record(),
                                                    cache_dir=settings.cache_dir))
        bench = {"stats": {"median": stats.median, "stddev": stats.stddev, "rounds": stats.rounds}, "extra_info": benchmark.extra_info}
        # The machine as pytest-benchmark's machine_info names it in the saved runs.
        current = timing_of(bench, "this run", "", "", platform.node())
        threshold = DEFAULT_THRESHOLD if settings.throughput_fail is None else settings.throughput_fail
        verdict = throughput_verdict(current, self.history, threshold)
        moved = drift(current, self.history)
        self.request.node.user_properties.append((THROUGHPUT_PROPERTY, json.dumps({
            "id": self.target.id, "verdict": verdict.record(), "drift": moved.record() if moved else None,
            "tokens_per_second": current.tokens_per_second, "conditions": conditions.record(),
        })))
        if verdict.regression and settings.throughput_fail is not None:
            pytest.fail(f"{verdict.sentence}; --gate-throughput-fail={settings.throughput_fail:.0%}", pytrace=False)
        if moved is not None and settings.drift_fail:
            pytest.fail(f"{moved.sentence}; --gate-drift-fail", pytrace=False)

