"""The gate's summary and --gate-report: every selected test counted, a cut-short run marked, the command that fixes what it reports."""

from __future__ import annotations

import json

import pytest

PLUGIN = 'pytest_plugins = ["pytest_pplgate.plugin"]\n'
COMPUTED = {"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}, "cpu-fp16": {"relative_to": "cpu-fp32", "rel_tol": 0.01}}


def test_a_killed_worker_is_counted_crashed_and_the_report_incomplete(scratch_gate):
    scratch_gate.tests("test_perplexity.py", conftest=PLUGIN + (
        "import os, signal\n"
        "def pytest_runtest_setup(item):\n"
        "    if 'cpu-fp16' in item.nodeid and os.environ.get('PYTEST_XDIST_WORKER'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"))
    scratch_gate.ini(devices="cpu", precisions="fp32 fp16")
    scratch_gate.case(COMPUTED, max_blocks=1)
    report = scratch_gate.path / "gate.json"
    result = scratch_gate.run("-n", "2", f"--gate-report={report}", subprocess=True)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["pplgate: 1 pass, 1 crashed", "pplgate: INCOMPLETE: 1 crashed, 0 not run (exit status 1)*"])
    data = json.loads(report.read_text())
    assert data["complete"] is False and data["exit_status"] == 1
    assert data["counts"] == {"pass": 1, "crashed": 1}
    crashed = next(r for r in data["results"] if r["verdict"] == "crashed")
    assert crashed["id"] == "mini-cpu-fp16" and "crashed" in crashed["reason"]


def test_ctrl_c_marks_the_report_cut_short(scratch_gate):
    scratch_gate.tests("test_perplexity.py", conftest=PLUGIN + (
        "def pytest_runtest_setup(item):\n"
        "    if 'cpu-fp16' in item.nodeid:\n"
        "        raise KeyboardInterrupt\n"))
    scratch_gate.ini(devices="cpu", precisions="fp32 fp16")
    scratch_gate.case(COMPUTED, max_blocks=1)
    report = scratch_gate.path / "gate.json"
    result = scratch_gate.run(f"--gate-report={report}", subprocess=True)
    assert result.ret == 2
    data = json.loads(report.read_text())
    assert data["complete"] is False and data["exit_status"] == 2
    assert data["counts"] == {"pass": 1, "not run": 1}
    result.stdout.fnmatch_lines(["pplgate: INCOMPLETE: 0 crashed, 1 not run (exit status 2)*"])


def test_complete_run_says_so(scratch_gate):
    scratch_gate.ini(devices="cpu gcu")
    scratch_gate.case(COMPUTED, max_blocks=1)
    report = scratch_gate.path / "gate.json"
    scratch_gate.run(f"--gate-report={report}").assert_outcomes(passed=1, skipped=1)
    data = json.loads(report.read_text())
    assert data["complete"] is True and data["exit_status"] == 0
    skipped = next(r for r in data["results"] if r["verdict"] == "skip")
    assert skipped["reason"].startswith("TopsInferenceExecutionProvider (device gcu) is not in this onnxruntime")


def test_unwritable_gate_report_is_one_sentence_and_exit_1(scratch_gate):
    scratch_gate.ini(devices="cpu")
    scratch_gate.case(COMPUTED, max_blocks=1)
    folder = scratch_gate.path / "out"
    folder.mkdir()
    result = scratch_gate.run(f"--gate-report={folder}", subprocess=True)
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"pplgate: error: --gate-report: cannot write {folder} (it is a folder): choose a path in a writable folder with room."])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("strict", [["--gate-strict"], ["-o", "pplgate_strict=true"]])
def test_strict_gate_and_update_golden_together_is_a_usage_error(scratch_gate, strict):
    """However strictness is asked for, the command line or pytest.ini: recording is not gating."""
    scratch_gate.case(COMPUTED)
    result = scratch_gate.run(*strict, "--gate-update-golden")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--gate-update-golden records what this node obtains and --gate-strict (or pplgate_strict in pytest.ini) gates on it: run one, not both*"])


