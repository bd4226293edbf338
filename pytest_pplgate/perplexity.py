"""The ``perplexity_regression`` fixture: obtained against expected, with a table when they part."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from pytest_pplgate.commands import localize_command, regenerate_command
from pytest_pplgate.outcome import RESULT_PROPERTY, Outcome, obtain
from pytest_pplgate.session import GateSession, Target


def _columns(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells as left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _table(target: Target, c, where: str) -> str:
    """obtained, expected, difference and tolerance of ``c`` (pplgate.golden.Tolerance)."""
    rows = [
        ("", "obtained", "expected", "difference", "tolerance"),
        ("perplexity", f"{c.obtained:.6g}", f"{c.expected:.6g}", f"{c.difference:+.6g} ({c.difference / c.expected:+.4%})", f"±{c.rel_tol:.4%} (±{c.rel_tol * c.expected:.4g})"),
    ]
    return _columns(rows) + f"\ndevice {target.device.spec}, precision {target.precision}, golden {where}"


@dataclass
class PerplexityRegression:
    """The ``perplexity_regression`` fixture: checks one target's result against its golden entry."""

    gate: GateSession
    target: Target
    request: pytest.FixtureRequest

    def check(self, report: dict) -> None:
        __tracebackhide__ = True
        from pplgate.golden import Tolerance, golden_record, provenance

        case, key = self.target.case, self.target.key
        obtained = report["perplexity"]
        node = self.request.node
        node.user_properties.append(("perplexity", obtained))
        command = regenerate_command(self.request.config, node.nodeid)
        outcome = Outcome(self.target.id, "pass", obtained, report["perplexity_stderr"], tokens_per_second=report["tokens_per_second"],
                          model_sha256=report["model_sha256"], report=report)

        entry = case.expected.get(key)
        # A computed entry has no recorded value to update: it is checked as usual.
        if self.gate.settings.update and (entry is None or entry.computed is None):
            obtain(False, lambda: golden_record(case.path, key, report, self.target.precision, provenance(report)))
            outcome.verdict = "updated"
            self._keep(outcome)
            return
        def record(other: str) -> str:
            """The command that records entry ``other`` of this case: this test's node with that target's id."""
            return regenerate_command(self.request.config, node.nodeid.replace(f"[{self.target.id}]", f"[{case.name}-{other}]"))

        expected = obtain(False, lambda: case.resolve(key, record))
        if expected is None:
            outcome.verdict = "no golden"
            self._keep(outcome)
            pytest.fail(
                f"{case.path} has no expected perplexity for {key} (obtained {obtained:.6g}): record it with\n  {command}",
                pytrace=False,
            )
        where = f"{case.path} [expected.{expected.via or key}]"
        # A computed value holds for any model file it is computed from: nothing to pin.
        outcome.model_pinned = expected.model is not None if expected.computed is None else None
        mismatch = self._inputs_changed(expected, report, where, command)
        if mismatch:
            outcome.verdict = "FAIL"
            self._keep(outcome)
            pytest.fail(mismatch, pytrace=False)
        value = expected.perplexity if expected.computed is None else obtain(self.gate.settings.strict, lambda: self.gate.computed_perplexity(self.target))
        c = Tolerance(obtained, value, expected.rel_tol)
        outcome.expected, outcome.rel_tol = value, expected.rel_tol
        node.user_properties.append(("perplexity_expected", value))
        if expected.computed is not None:
            where += f" ({expected.computed} of these blocks)"
        if not c.passed:
            outcome.verdict = "FAIL"
            self._keep(outcome)
            pytest.fail(
                f"perplexity of {case.name} on {self.target.device.spec}-{self.target.precision} is outside its tolerance\n"
                f"{_table(self.target, c, where)}\n"
                f"If the change is intended, record the obtained value with:\n  {command}\n"
                f"{self._localize_hint(case.expected[key].limits)}",
                pytrace=False,
            )
        limits = case.expected[key].limits
        if limits is not None:
            self._check_limits(limits, outcome, f"{case.path} [expected.{key}.limits]")
        self._keep(outcome)

    def _inputs_changed(self, expected, report: dict, where: str, command: str) -> str | None:
        """The sentence for a run whose blocks or model are not those ``expected`` (pplgate.golden.Resolved) was measured on, else None."""
        from pplgate.golden import BlocksPin, ModelPin

        obtained = BlocksPin.of(report)
        if expected.blocks is not None and expected.blocks != obtained:
            return (f"the blocks of {self.target.id} differ from those the value in {where} was recorded on "
                    f"(recorded: {expected.blocks.describe()}; now: {obtained.describe()}), so the data, the tokenizer or the grouping changed, "
                    f"not the model: pass the --dataset and --tokenizer it was recorded with, or re-record with\n  {command}")
        model = ModelPin.of(report)
        if expected.model is None:
            return None
        if expected.model.sha256 != model.sha256:
            return (f"the model of {self.target.id} is not the one the value in {where} was measured on "
                    f"(recorded sha256 {expected.model.sha256}, {expected.model.bytes} bytes; now {model.sha256}, {model.bytes} bytes, {report['model']}): "
                    f"point --model at the original, or re-record with\n  {command}")
        if expected.via is None and None not in (expected.model.converted_sha256, model.converted_sha256) and expected.model.converted_sha256 != model.converted_sha256:
            return (f"the fp16 conversion of {self.target.id} is not the one the value in {where} was measured on "
                    f"(recorded sha256 {expected.model.converted_sha256}; now {model.converted_sha256}), though the model is the same: "
                    f"onnxruntime's float16 converter changed; re-record with\n  {command}")
        return None

    def _check_limits(self, limits, outcome: Outcome, where: str) -> None:
        __tracebackhide__ = True
        summary = obtain(self.gate.settings.strict, lambda: self.gate.reference_summary(self.target, limits))
        outcome.report = {**(outcome.report or {}), **summary}
        for metric in limits.bounds:
            self.request.node.user_properties.append((metric, summary[metric]))
        broken = limits.violations(summary)
        if broken:
            outcome.verdict = "FAIL"
            self._keep(outcome)
            table = _columns([("", "obtained", "limit")] + [(m, f"{v:.6g}", f"{side} {b:.6g}") for m, v, side, b in broken])
            pytest.fail(
                f"{self.target.id} against {limits.reference} on {limits.blocks or 'all'} blocks breaks its limits\n{table}\n"
                f"limits: {where}\n"
                f"{self._localize_hint(limits)}",
                pytrace=False,
            )

    def _localize_hint(self, limits) -> str:
        """The next step after a failure: the localize command for this case, sources and devices filled in."""
        target = self.target
        reference = limits.reference if limits is not None else "cpu-fp32"
        command = localize_command(self.gate, target, reference)
        if reference == target.key:
            # Against itself there is nothing to find: an earlier export of the model is the reference.
            return f"To find the first node that departs from an earlier export of the model:\n  {command} --reference-model=EARLIER.onnx"
        return f"To find the first node where {target.id} departs from {reference}:\n  {command}"

    def _keep(self, outcome: Outcome) -> None:
        # Through user_properties the outcome reaches the controller under
        # pytest-xdist, and --junitxml, as well as the terminal summary.
        self.request.node.user_properties.append((RESULT_PROPERTY, json.dumps(outcome.__dict__)))

