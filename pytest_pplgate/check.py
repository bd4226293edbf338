"""The perplexity check: obtained against expected, with a table when they part."""

from __future__ import annotations

import datetime
import json
import shlex
from dataclasses import dataclass

import pytest

from pplgate.errors import PplgateError, ProviderUnavailable, SourceUnavailable
from pplgate.golden import BlocksPin, Comparison, Limits, ModelPin, Resolved, golden_record
from pytest_pplgate.session import GateSession, Target

RESULT_PROPERTY = "pplgate_result"


def obtain(gate: GateSession, make):
    """Runs ``make``; a missing provider or source skips (fails when strict), other faults fail."""
    __tracebackhide__ = True
    missing = broken = None
    try:
        return make()
    except (ProviderUnavailable, SourceUnavailable) as err:
        missing = str(err)
    except PplgateError as err:
        broken = str(err)
    # Outside the except blocks, so the report shows the sentence without a chained traceback.
    if broken is not None:
        pytest.fail(broken, pytrace=False)
    if gate.settings.strict:
        pytest.fail(f"{missing} (--strict-gate: a missing provider or source is a failure)", pytrace=False)
    pytest.skip(missing)


@dataclass
class Outcome:
    """One line of the gate's summary and one record of its JSON report."""

    id: str
    verdict: str  # pass, FAIL, no golden, updated
    perplexity: float | None = None
    perplexity_stderr: float | None = None
    expected: float | None = None
    rel_tol: float | None = None
    tokens_per_second: float | None = None
    model_sha256: str | None = None  # the model that ran
    model_pinned: bool | None = None  # whether the golden entry pins it
    report: dict | None = None


def source_args(config: pytest.Config) -> list[str]:
    """The options of this run that a suggested command must repeat: sources and the golden folder.

    Written --option=value: pytest takes a separate path-like word for a test
    path when it looks for its rootdir, and would then miss pytest.ini.
    """
    words = [f"--{o}={config.getoption(f'pplgate_{o}')}" for o in ("model", "dataset", "tokenizer") if config.getoption(f"pplgate_{o}")]
    if config.getoption("pplgate_golden_dir"):
        words.append(f"--golden-dir={config.getoption('pplgate_golden_dir')}")
    return words


def regenerate_command(config: pytest.Config, nodeid: str) -> str:
    """The command that records the obtained value for this test only."""
    return shlex.join(["pytest", nodeid, "--update-golden", *source_args(config)])


def _columns(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells as left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _table(target: Target, c: Comparison, where: str) -> str:
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
            golden_record(case.path, key, report, self.target.precision, provenance(report))
            outcome.verdict = "updated"
            self._keep(outcome)
            return
        expected = case.resolve(key)
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
        value = expected.perplexity if expected.computed is None else obtain(self.gate, lambda: self.gate.computed_perplexity(self.target))
        c = Comparison(obtained, value, expected.rel_tol)
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

    def _inputs_changed(self, expected: Resolved, report: dict, where: str, command: str) -> str | None:
        """The sentence for a run whose blocks or model are not those the value was measured on, else None."""
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

    def _check_limits(self, limits: Limits, outcome: Outcome, where: str) -> None:
        __tracebackhide__ = True
        summary = obtain(self.gate, lambda: self.gate.reference_summary(self.target, limits))
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

    def _localize_hint(self, limits: Limits | None) -> str:
        """The next step after a failure: the localize command for this case, sources and devices filled in."""
        target = self.target
        reference = limits.reference if limits is not None else "cpu-fp32"
        words = localize_command(self.gate, target, reference)
        if reference == target.key:
            # Against itself there is nothing to find: an earlier export of the model is the reference.
            return f"To find the first node that departs from an earlier export of the model:\n  {shlex.join(words)} --reference-model=EARLIER.onnx"
        return f"To find the first node where {target.id} departs from {reference}:\n  {shlex.join(words)}"

    def _keep(self, outcome: Outcome) -> None:
        # Through user_properties the outcome reaches the controller under
        # pytest-xdist, and --junitxml, as well as the terminal summary.
        self.request.node.user_properties.append((RESULT_PROPERTY, json.dumps(outcome.__dict__)))


def localize_command(gate: GateSession, target: Target, reference: str) -> list[str]:
    """``python -m pplgate localize`` for one gate target, as its test ran it."""
    src = gate.sources(target.case)
    method = target.case.method
    return ["python", "-m", "pplgate", "localize", f"--model={src.model}", f"--dataset={src.dataset}", f"--tokenizer={src.tokenizer}",
            f"--device={target.device.spec}", f"--precision={target.precision}", f"--reference={reference}",
            f"--grouping={method.grouping}", f"--block-size={method.block_size}", f"--model-dir={src.model_dir}", f"--cache-dir={src.cache_dir}"]


def provenance(report: dict) -> dict:
    """Where a value recorded by --update-golden came from."""
    return {
        "source": "pplgate --update-golden",
        "hardware": report["machine"],
        "device": report["device"],
        "providers": report["providers"],
        "onnxruntime": report["onnxruntime"],
        "onnxruntime_distribution": report["onnxruntime_distribution"],
        "model": report["model"],
        "dataset": report["dataset"],
        "tokenizer": report["tokenizer"],
        "grouping": report["grouping"],
        "rows": report["rows"],
        "batch_size": report["batch_size"],
        "scoring": report["scoring"],
        "date": datetime.date.today().isoformat(),
    }
