"""Reports that say what happened: every selected test counted, a cut-short run marked, the result kept when a file cannot be written."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

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


@pytest.mark.parametrize("strict", [["--gate-strict"], ["--strict-gate"], ["-o", "pplgate_strict=true"]])
def test_strict_gate_and_update_golden_together_is_a_usage_error(scratch_gate, strict):
    """However strictness is asked for, the command line or pytest.ini: recording is not gating."""
    scratch_gate.case(COMPUTED)
    result = scratch_gate.run(*strict, "--gate-update-golden")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--gate-update-golden records what this node obtains and --gate-strict (or pplgate_strict in pytest.ini) gates on it: run one, not both*"])


def cli(base_args, *args, limit_bytes=None):
    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "pplgate", "--no-progress", *base_args, "--max-blocks", "1", *args],
                          capture_output=True, text=True, timeout=300, preexec_fn=small_files if limit_bytes else None)


def test_report_json_at_a_folder_keeps_the_result(base_args, tmp_path):
    result = cli(base_args, "--report-json", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout.startswith("Final report:") and '"perplexity"' in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        f"pplgate: error: --report-json: cannot write {tmp_path} (it is a folder): "
        "the result printed above is complete; pass --report-json a file path in a writable folder with room.")


def test_save_losses_under_a_file_keeps_the_result(base_args, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("")
    result = cli(base_args, "--save-losses", str(afile / "losses.npz"))
    assert result.returncode == 1 and '"perplexity"' in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith(f"pplgate: error: --save-losses: cannot make the folder {afile} (File exists")


def test_full_disk_for_the_report_keeps_the_result(base_args, tmp_path):
    result = cli(base_args, "--report-json", str(tmp_path / "r.json"), limit_bytes=600)
    assert result.returncode == 1 and '"perplexity"' in result.stdout
    assert "pplgate: error: --report-json: cannot write" in result.stderr and "File too large" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written
