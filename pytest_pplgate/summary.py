"""The gate's terminal summary and its JSON report, built from test reports.

Outcomes travel in each report's ``user_properties``, so this works the same
under pytest-xdist, where the tests run in workers and this runs in the
controller.
"""

from __future__ import annotations

import datetime
import json
import shlex
from collections import Counter
from pathlib import Path

import pytest

from pplgate.fileio import write_json_atomic
from pplgate.report import commit_info, machine_info
from pytest_pplgate.check import RESULT_PROPERTY, Outcome, source_args
from pytest_pplgate.throughput import THROUGHPUT_PROPERTY

TARGET_PROPERTY = "pplgate_target"


class GateSummary:
    def __init__(self, config: pytest.Config, report_path: Path | None):
        self.config = config
        self.report_path = report_path
        self.outcomes: dict[str, Outcome] = {}  # by nodeid
        self.throughput: dict[str, dict] = {}  # by nodeid: the verdicts of a throughput test

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = {k: v for k, v in report.user_properties}
        if THROUGHPUT_PROPERTY in props and report.when == "call":
            self.throughput[report.nodeid] = json.loads(props[THROUGHPUT_PROPERTY])
        target = props.get(TARGET_PROPERTY)
        if target is None:
            return
        if RESULT_PROPERTY in props and report.when == "call":
            self.outcomes[report.nodeid] = Outcome(**json.loads(props[RESULT_PROPERTY]))
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.outcomes[report.nodeid] = Outcome(target, "skip", report={"reason": _without(reason, "Skipped: ")})
        elif report.failed and report.nodeid not in self.outcomes:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = _without(crash.message if crash is not None else report.longreprtext.strip(), "Failed: ")
            self.outcomes[report.nodeid] = Outcome(target, "error", report={"reason": reason})

    def counts(self) -> Counter:
        return Counter(o.verdict for o in self.outcomes.values())

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.outcomes:
            self._accuracy(terminalreporter)
        if self.throughput:
            self._throughput(terminalreporter)

    def _throughput(self, tr) -> None:
        """A line per throughput test: its verdict against the saved runs, and any perplexity drift."""
        tr.write_sep("-", "pplgate throughput, against the saved runs")
        kinds = Counter()
        for record in self.throughput.values():
            kinds[record["verdict"]["kind"]] += 1
            tr.write_line(record["verdict"]["sentence"])
            if record["drift"]:
                kinds["perplexity drift"] += 1
                tr.write_line(f"WARNING {record['drift']['sentence']}")
        tr.write_line("pplgate throughput: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()))
        if kinds["slower"] and self.config.getoption("pplgate_throughput_fail") is None:
            tr.write_line("To fail on such slowdowns: --gate-throughput-fail=10 (percent); the history: python -m pplgate history --storage .benchmarks")

    def _accuracy(self, tr) -> None:
        tr.write_sep("-", "pplgate")
        header = f"{'test':<28} {'perplexity':>12} {'±':>9} {'expected':>12} {'difference':>11} {'tolerance':>10} {'verdict':<9} {'tokens/s':>9}"
        tr.write_line(header)
        for o in self.outcomes.values():
            if o.perplexity is None:
                # What is wrong, without what to do: -rs and the failure show the whole sentence.
                reason = (o.report or {}).get("reason", "").split(": ")[0]
                tr.write_line(f"{o.id:<28} {'':>12} {'':>9} {'':>12} {'':>11} {'':>10} {o.verdict:<9} {'':>9}  {reason[:90]}")
                continue
            exp = f"{o.expected:.6g}" if o.expected is not None else "-"
            diff = f"{(o.perplexity - o.expected) / o.expected:+.4%}" if o.expected else "-"
            tol = f"±{o.rel_tol:.3%}" if o.rel_tol is not None else "-"
            err = f"{o.perplexity_stderr:.3g}" if o.perplexity_stderr is not None else "-"
            tr.write_line(f"{o.id:<28} {o.perplexity:>12.6g} {err:>9} {exp:>12} {diff:>11} {tol:>10} {o.verdict:<9} {o.tokens_per_second:>9.0f}")
        unpinned = [o for o in self.outcomes.values() if o.model_pinned is False and o.model_sha256]
        for o in unpinned:
            tr.write_line(f"{o.id}: ran model sha256 {o.model_sha256}, which its golden entry does not pin yet")
        counts = self.counts()
        order = ("pass", "FAIL", "no golden", "skip", "error", "updated")
        tr.write_line("pplgate: " + ", ".join(f"{counts[v]} {v}" for v in order if counts[v]))
        to_fix = [nodeid for nodeid, o in self.outcomes.items() if o.verdict in ("FAIL", "no golden")]
        if to_fix:
            ids = " or ".join(self.outcomes[n].id for n in to_fix)
            command = shlex.join(["pytest", *source_args(self.config), "--update-golden", "-k", ids])
            tr.write_line(f"To record the obtained values, if they are right: {command}")
        elif unpinned:
            ids = " or ".join(o.id for o in unpinned)
            command = shlex.join(["pytest", *source_args(self.config), "--update-golden", "-k", ids])
            tr.write_line(f"To pin the models that ran, once their values are confirmed: {command}")
        if counts["skip"] and not (counts["pass"] or counts["FAIL"] or counts["error"]):
            tr.write_line("Every gate case skipped: nothing was checked. Use --strict-gate to make that a failure.")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.report_path is None or hasattr(self.config, "workerinput"):
            return
        records = []
        for nodeid, o in self.outcomes.items():
            record = {"test": nodeid, "id": o.id, "verdict": o.verdict, "perplexity_expected": o.expected, "rel_tol": o.rel_tol}
            records.append({**record, **(o.report or {})})
        write_json_atomic(self.report_path, {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "commit": commit_info(str(self.config.rootpath)),
            "counts": dict(self.counts()),
            "results": records,
            "throughput": list(self.throughput.values()),
        })


def _without(reason: str, prefix: str) -> str:
    """pytest's reason without the prefix it adds ("Skipped: ", "Failed: ")."""
    return reason[len(prefix):] if reason.startswith(prefix) else reason
