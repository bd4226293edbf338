"""The throughput tests: pytest-benchmark's records, the verdicts against saved runs, what was timed checked (pytest_pplgate/throughput.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pplgate.history import draw_history, read_history
from saved import STEADY, corrupt, saved_run, write_storage

ROOT = Path(__file__).resolve().parents[1]
# With PPLGATE_TEST_RUN_SECONDS set, every session.run of the scratch project
# takes exactly that long (and scores every token 0), so a run made 20% slower
# is 20% slower whatever else the machine is doing, and the machine is
# reported idle (PPLGATE_TEST_LOADED=1: half its CPU taken by others).  The
# first PPLGATE_TEST_PERTURB runs score 0.001 instead: a timed path that
# computes something else than the accuracy path after it.
FIXED_RUNTIME_CONFTEST = '''
import os, time
import numpy as np
import pytest
from pplgate.conditions import Conditions, Watch
from pplgate.runtime import LMSession

pytest_plugins = ["pytest_pplgate.plugin"]

@pytest.fixture(autouse=True)
def fixed_runtime(monkeypatch):
    seconds = float(os.environ.get("PPLGATE_TEST_RUN_SECONDS", "0"))
    perturbed = [int(os.environ.get("PPLGATE_TEST_PERTURB", "0"))]
    if seconds:
        def run(self, ids):
            time.sleep(seconds)
            loss = 0.001 if perturbed[0] > 0 else 0.0
            perturbed[0] -= 1
            return np.full((ids.shape[0], ids.shape[1] - 1), loss, dtype=np.float32)
        monkeypatch.setattr(LMSession, "token_losses", run)
        share = 0.5 if os.environ.get("PPLGATE_TEST_LOADED") else 0.0
        monkeypatch.setattr(Watch, "stop", lambda self: Conditions(0.1, 0.1, share, None, None, 2))
'''


@pytest.fixture
def bench_project(scratch_gate):
    scratch_gate.ini(devices="cpu")
    scratch_gate.tests("test_perplexity.py", "test_throughput.py", conftest=FIXED_RUNTIME_CONFTEST)
    scratch_gate.case({})

    def run(*args: str, subprocess: bool = False) -> pytest.RunResult:
        return scratch_gate.run("--gate-bench-blocks=2", *args, subprocess=subprocess)

    return scratch_gate.pytester, run


def test_benchmark_json_carries_tokens_per_second_and_perplexity(bench_project):
    pytester, run = bench_project
    out = pytester.path / "out.json"
    run("-k", "mini and cpu and fp32 and throughput", f"--benchmark-json={out}").assert_outcomes(passed=1)
    (bench,) = json.loads(out.read_text())["benchmarks"]
    extra = bench["extra_info"]
    assert bench["group"] == "mini" and bench["name"] == "test_throughput[mini-cpu-fp32]"
    assert extra["tokens_per_second"] == pytest.approx(2 * 1024 / bench["stats"]["mean"])
    assert extra["perplexity"] > 1 and extra["blocks"] == 2 and extra["batch_size"] == 1
    assert extra["providers"] == ["CPUExecutionProvider"] and extra["onnxruntime"]
    assert bench["stats"]["rounds"] == 3


def test_comparison_with_a_saved_run_fails_when_four_times_slower(bench_project, monkeypatch):
    """pytest-benchmark's own comparison of pplgate's records; margins wide enough that a loaded machine's sleeps cannot decide it (90%: pytest-benchmark 4 takes two digits at most)."""
    pytester, run = bench_project
    args = ("-k", "throughput", "--benchmark-storage=file://./bench")
    monkeypatch.setenv("PPLGATE_TEST_RUN_SECONDS", "0.05")
    run(*args, "--benchmark-autosave").assert_outcomes(passed=1)
    same = run(*args, "--benchmark-compare", "--benchmark-compare-fail=mean:90%", subprocess=True)
    assert same.ret == 0
    monkeypatch.setenv("PPLGATE_TEST_RUN_SECONDS", "0.2")
    slower = run(*args, "--benchmark-compare", "--benchmark-compare-fail=mean:90%", subprocess=True)
    assert slower.ret != 0
    assert "Performance has regressed" in slower.stdout.str() + slower.stderr.str()


def test_plot_of_saved_runs(bench_project, tmp_path, cli):
    pytester, run = bench_project
    for _ in range(3):
        run("-k", "throughput", "--benchmark-storage=file://./bench", "--benchmark-autosave", "--gate-bench-rounds=2").assert_outcomes(passed=1)
    png = tmp_path / "history.png"
    assert cli("plot", "--storage", pytester.path / "bench", "-o", png).code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    history = read_history(pytester.path / "bench")
    assert list(history.series) == ["mini-cpu-fp32"]  # the test id, no brackets
    series = history.series["mini-cpu-fp32"]
    assert series.runs == [0, 1, 2] and series.perplexity_change_percent[0] == 0.0
    assert all(std > 0 for std in series.tokens_per_second_std)
    fig = draw_history(history, "t")
    top, bottom = fig.axes
    assert bottom.get_xlabel() == "night (the run's date)" and "timed blocks" in bottom.get_ylabel()
    # Percent change from the first run, drawn without an offset: a 0.01% change reads as 0.01.
    assert not bottom.yaxis.get_major_formatter().get_offset()
    assert bottom.get_legend().get_texts()[0].get_text().startswith("mini-cpu-fp32 (first run: ")


