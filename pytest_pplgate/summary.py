"""The gate's terminal summary and its JSON report, built from test reports.

Outcomes travel in each report's ``user_properties``, so this works the same
under pytest-xdist, where the tests run in workers and this runs in the
controller.
"""

from __future__ import annotations

import datetime
import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from pplgate.verdicts import Verdict
from pytest_pplgate.outcome import (
    RESULT_PROPERTY,
    TARGET_PROPERTY,
    THROUGHPUT_PROPERTY,
    THROUGHPUT_TARGET_PROPERTY,
    Outcome,
)

ORDER = (
    Verdict.PASS,
    Verdict.FAIL,
    Verdict.NO_GOLDEN,
    Verdict.SKIP,
    Verdict.ERROR,
    Verdict.CRASHED,
    Verdict.NOT_RUN,
    Verdict.UPDATED,
)
REASON_WIDTH = 100  # reasons wrap at this width under their test's line, never cut


class GateSummary:
    def __init__(
        self,
        config: pytest.Config,
        report_path: Path | None,
        targets=lambda: [],
        strict: bool = False,
        history: str | None = None,
    ):
        self.config = config
        self.history = history  # --gate-history: the store these runs were judged against, where given
        self.report_path = report_path
        self.strict = strict
        self.targets = (
            targets  # the gate's (case, device, precision) targets, read when xdist reports what it collected
        )
        self.selected: dict[str, str] = {}  # nodeid -> target id of every gate accuracy test selected
        self.outcomes: dict[str, Outcome] = {}  # by nodeid
        self.throughput: dict[str, dict] = {}  # by nodeid: the verdicts of a throughput test
        self.throughput_selected: set[str] = set()  # nodeids of the throughput tests selected
        self.throughput_outcomes: dict[str, Verdict] = {}  # by nodeid: skip, FAIL or error, for those without verdicts
        self.write_error: str | None = None  # --gate-report could not be written: said last
        self.strict_failure: str | None = None  # why --gate-strict failed a run pytest would pass: said last

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # In the process that collected: without xdist, this one.
        for item in session.items:
            props = {k: str(v) for k, v in item.user_properties}
            if props.get(TARGET_PROPERTY) is not None:
                self.selected[item.nodeid] = props[TARGET_PROPERTY]
            if props.get(THROUGHPUT_TARGET_PROPERTY) is not None:
                self.throughput_selected.add(item.nodeid)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        """Under pytest-xdist the controller collects nothing: a worker's ids say what was selected."""
        targets = self._target_ids()
        for nodeid in ids:
            target = _target_of(nodeid, targets, "test_perplexity")
            if target is not None:
                self.selected.setdefault(nodeid, target)
            if _target_of(nodeid, targets, "test_throughput") is not None:
                self.throughput_selected.add(nodeid)

    def _target_ids(self) -> set[str]:
        from pplgate.errors import GoldenError

        try:
            return {t.id for t in self.targets()}
        except GoldenError:  # no golden folder: a usage error says so
            return set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = {k: str(v) for k, v in report.user_properties}
        if THROUGHPUT_PROPERTY in props and report.when == "call":
            self.throughput[report.nodeid] = json.loads(props[THROUGHPUT_PROPERTY])
        if report.nodeid in self.throughput_selected or props.get(THROUGHPUT_TARGET_PROPERTY) is not None:
            self.throughput_selected.add(report.nodeid)
            if report.skipped:
                self.throughput_outcomes[report.nodeid] = Verdict.SKIP
            elif report.failed:
                self.throughput_outcomes.setdefault(
                    report.nodeid, Verdict.FAIL if report.when == "call" else Verdict.ERROR
                )
        target = props.get(TARGET_PROPERTY) or self.selected.get(report.nodeid)
        if target is None:
            return
        if RESULT_PROPERTY in props and report.when == "call":
            self.outcomes[report.nodeid] = Outcome(**json.loads(props[RESULT_PROPERTY]))
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.outcomes[report.nodeid] = Outcome(target, Verdict.SKIP, reason=_without(reason, "Skipped: "))
        elif report.failed and report.nodeid not in self.outcomes:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = _without(crash.message if crash is not None else report.longreprtext.strip(), "Failed: ")
            # pytest-xdist reports a test whose worker died with the phase "???".
            verdict = Verdict.CRASHED if report.when not in ("setup", "call", "teardown") else Verdict.ERROR
            lines = [line for line in reason.strip().splitlines() if line.strip()] or [verdict.value]
            crashed = next((line for line in lines if "crashed" in line), lines[0])
            self.outcomes[report.nodeid] = Outcome(
                target, verdict, reason=crashed if verdict is Verdict.CRASHED else "\n".join(lines)
            )

    def _not_run(self) -> dict[str, Outcome]:
        return {
            n: Outcome(t, Verdict.NOT_RUN, reason="the session ended before it ran")
            for n, t in self.selected.items()
            if n not in self.outcomes
        }

    def all_outcomes(self) -> dict[str, Outcome]:
        """Every selected accuracy test's outcome, by nodeid: its verdict, or "not run"."""
        return self._all()

    def _all(self) -> dict[str, Outcome]:
        return {**self.outcomes, **self._not_run()}

    def counts(self) -> Counter:
        return Counter(o.verdict for o in self._all().values())

    def _throughput_not_run(self) -> list[str]:
        return sorted(self.throughput_selected - set(self.throughput) - set(self.throughput_outcomes))

    def _strict_failure(self) -> str | None:
        """Why --gate-strict fails a run whose tests all passed: a selected gate test that never ran to its end, or
        nothing checked at all."""
        not_run = [o.id for o in self._not_run().values()] + self._throughput_not_run()
        if not_run:
            return (
                f"pplgate: --gate-strict: {len(not_run)} selected gate tests did not run ({', '.join(not_run)}): a run "
                "with --setup-only or --setup-plan, or one stopped early, proves nothing about them; run them."
            )
        counts = self.counts()
        judged = sum(n for verdict, n in counts.items() if verdict is not Verdict.SKIP) + len(self.throughput)
        if (self.selected or self.throughput_selected) and not judged:
            return (
                "pplgate: --gate-strict: nothing was checked: every selected gate test was skipped as not applicable "
                "on any node (their reasons are above); select tests this node can run."
            )
        return None

    def _complete(self, exitstatus: int) -> bool:
        """Whether every selected gate test ran to a verdict: no interruption, no dead worker, none left out."""
        counts = self.counts()
        return exitstatus != pytest.ExitCode.INTERRUPTED and not counts[Verdict.CRASHED] and not counts[Verdict.NOT_RUN]

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter, exitstatus: int) -> None:
        if self.config.option.collectonly:
            return  # nothing was meant to run: no verdicts, and no "not run"
        if self.outcomes or self.selected:
            self._accuracy(terminalreporter, exitstatus)
        if self.throughput or self.throughput_outcomes or self.throughput_selected:
            self._throughput(terminalreporter)
        for last in (self.write_error, self.strict_failure):
            if last is not None:
                terminalreporter.write_line(last, red=True)

    def _throughput(self, tr) -> None:
        """A line per throughput test: its verdict against the saved runs, and any perplexity drift; then the counts."""
        tr.write_sep("-", "pplgate throughput, against the saved runs")
        kinds: Counter = Counter()
        for record in self.throughput.values():
            kinds[record["verdict"]["kind"]] += 1
            tr.write_line(record["verdict"]["sentence"])
            if record["drift"]:
                kinds["perplexity drift"] += 1
                tr.write_line(f"WARNING {record['drift']['sentence']}")
        for nodeid, verdict in self.throughput_outcomes.items():
            if nodeid not in self.throughput:  # no verdict against the history: skipped, failed before or errored
                kinds[verdict.value] += 1
        if self._throughput_not_run():
            kinds[Verdict.NOT_RUN.value] += len(self._throughput_not_run())
        tr.write_line("pplgate throughput: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()))
        if set(kinds) == {Verdict.SKIP.value} and not self.strict:
            tr.write_line("Every throughput test skipped: nothing was timed. Use --gate-strict to make that a failure.")
        if kinds[Verdict.SLOWER.value] and self.config.getoption("pplgate_throughput_fail") is None:
            tr.write_line("To fail on such slowdowns: --gate-throughput-fail=10 (percent)" + self._history_command())

    def _history_command(self) -> str:
        """The history of the storage these runs were compared with, as pytest-benchmark's --benchmark-storage named
        it.
        """
        import shlex

        if self.history is not None:
            from pplgate.redact import redact_url

            shown = redact_url(self.history) if "://" in self.history else self.history
            return f"; the history: python -m pplgate history --storage {shlex.quote(shown)}"
        storage = str(self.config.getoption("benchmark_storage", None) or "file://./.benchmarks")
        if not storage.startswith("file://"):
            return ""  # another storage of pytest-benchmark's: 'pplgate history' reads folders and databases only
        return f"; the history: python -m pplgate history --storage {shlex.quote(storage[len('file://') :])}"

    def _accuracy(self, tr, exitstatus: int) -> None:
        from pplgate.target import Target
        from pytest_pplgate.commands import pytest_command

        tr.write_sep("-", "pplgate")
        header = (
            f"{'test':<28} {'perplexity':>12} {'±':>9} {'expected':>12} {'difference':>11} {'tolerance':>10} "
            f"{'verdict':<9} {'tokens/s':>9}"
        )
        tr.write_line(header)
        outcomes = self._all()
        for o in outcomes.values():
            if o.perplexity is None:
                tr.write_line(f"{o.id:<28} {'':>12} {'':>9} {'':>12} {'':>11} {'':>10} {o.verdict:<9}")
                # Whole, wrapped under the line: the reason is the point, and a log keeps every word.
                for line in textwrap.wrap(o.reason or "", REASON_WIDTH, break_on_hyphens=False, break_long_words=False):
                    tr.write_line(f"    {line}")
                continue
            exp = f"{o.expected:.6g}" if o.expected is not None else "-"
            diff = f"{(o.perplexity - o.expected) / o.expected:+.4%}" if o.expected else "-"
            tol = f"±{o.rel_tol:.3%}" if o.rel_tol is not None else "-"
            err = f"{o.perplexity_stderr:.3g}" if o.perplexity_stderr is not None else "-"
            tr.write_line(
                f"{o.id:<28} {o.perplexity:>12.6g} {err:>9} {exp:>12} {diff:>11} {tol:>10} {o.verdict:<9} "
                f"{o.tokens_per_second:>9.0f}"
            )
        widened_rows = [
            o.id
            for o in outcomes.values()
            if o.perplexity is not None and o.target and Target.parse(o.target).widens_fp16
        ]
        if widened_rows:
            tr.write_line(
                f"{', '.join(widened_rows)}: the CPU provider computes most fp16 operators in fp32: no evidence for a "
                f"device that computes in fp16"
            )
        unpinned = [o for o in self.outcomes.values() if o.model_pinned is False and o.model_sha256]
        for o in unpinned:
            tr.write_line(f"{o.id}: ran model sha256 {o.model_sha256}, which its golden entry does not pin yet")
        counts = self.counts()
        tr.write_line("pplgate: " + ", ".join(f"{counts[v]} {v}" for v in ORDER if counts[v]))
        if not self._complete(exitstatus):
            tr.write_line(
                f"pplgate: INCOMPLETE: {counts[Verdict.CRASHED]} crashed, {counts[Verdict.NOT_RUN]} not run (exit "
                f"status {int(exitstatus)}); "
                "no verdict on those, so this run proves nothing about them."
            )
        to_fix = [o.id for o in outcomes.values() if o.verdict in (Verdict.FAIL, Verdict.NO_GOLDEN)]
        if to_fix:
            command = pytest_command(self.config, "--gate-update-golden", "-k", " or ".join(to_fix))
            tr.write_line(f"To record the obtained values, if they are right: {command}")
        elif unpinned:
            command = pytest_command(self.config, "--gate-update-golden", "-k", " or ".join(o.id for o in unpinned))
            tr.write_line(f"To pin the models that ran, once their values are confirmed: {command}")
        if (
            not self.strict
            and counts[Verdict.SKIP]
            and not (counts[Verdict.PASS] or counts[Verdict.FAIL] or counts[Verdict.ERROR] or counts[Verdict.CRASHED])
        ):
            tr.write_line("Every gate case skipped: nothing was checked. Use --gate-strict to make that a failure.")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):
            return  # the controller judges the whole run
        if self.strict and session.exitstatus == pytest.ExitCode.OK and not self.config.option.collectonly:
            self.strict_failure = self._strict_failure()
            if self.strict_failure is not None:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.report_path is None:
            return
        from pplgate.errors import PplgateError
        from pplgate.fileio import write_json_atomic
        from pplgate.report import commit_info, machine_info

        records = []
        for nodeid, o in self._all().items():
            record = {
                "test": nodeid,
                "id": o.id,
                "verdict": o.verdict.value,
                "perplexity_expected": o.expected,
                "rel_tol": o.rel_tol,
            }
            if o.reason is not None:
                record["reason"] = o.reason
            records.append({**record, **(o.report or {})})
        try:
            write_json_atomic(
                self.report_path,
                {
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "complete": self._complete(exitstatus),
                    "exit_status": int(session.exitstatus),
                    "machine": machine_info(),
                    "commit": commit_info(str(self.config.rootpath)),
                    "counts": {verdict.value: n for verdict, n in self.counts().items()},
                    "results": records,
                    "throughput": list(self.throughput.values()),
                },
            )
        except PplgateError as err:  # pplgate.fileio.WriteFailed: its sentence names the file
            # Said at the end of the summary, which the terminal reporter writes after this hook.
            self.write_error = f"pplgate: error: --gate-report: {err}"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _without(reason: str, prefix: str) -> str:
    """pytest's reason without the prefix it adds ("Skipped: ", "Failed: ")."""
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


def _target_of(nodeid: str, targets: set[str], test: str) -> str | None:
    """The gate test id in a test's nodeid (``...::test_perplexity[gpt2-small-cpu-fp32]``), if it is that test of the
    gate.
    """
    if f"::{test}[" not in nodeid or not nodeid.endswith("]"):
        return None
    param = nodeid[nodeid.index("[") + 1 : -1]
    return param if param in targets else None
