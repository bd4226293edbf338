"""``python -m pplgate``: the report, and refusals as one sentence with a non-zero exit."""

import json
import subprocess
import sys

import pytest

from pplgate.cli import main

REQUIRED = {"model", "dataset", "device", "precision", "batch_size", "perplexity", "blocks", "scored_tokens",
            "eval_seconds", "tokens_per_second", "onnxruntime", "providers", "perplexity_stderr", "word_perplexity", "bits_per_byte",
            "forward_seconds", "onnxruntime_distribution", "provider_options", "intra_op_threads"}


def test_report_fields_and_max_blocks(base_args, tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(base_args + ["--batchsize", "2", "--max-blocks", "3", "--report-json", str(path), "--measure-forward"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Final report:\n")
    printed = json.loads(out[len("Final report:\n"):])
    written = json.loads(path.read_text())
    assert printed == written
    assert REQUIRED <= written.keys()
    assert (written["blocks"], written["scored_tokens"], written["batch_size"]) == (3, 3 * 1023, 2)
    assert isinstance(written["perplexity"], float) and written["perplexity"] > 1
    assert written["providers"] == ["CPUExecutionProvider"]
    assert 0 < written["forward_seconds"] and 0 < written["eval_seconds"]


@pytest.mark.parametrize(("device", "provider"), [("gpu", "CUDAExecutionProvider"), ("gcu", "TopsInferenceExecutionProvider")])
def test_missing_provider_is_one_sentence_and_exit_1(base_args, tmp_path, device, provider):
    result = subprocess.run([sys.executable, "-m", "pplgate", *base_args, "--device", device, "--report-json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("pplgate:")]
    assert len(lines) == 1
    assert provider in lines[0] and "CPUExecutionProvider" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--device", "tpu"], "unknown device 'tpu': use one of cpu, gpu, gcu"),
    (["--precision", "int8"], "unknown precision 'int8'"),
    (["--batchsize", "0"], "0 is below 1"),
    (["--max-blocks", "-2"], "-2 is below 1"),
])
def test_bad_arguments_are_usage_errors(base_args, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(base_args + args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
