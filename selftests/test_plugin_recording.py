"""A gate run kept in its history, accuracy and throughput as one run (pytest_pplgate/recording.py)."""

from __future__ import annotations

import json

import pytest
from scratch import IDLE_CONFTEST

COMPUTED = {"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}}


@pytest.fixture
def gate(scratch_gate):
    scratch_gate.ini(devices="cpu")
    scratch_gate.tests("test_perplexity.py", "test_throughput.py", conftest=IDLE_CONFTEST)
    scratch_gate.case(COMPUTED, max_blocks=1)
    return scratch_gate


def test_a_run_is_recorded_in_the_database_whole(gate, postgres_url):
    from pplgate.postgres import PostgresStore

    result = gate.run("--gate-bench-blocks=1", "--gate-bench-rounds=1", f"--gate-history={postgres_url}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["pplgate: recorded this run in postgresql://[*][*][*]@/pplgate_*, run 0001"])
    with PostgresStore(postgres_url) as store:
        (run,), _ = store.runs()
        assert [b["extra_info"]["test"] for b in run.data["benchmarks"]] == ["mini-cpu-fp32"]
        records = run.data["pplgate"]["accuracy"]
        assert [r["id"] for *_, r in store.accuracy_rows()] == ["mini-cpu-fp32"]
    assert [(r["id"], r["verdict"], r["case"], r["device"], r["precision"]) for r in records] == [("mini-cpu-fp32", "pass", "mini", "cpu", "fp32")]
    assert records[0]["perplexity"] > 1 and records[0]["model_sha256"] and records[0]["blocks_sha256"]
    # The next night is judged against it: the store is the history.
    again = gate.run("--gate-bench-blocks=1", "--gate-bench-rounds=1", f"--gate-history={postgres_url}")
    again.stdout.fnmatch_lines(["mini-cpu-fp32: baseline: 1 of 5 runs saved*", "pplgate: recorded this run in *, run 0002"])


def test_a_store_that_cannot_be_reached_loses_nothing_and_changes_no_verdict(gate, postgres_url, tmp_path, cli):
    """As a server that is down: the verdicts stand, the run is kept on the node, and push sends it once."""
    down = f"postgresql://postgres:s3cret-pw@/pplgate?host={tmp_path / 'no-server'}"
    result = gate.run("--gate-bench-blocks=1", "--gate-bench-rounds=1", f"--gate-history={down}")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2, warnings=1)
    text = result.stdout.str()
    assert "s3cret-pw" not in text
    result.stdout.fnmatch_lines(["*pplgate: the history cannot connect to postgresql://[*][*][*]@/pplgate?host=*: judged against the runs "
                                 "pytest-benchmark saved on this node instead*",
                                 "pplgate: this run was not recorded in the history (cannot connect to postgresql://[*][*][*]@/pplgate?host=* "
                                 "it is kept in *.benchmarks/.pplgate/pending/*.json: send it with 'python -m pplgate history push "
                                 "--storage *' once the store takes it (the next run that reaches it sends it too). The verdicts above stand."])
    local = gate.path / ".benchmarks"
    pushed = cli("history", "push", "--storage", postgres_url, "--from", local)
    assert pushed.code == 0 and pushed.out.splitlines()[-1].startswith("1 runs to postgresql://***@/"), pushed.out
    assert cli("history", "push", "--storage", postgres_url, "--from", local).out.splitlines()[-1].startswith("0 runs to")
    assert not list((local / ".pplgate" / "pending").glob("*.json"))


def test_a_run_pytest_benchmark_saves_carries_its_accuracy_results(gate):
    gate.run("--gate-bench-blocks=1", "--gate-bench-rounds=1", "--benchmark-autosave").assert_outcomes(passed=2)
    (saved,) = (gate.path / ".benchmarks").rglob("*.json")
    data = json.loads(saved.read_text())
    assert [r["id"] for r in data["pplgate"]["accuracy"]] == ["mini-cpu-fp32"] and data["pplgate"]["run_id"]
    assert [b["extra_info"]["test"] for b in data["benchmarks"]] == ["mini-cpu-fp32"]


@pytest.mark.filterwarnings("ignore:Not saving anything")  # pytest-benchmark's, of the run inside
def test_a_night_without_throughput_tests_is_kept_all_the_same(gate, cli):
    """pytest-benchmark saves nothing when no benchmark ran: pplgate writes the night's accuracy results itself."""
    result = gate.run("-k", "not throughput", "--benchmark-autosave")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pplgate: recorded this run in *.benchmarks/*/0001_*_pplgate.json"])
    history = cli("history", "--storage", gate.path / ".benchmarks")
    assert history.error.startswith("pplgate: error: the runs under") and "hold no pplgate throughput benchmarks" in history.error


def test_a_folder_history_gets_the_run_in_pytest_benchmarks_layout(gate, tmp_path):
    store = tmp_path / "fleet"
    gate.run("--gate-bench-blocks=1", "--gate-bench-rounds=1", f"--gate-history={store}").assert_outcomes(passed=2)
    (saved,) = store.rglob("*.json")
    data = json.loads(saved.read_text())
    assert saved.name.startswith("0001_") and data["machine_info"]["node"] and data["pplgate"]["accuracy"][0]["verdict"] == "pass"
    assert data["benchmarks"][0]["stats"]["median"] > 0