def summary_lines(result: pytest.RunResult) -> list[str]:
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "pplgate throughput, against the saved runs" in line)
    return lines[start + 1 : start + 3]


def test_a_first_run_on_empty_storage_has_nothing_to_compare(bench_project, monkeypatch):
    pytester, run = bench_project
    monkeypatch.setenv("PPLGATE_TEST_RUN_SECONDS", "0.02")
    result = run("-k", "throughput", "--benchmark-storage=file://./bench", "--benchmark-autosave", f"--gate-report={pytester.path / 'r.json'}")
    result.assert_outcomes(passed=1)
    assert summary_lines(result) == ["mini-cpu-fp32: first run on this machine with these settings: nothing to compare",
                                     "pplgate throughput: 1 first run"]
    (record,) = json.loads((pytester.path / "r.json").read_text())["throughput"]
    assert record["verdict"]["kind"] == "first run" and record["conditions"]["under_load"] is False


def test_a_slowdown_beyond_the_noise_is_reported_and_fails_when_asked(bench_project, monkeypatch):
    """The verdict's kind and wording; its figures come from timings and are tested with fixed ones in test_verdicts.py."""
    pytester, run = bench_project
    args = ("-k", "throughput", "--benchmark-storage=file://./bench")
    monkeypatch.setenv("PPLGATE_TEST_RUN_SECONDS", "0.04")
    for saved in range(5):
        autosaved = run(*args, "--benchmark-autosave")
        autosaved.assert_outcomes(passed=1)
        if saved:
            assert summary_lines(autosaved)[0].startswith(f"mini-cpu-fp32: baseline: {saved} of 5 runs saved with these settings on this machine")
    # Judged now; whether within noise depends on the machine's sleeps, so only that it was judged is asserted.
    assert "tokens/s against the median of 5 runs" in summary_lines(run(*args))[0]
    monkeypatch.setenv("PPLGATE_TEST_RUN_SECONDS", "0.12")  # tokens/s cut to a third
    reported = run(*args)
    reported.assert_outcomes(passed=1)
    reported.stdout.fnmatch_lines(["mini-cpu-fp32: slower: -*% ± *% tokens/s against the median of 5 runs (beyond the 10% threshold and 3x the noise)",
                                   "To fail on such slowdowns: --gate-throughput-fail=10 (percent); the history: python -m pplgate history --storage ./bench"])
    failing = run(*args, "--gate-throughput-fail=10")
    failing.assert_outcomes(failed=1)
    failing.stdout.fnmatch_lines(["*mini-cpu-fp32: slower: -*% ± *against the median of 5 runs*--gate-throughput-fail=10%"])
    assert "Traceback" not in failing.stdout.str()
    monkeypatch.setenv("PPLGATE_TEST_LOADED", "1")  # the same slowdown, with another process on the machine
    loaded = run(*args, "--gate-throughput-fail=10")
    loaded.assert_outcomes(passed=1)
    assert summary_lines(loaded)[0].startswith("mini-cpu-fp32: taken under load (other processes took 50% of the CPU): not judged")


def test_a_timed_path_that_computes_something_else_fails(bench_project, monkeypatch):
    pytester, run = bench_project
    monkeypatch.setenv("PPLGATE_TEST_RUN_SECONDS", "0.01")
    monkeypatch.setenv("PPLGATE_TEST_PERTURB", "9")  # the session's probe, the warm-up and 3 timed rounds of 2 blocks; not the accuracy path after
    result = run("-k", "throughput")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mini-cpu-fp32: the timed run's perplexity of its 2 blocks is 1.0010005*, the accuracy path's on the same blocks 1.0 (+0.001 relative, tolerance 1e-06): "
                                 "the timed path computes something else*"])


def test_the_throughput_options_help_reads_as_written(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--gate-throughput-fail=PCT*", "*(default: such slowdowns beyond 10% are only reported)*", "*--gate-drift-fail*"])


@pytest.mark.parametrize("strict", [False, True])
def test_a_throughput_test_that_timed_nothing_never_passes(scratch_gate, strict):
    scratch_gate.ini(devices="cpu")
    scratch_gate.tests("test_throughput.py")
    scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}})
    result = scratch_gate.run("-k", "throughput", "--benchmark-disable", "-rs", *(["--gate-strict"] if strict else []))
    result.assert_outcomes(**({"failed": 1} if strict else {"skipped": 1}))
    result.stdout.fnmatch_lines(["*mini-cpu-fp32: nothing was timed: pytest-benchmark is off (--benchmark-disable, or pytest-xdist*"])


def test_the_gate_sets_a_hostile_saved_run_aside_with_a_warning(pytester, tmp_path):
    """The throughput fixture reads pytest-benchmark's storage too: a run it cannot read is a warning, not an error."""
    storage = write_storage(tmp_path / "bench", [saved_run(s) for s in STEADY] + [corrupt(saved_run(0.5), ["benchmarks", 0, "stats", "median"], "fast")])
    pytester.makeconftest('pytest_plugins = ["pytest_pplgate.plugin"]')
    pytester.makepyfile(test_history="def test_reads(gate_history):\n    assert len(gate_history) == 5\n")
    result = pytester.runpytest_subprocess(f"--benchmark-storage=file://{storage}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*pplgate: set aside *0006_abcdef01_20261127_000000.json: tiny-cpu-fp32: stats.median is \"fast\", not a number*"])
