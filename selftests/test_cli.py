"""``python -m pplgate``: the report, its subcommands, and refusals as one sentence with a non-zero exit."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from pplgate.cli import COMMANDS
from pplgate.method import VENDOR_MODEL_URL

REQUIRED = {"model", "dataset", "device", "precision", "batch_size", "perplexity", "blocks", "scored_tokens",
            "eval_seconds", "tokens_per_second", "onnxruntime", "providers", "perplexity_stderr", "word_perplexity", "bits_per_byte",
            "forward_seconds", "onnxruntime_distribution", "provider_options", "intra_op_threads", "computed_as", "model_sha256", "blocks_sha256"}


def test_report_fields_and_max_blocks(base_args, tmp_path, cli):
    path = tmp_path / "r.json"
    ran = cli(*base_args, "--batchsize", "2", "--max-blocks", "3", "--report-json", path, "--measure-forward")
    assert ran.code == 0 and ran.out.startswith("Final report:\n")
    written = json.loads(path.read_text())
    assert ran.report == written
    assert REQUIRED <= written.keys()
    assert (written["blocks"], written["scored_tokens"], written["batch_size"]) == (3, 3 * 1023, 2)
    assert isinstance(written["perplexity"], float) and written["perplexity"] > 1
    assert written["providers"] == ["CPUExecutionProvider"]
    assert 0 < written["forward_seconds"] and 0 < written["eval_seconds"]


@pytest.mark.parametrize(("device", "provider"), [("gpu", "CUDAExecutionProvider"), ("gcu", "TopsInferenceExecutionProvider")])
def test_a_missing_provider_is_one_sentence_and_exit_1(base_args, tmp_path, cli, device, provider):
    line = cli(*base_args, "--device", device, "--report-json", tmp_path / "r.json").error
    assert provider in line and "CPUExecutionProvider" in line
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--device", "tpu"], "unknown device 'tpu': use one of cpu, gpu, gcu"),
    (["--precision", "int8"], "unknown precision 'int8'"),
    (["--batchsize", "0"], "0 is below 1"),
    (["--max-blocks", "-2"], "-2 is below 1"),
    (["--intra-op-threads", "2000"], f"2000 threads is more than this machine's {os.cpu_count()} CPUs"),
    (["localize", "--tolerance", "nan"], "is not a relative error above 0"),
    (["localize", "--tolerance", "0"], "is not a relative error above 0"),
])
def test_bad_arguments_are_usage_errors(base_args, cli, args, message):
    ran = cli(*(args if args[0] == "localize" else base_args + args))
    assert ran.code == 2 and message in ran.err


def test_the_subcommands_are_one_mapping(cli):
    assert sorted(COMMANDS) == ["convert", "diff", "fetch", "history", "localize", "plot"]
    for name in COMMANDS:
        ran = cli(name, "--help")
        assert ran.code == 0 and ran.out.startswith(f"usage: python -m pplgate {name}")


def test_help_hides_the_vendor_urls_key_and_signature(cli):
    shown = cli("--help").out
    assert "AKIDYyBAwXzDD1e4GEzZUBgy2iDU5TeaIVUG" not in shown and "143a3bbaf9de6b76c0b2f11b4d40a71dc5eaad75" not in shown
    assert "AKIDYyBAwXzDD1e4GEzZUBgy2iDU5TeaIVUG" in VENDOR_MODEL_URL  # the address itself still carries them


def test_a_required_option_says_no_default(cli):
    assert "(default: None)" not in cli("convert", "--help").out


def test_a_file_name_with_control_characters_is_printed_escaped(base_args, tmp_path, cli):
    """A newline or a terminal escape in a name must not forge a line of output."""
    assert "evil\\nPASSED all 10 checks\\x1b[2K.onnx does not exist" in cli(*base_args, "--model", tmp_path / "evil\nPASSED all 10 checks\x1b[2K.onnx").error


def test_a_report_file_that_cannot_be_written_keeps_the_printed_result(base_args, tmp_path, cli):
    ran = cli(*base_args, "--max-blocks", "1", "--report-json", tmp_path)
    assert ran.out.startswith("Final report:") and '"perplexity"' in ran.out
    assert ran.error == (f"pplgate: error: --report-json: cannot write {tmp_path} (it is a folder): "
                         "the result printed above is complete; pass --report-json a file path in a writable folder with room.")
    afile = tmp_path / "a-file"
    afile.write_text("")
    ran = cli(*base_args, "--max-blocks", "1", "--save-losses", afile / "losses.npz")
    assert '"perplexity"' in ran.out and ran.error.startswith(f"pplgate: error: --save-losses: cannot make the folder {afile}")


def process(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pplgate", *args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.e2e
def test_a_full_disk_for_the_report_keeps_the_result(base_args, tmp_path):
    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))

    result = process(*base_args, "--max-blocks", "1", "--report-json", str(tmp_path / "r.json"), preexec_fn=small_files)
    assert result.returncode == 1 and '"perplexity"' in result.stdout
    assert "pplgate: error: --report-json: cannot write" in result.stderr and "File too large" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == []  # nothing half-written


@pytest.mark.e2e
def test_a_result_that_cannot_be_printed_is_named_and_the_report_file_kept(base_args, tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "pplgate", *base_args, "--max-blocks", "1", "--report-json", str(tmp_path / "r.json")],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("pplgate: error: cannot write the result to standard output (/dev/full: No space left on device)")
    assert json.loads((tmp_path / "r.json").read_text())["blocks"] == 1


@pytest.mark.e2e
def test_a_closed_standard_output_is_refused():
    result = subprocess.run([sys.executable, "-m", "pplgate", "history"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                            preexec_fn=lambda: os.close(1))
    assert result.returncode == 1
    assert result.stderr.strip() == "pplgate: error: standard output is closed, so the result would be lost: run with it open, or redirected to a file."


@pytest.mark.e2e
def test_ctrl_c_while_importing_is_exit_130_without_traceback():
    # Ctrl-C lands while python -m pplgate imports its modules: simulated by an import that raises it.
    code = ("import builtins, runpy, sys\n"
            "real = builtins.__import__\n"
            "def slow(name, *a, **k):\n"
            "    if name == 'pplgate.options':\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = slow\n"
            "sys.argv = ['pplgate']\n"
            "runpy.run_module('pplgate', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130
    assert result.stderr.strip() == "pplgate: interrupted while starting: nothing was run or written."


@pytest.mark.e2e
def test_ctrl_c_during_a_run_writes_no_report(tmp_path, dataset_dir, tokenizer_dir, model_dir, tokens):
    report, cache = tmp_path / "r.json", tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "pplgate", "--model", "builtin:tiny", "--model-dir", str(model_dir),
                             "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, "--cache-dir", str(cache),
                             "--report-json", str(report), "--no-progress"], stderr=subprocess.PIPE, text=True,
                            # A shell's background job inherits SIGINT ignored, and Python then never turns it into
                            # KeyboardInterrupt: Ctrl-C as a terminal delivers it, whoever started this suite.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(cache.glob("tokens/*.npz")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # well inside the 274-block evaluation
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "pplgate: interrupted: no report was written." in err and "Traceback" not in err
    assert not report.exists()
    assert [p.name for p in (cache / "tokens").iterdir()] == [next((cache / "tokens").glob("*.npz")).name]


@pytest.mark.e2e
def test_the_cli_builds_models_where_the_gate_does_whatever_the_folder(dataset_dir, tokenizer_dir, tmp_path):
    from pplgate.fileio import default_model_dir

    result = subprocess.run([sys.executable, "-m", "pplgate", "--model", "builtin:tiny", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
                             "--max-blocks", "1", "--no-progress", "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "model").exists()
    assert (default_model_dir() / json.loads(result.stdout.split("Final report:\n", 1)[1])["model_file"]).is_file()


@pytest.mark.parametrize("option", ["--report-json", "--save-losses"])
def test_no_output_is_written_over_a_golden_case(option, base_args, tmp_path, cli):
    """As found: the CLI's --report-json and --save-losses overwrote golden files; refused before anything runs."""
    golden = tmp_path / "golden"
    golden.mkdir()
    case = golden / "tiny.json"
    case.write_text('{"case": "tiny", "expected": {}}')
    for path in (case, golden / "new.json"):
        assert cli(*base_args, option, path).error == (
            f"pplgate: error: {option} {path} is in a folder of golden case files ({golden}), where it would replace or add a "
            "case: write it elsewhere (golden files change only through --gate-update-golden).")
    assert case.read_text() == '{"case": "tiny", "expected": {}}' and sorted(p.name for p in golden.iterdir()) == ["tiny.json"]
