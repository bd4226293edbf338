"""Data, tokenizer, numerics and interruptions: one sentence, and nothing half-written left."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pplgate.cli import main
from pplgate.fileio import write_atomic
from pplgate.golden import Tolerance, golden_record


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pplgate", "--no-progress", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("pplgate: error:")]


def test_unknown_dataset_id_offline_names_the_option(tokenizer_dir, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = run_cli("--model", "builtin:tiny", "--model-dir", str(tmp_path), "--dataset", "nobody/no-such-dataset",
                     "--tokenizer", tokenizer_dir, "--cache-dir", str(tmp_path / "c"), env=env)
    assert result.returncode == 1
    # HF_HUB_OFFLINE is already set: the sentence does not advise it, and names the fetched folder.
    assert error_lines(result.stderr) == ["pplgate: error: dataset nobody/no-such-dataset cannot be reached: it is not in the Hugging Face cache "
                                          "and HF_HUB_OFFLINE is set: pass --dataset with a local copy of Salesforce/wikitext, "
                                          "or --sources DIR (in the gate --gate-sources=DIR, or $PPLGATE_SOURCES) with a folder 'python -m pplgate fetch DIR' wrote."]
    assert "Traceback" not in result.stderr


def test_unknown_tokenizer_id_offline_names_the_option(dataset_dir, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = run_cli("--model", "builtin:tiny", "--model-dir", str(tmp_path), "--dataset", dataset_dir,
                     "--tokenizer", "nobody/no-such-tokenizer", "--cache-dir", str(tmp_path / "c"), env=env)
    assert result.returncode == 1
    (line,) = error_lines(result.stderr)
    assert "tokenizer nobody/no-such-tokenizer cannot be reached" in line and "pass --tokenizer" in line


def test_split_shorter_than_one_block(tokenizer_dir, tmp_path, capsys):
    folder = tmp_path / "wikitext"
    (folder / "wikitext-2-raw-v1").mkdir(parents=True)
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: wikitext-2-raw-v1\n  data_files:\n  - split: test\n"
                                      "    path: wikitext-2-raw-v1/test-*\n---\n")
    pq.write_table(pa.table({"text": [" = Title = \n", " A short row .\n", ""]}), folder / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet")
    args = ["--model", "builtin:tiny", "--model-dir", str(tmp_path), "--dataset", str(folder), "--tokenizer", tokenizer_dir,
            "--cache-dir", str(tmp_path / "c"), "--no-progress"]
    # The vendor's grouping scores a batch shorter than a block as one short block.
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out[len("Final report:\n"):])
    assert (report["blocks"], report["scored_tokens"], report["rows"]) == (1, 9, 3)
    # Cut contiguously, the same split has no whole block.
    assert main(args + ["--grouping", "contiguous"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith("gives 10 tokens, no block to score: pass --dataset with the full wikitext-2-raw-v1 test split.")


def test_token_ids_outside_a_symbolic_vocabulary(tmp_path, dataset_dir, tokenizer_dir, token_cache, capsys):
    import dataclasses

    from pplgate.testmodel import PRESETS, build_model

    model = build_model(dataclasses.replace(PRESETS["tiny"], vocab_size=1000))
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "vocab"  # the graph no longer says
    onnx.save(model, str(tmp_path / "vocab1000.onnx"))
    assert main(["--model", str(tmp_path / "vocab1000.onnx"), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
                 "--cache-dir", str(token_cache), "--max-blocks", "1", "--no-progress"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    # The session infers the vocabulary the file leaves symbolic, so the mismatch is named before any block runs.
    assert "predicts 1000 tokens, but the tokenizer has 50257: pass --tokenizer" in line


@pytest.mark.parametrize("obtained", [math.inf, math.nan])
def test_infinite_or_nan_perplexity_never_passes(obtained):
    assert not Tolerance(obtained, 29.372, 0.5).passed


def test_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "golden.json"
    path.write_text('{"old": true}')

    def half_then_ctrl_c(f):
        f.write(b'{"new": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_ctrl_c)
    assert path.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["golden.json"]


def test_golden_update_that_fails_keeps_the_file(tmp_path):
    path = tmp_path / "case.json"
    before = json.dumps({"case": "c", "expected": {"cpu-fp32": {"perplexity": 3.0, "rel_tol": 0.1}}})
    path.write_text(before)
    with pytest.raises(TypeError):  # a provenance json cannot write
        report = {"perplexity": 3.1, "blocks": 1, "scored_tokens": 1023, "blocks_sha256": "0" * 64, "model_sha256": "a" * 64, "model_bytes": 1}
        golden_record(path, "cpu-fp16", report, "fp16", {"when": object()})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["case.json"]


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
    time.sleep(3)  # well inside the 276-block evaluation
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "pplgate: interrupted: no report was written." in err and "Traceback" not in err
    assert not report.exists()
    assert [p.name for p in (cache / "tokens").iterdir()] == [next((cache / "tokens").glob("*.npz")).name]
