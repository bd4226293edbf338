"""The gate under pytest-xdist: sessions per worker, cards per worker, one summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(scratch_gate):
    for name in ("one", "two"):
        scratch_gate.case({}, name=name, max_blocks=1)
    return scratch_gate.pytester, (*scratch_gate.source_args, "-p", "no:cacheprovider")


def test_two_workers_one_summary_and_options_recorded(project):
    pytester, args = project
    report = pytester.path / "gate.json"
    pytester.runpytest_subprocess(*args, "-n", "2", "--gate-update-golden", "-k", "cpu").assert_outcomes(passed=2)
    result = pytester.runpytest_subprocess(*args, "-n", "2", "--gate-intra-op-threads=1", f"--gate-report={report}")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["pplgate: 2 pass, 2 skip"])
    records = [r for r in json.loads(report.read_text())["results"] if r["verdict"] == "pass"]
    assert len(records) == 2
    for r in records:
        assert r["intra_op_threads"] == 1
        assert r["provider_options"] == {} and r["provider_options_effective"] == {}  # the CPU provider takes none


def test_workers_get_their_own_card(project):
    pytester, args = project
    # Each test writes which card its worker's gcu targets use (xdist keeps workers' output to itself).
    pytester.makepyfile(test_cards=f"""
from pathlib import Path
import pytest

@pytest.mark.parametrize("n", range(4))
def test_card(gate, n):
    t = [t for t in gate.settings.targets() if t.device.kind.name == "gcu"][0]
    (Path({str(pytester.path)!r}) / f"card-{{gate.settings.worker}}-{{n}}").write_text(t.device.spec)
""")
    # --dist=each: every worker runs every test, so both workers surely report.
    result = pytester.runpytest_subprocess(*args, "-n", "2", "--dist=each", "--gate-cards=2", "-k", "card")
    result.assert_outcomes(passed=8)
    seen = {p.name.split("-")[1]: p.read_text() for p in pytester.path.glob("card-*")}
    assert seen == {"0": "gcu:0", "1": "gcu:1"}
