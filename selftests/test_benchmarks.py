"""Throughput records: pytest-benchmark's JSON, its comparison with history, and the plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pplgate.cli import main
from pplgate.history import draw_history, read_history

pytest_plugins = ["pytester"]

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


def test_plot_of_saved_runs(bench_project, tmp_path):
    pytester, run = bench_project
    for _ in range(3):
        run("-k", "throughput", "--benchmark-storage=file://./bench", "--benchmark-autosave", "--gate-bench-rounds=2").assert_outcomes(passed=1)
    png = tmp_path / "history.png"
    assert main(["plot", "--storage", str(pytester.path / "bench"), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    history = read_history(pytester.path / "bench")
    assert list(history.series) == ["mini-cpu-fp32"]  # the test id, no brackets
    series = history.series["mini-cpu-fp32"]
    assert series.runs == [0, 1, 2] and series.perplexity_change_percent[0] == 0.0
    assert all(std > 0 for std in series.tokens_per_second_std)
    fig = draw_history(history, "t")
    top, bottom = fig.axes
    assert list(bottom.get_xticks()) == [0, 1, 2]
    labels = [t.get_text() for t in bottom.get_xticklabels()]
    # Each run by its saved number (as --benchmark-compare=0001 names it) and date.
    assert [label.split("\n")[0] for label in labels] == [f"000{i} {r.datetime[:16].replace('T', ' ')}" for i, r in enumerate(history.runs, 1)]
    # Percent change from the first run, drawn without an offset: a 0.01% change reads as 0.01.
    assert not bottom.yaxis.get_major_formatter().get_offset()
    assert bottom.get_legend().get_texts()[0].get_text().startswith("mini-cpu-fp32 (first run: ")


def test_plot_without_saved_runs_is_one_sentence(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pplgate", "plot", "--storage", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"pplgate: error: no saved benchmark runs under {tmp_path}: run the gate with --benchmark-autosave first, or pass --storage with pytest-benchmark's folder."


def test_cache_hit_needs_neither_datasets_nor_transformers(dataset_dir, tokenizer_dir, token_cache, tokens):
    code = (f"import sys; from pplgate.data import load_tokens; t = load_tokens({dataset_dir!r}, {tokenizer_dir!r}, {str(token_cache)!r}); "
            "print(t.cache_hit, 'datasets' in sys.modules, 'transformers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["True", "False", "False"]


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