def test_summary_reasons_wrap_whole(scratch_gate):
    scratch_gate.ini(devices="gcu")
    scratch_gate.case({})
    result = scratch_gate.run()
    result.assert_outcomes(skipped=1)
    summary = result.stdout.str().split("- pplgate -")[1]
    text = " ".join(line.strip() for line in summary.splitlines() if line.startswith("    "))
    assert "install Enflame's onnxruntime build (TopsInference) to test gcu." in text


def test_a_cpu_fp16_row_says_what_computed_it(scratch_gate):
    scratch_gate.ini(devices="cpu", precisions="fp16")
    scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5},
                       "cpu-fp16": {"relative_to": "cpu-fp32", "rel_tol": 0.01}}, max_blocks=1)
    result = scratch_gate.run(f"--gate-report={scratch_gate.path / 'r.json'}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mini-cpu-fp16: the CPU provider computes most fp16 operators in fp32: no evidence for a device that computes in fp16"])
    (record,) = json.loads((scratch_gate.path / "r.json").read_text())["results"]
    assert record["computed_as"].startswith("onnxruntime's fp16 conversion, most of whose operators CPUExecutionProvider computes in fp32")


def test_the_counts_are_pytests_throughput_tests_included(scratch_gate):
    """pytest counts every skipped test: the summary says which were accuracy and which throughput."""
    scratch_gate.ini(devices="gcu")
    scratch_gate.tests("test_perplexity.py", "test_throughput.py")
    scratch_gate.case({})
    result = scratch_gate.run()
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["pplgate: 1 skip", "*", "pplgate throughput: 1 skip"])


@pytest.mark.parametrize("option", ["--setup-only", "--setup-plan"])
def test_a_strict_run_that_ran_no_test_fails(scratch_gate, option):
    """As found: --gate-strict --setup-only said INCOMPLETE and exited 0; CI reads the status."""
    scratch_gate.tests("test_perplexity.py", "test_throughput.py")
    scratch_gate.ini(devices="cpu")
    scratch_gate.case(COMPUTED, max_blocks=1)
    report = scratch_gate.path / "gate.json"
    result = scratch_gate.run("-k", "cpu and fp32", "--gate-strict", option, f"--gate-report={report}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["pplgate: --gate-strict: 2 selected gate tests did not run (mini-cpu-fp32, test_bench.py::test_throughput[[]mini-cpu-fp32[]]): a run with --setup-only or --setup-plan, or one stopped early, proves nothing about them; run them."])
    assert json.loads(report.read_text())["exit_status"] == 1
    assert scratch_gate.run("-k", "cpu and fp32", option).ret == pytest.ExitCode.OK  # not strict: INCOMPLETE, said


def test_a_strict_run_that_checked_nothing_fails(scratch_gate):
    """Every selected test inapplicable (tf32 off CUDA): each a skip, strict or not, but a strict run of them fails."""
    scratch_gate.ini(devices="cpu", precisions="tf32")
    scratch_gate.case({})
    result = scratch_gate.run("--gate-strict")
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["pplgate: --gate-strict: nothing was checked: every selected gate test was skipped as not applicable on any node (their reasons are above); select tests this node can run."])


@pytest.mark.filterwarnings("ignore:Not saving anything")  # pytest-benchmark's, of the run inside
def test_the_readmes_nightly_throughput_command_fails_when_it_checks_nothing(scratch_gate):
    """As found: the README's nightly throughput command on a node without its sources: 18 skips, exit 0, not a word."""
    scratch_gate.tests("test_perplexity.py", "test_throughput.py")
    scratch_gate.ini(devices="cpu")
    scratch_gate.case(COMPUTED, model="/nonexistent/model.onnx", max_blocks=1)
    command = ["-k", "throughput", "--benchmark-autosave", "--gate-throughput-fail=10"]
    result = scratch_gate.run(*command)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["Every throughput test skipped: nothing was timed. Use --gate-strict to make that a failure."])
    assert scratch_gate.run(*command, "--gate-strict").ret == pytest.ExitCode.TESTS_FAILED
