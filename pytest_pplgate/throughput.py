"""The ``throughput_regression`` fixture: records the timed run and fails with the judgment's sentence."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass

import pytest

from pplgate.timings import Saved
from pytest_pplgate.outcome import THROUGHPUT_PROPERTY
from pytest_pplgate.session import CaseTarget, GateSession


@dataclass
class ThroughputRegression:
    """``throughput_regression.check(benchmark, result, conditions)`` after the timed rounds."""

    gate: GateSession
    param: CaseTarget
    request: pytest.FixtureRequest
    history: Saved  # the saved runs, replayed as the gate judged them

    def check(self, benchmark, result, conditions) -> None:
        __tracebackhide__ = True
        from pplgate.report import throughput_info
        from pplgate.timings import timing_of
        from pplgate.verdicts import (
            DEFAULT_THRESHOLD,
            Verdict,
            drift,
            judge_nothing_timed,
            judge_timed,
            throughput_failure,
            throughput_verdict,
        )

        settings = self.gate.settings
        session, blocks = self.gate.session(self.param), result.layout
        timed = judge_timed(
            self.param.id, len(blocks), result.perplexity, self.gate.accuracy_perplexity(self.param, len(blocks))
        )
        if timed.failed:
            pytest.fail(timed.sentence, pytrace=False)
        stats = benchmark.stats.stats if benchmark.stats else None
        if stats is None:
            nothing = judge_nothing_timed(self.param.id, settings.strict)
            if nothing.verdict is Verdict.SKIP:
                pytest.skip(nothing.sentence)
            pytest.fail(nothing.sentence, pytrace=False)
        benchmark.extra_info.update(
            throughput_info(
                test=self.param.id,
                case=self.param.case.name,
                session=session,
                evaluation=result,
                mean_seconds=stats.mean,
                method=self.param.case.method,
                conditions=conditions.record(),
                cache_dir=settings.cache_dir,
            )
        )
        bench = {
            "stats": {"median": stats.median, "stddev": stats.stddev, "rounds": stats.rounds},
            "extra_info": benchmark.extra_info,
        }
        # As pytest-benchmark saves it (its parameter by the test id, as its JSON writes it): what the history records.
        saved = benchmark.stats.as_dict(include_data=False)
        saved["params"], saved["param"] = {"gate_target": self.param.id}, self.param.id
        self.gate.benchmarks.append(json.loads(json.dumps(saved, default=str)))
        # The machine as pytest-benchmark's machine_info names it in the saved runs.
        current = timing_of(bench, "this run", "", "", platform.node())
        assert current is not None  # pplgate's own extra_info: a timing
        threshold = DEFAULT_THRESHOLD if settings.throughput_fail is None else settings.throughput_fail
        verdict = throughput_verdict(current, self.history, threshold)
        moved = drift(current, self.history)
        self.request.node.user_properties.append(
            (
                THROUGHPUT_PROPERTY,
                json.dumps(
                    {
                        "id": self.param.id,
                        "verdict": verdict.record(),
                        "drift": moved.record() if moved else None,
                        "tokens_per_second": current.tokens_per_second,
                        "conditions": conditions.record(),
                    }
                ),
            )
        )
        failure = throughput_failure(verdict, moved, settings.throughput_fail, settings.drift_fail)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
