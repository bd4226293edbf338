"""The ``perplexity_regression`` fixture: records what the test obtained and fails with the judgment's sentence.

Every decision is ``pplgate.verdicts``': the fixture gathers what a judgment
needs (the golden entry, a computed value, a reference session's summary)
and keeps the outcome for the summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from pplgate.verdicts import Judgment, Verdict
from pytest_pplgate.commands import localize_command, regenerate_command
from pytest_pplgate.outcome import RESULT_PROPERTY, Outcome, obtain
from pytest_pplgate.session import CaseTarget, GateSession


@dataclass
class PerplexityRegression:
    """``perplexity_regression.check(report)``: one test's result against its golden entry."""

    gate: GateSession
    param: CaseTarget
    request: pytest.FixtureRequest

    def check(self, report: dict) -> None:
        __tracebackhide__ = True
        from pplgate.golden import golden_record, provenance
        from pplgate.verdicts import judge_limits, judge_missing, judge_perplexity, judge_pins

        case, target, test = self.param.case, self.param.target, self.param.id
        obtained = report["perplexity"]
        node = self.request.node
        node.user_properties.append(("perplexity", obtained))
        command = regenerate_command(self.request.config, node.nodeid)
        outcome = Outcome(
            test,
            Verdict.PASS,
            target.key,
            obtained,
            report["perplexity_stderr"],
            tokens_per_second=report["tokens_per_second"],
            model_sha256=report["model_sha256"],
            report=report,
        )

        entry = case.entry(target)
        # A computed entry has no recorded value to update: it is checked as usual.
        if self.gate.settings.update and (entry is None or entry.computed is None):
            obtain(False, lambda: golden_record(case.path, target, report, provenance(report)))
            outcome.verdict = Verdict.UPDATED
            self._keep(outcome)
            return

        def record(other) -> str:
            """The command that records entry ``other`` of this case: this test's node with that target's id."""
            return regenerate_command(
                self.request.config, node.nodeid.replace(f"[{test}]", f"[{case.name}-{other.key}]")
            )

        resolved = obtain(False, lambda: case.resolve(target, record))
        if resolved is None:
            self._settle(outcome, judge_missing(case.path, target, obtained, command))
            return
        where = f"{case.path} [expected.{(resolved.via or resolved.key).key}]"
        # A computed value holds for any model file it is computed from: nothing to pin.
        outcome.model_pinned = resolved.model is not None if resolved.computed is None else None
        self._settle(outcome, judge_pins(test, resolved, report, where, command))
        value = (
            resolved.perplexity
            if resolved.computed is None
            else obtain(self.gate.settings.strict, lambda: self.gate.computed_perplexity(self.param))
        )
        node.user_properties.append(("perplexity_expected", value))
        if resolved.computed is not None:
            where += f" ({resolved.computed} of these blocks)"
        limits = entry.limits if entry is not None else None
        judgment = judge_perplexity(
            case.name, target, obtained, value, resolved.rel_tol, where, command, self._localize_hint(limits)
        )
        outcome.expected, outcome.rel_tol = judgment.expected, judgment.rel_tol
        self._settle(outcome, judgment)
        if limits is not None:
            summary = obtain(self.gate.settings.strict, lambda: self.gate.reference_summary(self.param, limits))
            outcome.report = {**(outcome.report or {}), **summary}
            for metric in limits.metrics:
                node.user_properties.append((metric, summary[metric]))
            self._settle(
                outcome,
                judge_limits(
                    test, limits, summary, f"{case.path} [expected.{target.key}.limits]", self._localize_hint(limits)
                ),
            )
        self._keep(outcome)

    def _settle(self, outcome: Outcome, judgment: Judgment | None) -> None:
        """A failing judgment ends the test with its sentence, the outcome kept; anything else goes on."""
        __tracebackhide__ = True
        if judgment is None or not judgment.failed:
            return
        outcome.verdict = Verdict.FAIL if judgment.verdict is Verdict.FAIL else judgment.verdict
        self._keep(outcome)
        pytest.fail(judgment.sentence, pytrace=False)

    def _localize_hint(self, limits) -> str:
        """The next step after a failure: the localize command for this case, sources and devices filled in."""
        from pplgate.target import Target

        target = self.param.target
        reference = limits.reference if limits is not None else Target.parse("cpu-fp32")
        command = localize_command(self.gate, self.param, reference)
        if reference.key == target.key:
            # Against itself there is nothing to find: an earlier export of the model is the reference.
            return (
                f"To find the first node that departs from an earlier export of the model:\n  {command} "
                f"--reference-model=EARLIER.onnx"
            )
        return f"To find the first node where {self.param.id} departs from {reference.spec}:\n  {command}"

    def _keep(self, outcome: Outcome) -> None:
        # Through user_properties the outcome reaches the controller under
        # pytest-xdist, and --junitxml, as well as the terminal summary.
        self.request.node.user_properties.append((RESULT_PROPERTY, json.dumps(outcome.__dict__)))
