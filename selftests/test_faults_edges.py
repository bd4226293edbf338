"""A gate that passes only what it should, at the edges: nothing timed, non-finite results, strictness from pytest.ini, files that are not files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pplgate.devices import parse_device
from pplgate.errors import PplgateError
from pplgate.fileio import WriteFailed, write_atomic
from pplgate.golden import golden_record
from pplgate.localize import Side, localize
from pplgate.verdicts import timing_of

pytest_plugins = ["pytester"]

CPU = parse_device("cpu")
COMPUTED = {"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}}


@pytest.mark.parametrize("strict", [False, True])
def test_a_throughput_test_that_timed_nothing_never_passes(scratch_gate, strict):
    scratch_gate.ini(devices="cpu")
    scratch_gate.tests("test_throughput.py")
    scratch_gate.case(COMPUTED)
    result = scratch_gate.run("-k", "throughput", "--benchmark-disable", "-rs", *(["--gate-strict"] if strict else []))
    result.assert_outcomes(**({"failed": 1} if strict else {"skipped": 1}))
    result.stdout.fnmatch_lines(["*mini-cpu-fp32: nothing was timed: pytest-benchmark is off (--benchmark-disable, or pytest-xdist*"])


def test_a_non_finite_perplexity_is_never_recorded(tmp_path):
    path = tmp_path / "c.json"
    text = json.dumps({"case": "c", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"}, "expected": {}})
    path.write_text(text)
    with pytest.raises(PplgateError, match=r"the obtained perplexity for cpu-fp32 is inf, which is never recorded"):
        golden_record(path, "cpu-fp32", {"perplexity": float("inf")}, "fp32", {})
    assert path.read_text() == text


def test_the_gate_report_never_replaces_a_case_file(scratch_gate):
    case = scratch_gate.case(COMPUTED)
    before = case.read_text()
    result = scratch_gate.run(f"--gate-report={case}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --gate-report {case} is in the golden folder *: write the report elsewhere*"])
    assert case.read_text() == before


def test_more_threads_than_cpus_is_refused():
    result = subprocess.run([sys.executable, "-m", "pplgate", "--intra-op-threads", "2000"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"2000 threads is more than this machine's {os.cpu_count()} CPUs" in result.stderr


def test_a_pipe_is_never_replaced_by_a_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(WriteFailed, match=r"it is not a regular file but a device, pipe or socket"):
        write_atomic(fifo, lambda f: f.write(b"{}"))
    assert fifo.is_fifo()


def _all_nan(tiny_model: Path, path: Path) -> Path:
    """The tiny model whose logits are multiplied by NaN."""
    model = onnx.load(str(tiny_model))
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    model.graph.initializer.append(helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]))
    model.graph.node.append(helper.make_node("Mul", ["logits_raw", "nan"], ["logits"], name="head/poison"))
    onnx.save(model, str(path))
    return path


def test_localize_finds_where_nan_starts(tiny_model, blocks, tmp_path):
    loc = localize(Side.of(_all_nan(tiny_model, tmp_path / "nan.onnx"), CPU, "fp32"), Side.of(tiny_model, CPU, "fp32"), blocks.head(1))
    assert loc.session_diverges is True
    first = loc.first_divergence
    assert first is not None and first.node == "head/poison"


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf"])
def test_localize_refuses_a_tolerance_that_compares_nothing(value, capsys):
    from pplgate.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["localize", "--tolerance", value])
    assert exit_.value.code == 2
    assert "is not a relative error above 0" in capsys.readouterr().err or "is not a number" in capsys.readouterr().err


@pytest.mark.parametrize("median", [float("nan"), 0.0, -0.5])
def test_a_run_with_no_real_time_is_never_judged(median):
    """Named as unreadable, so history and the gate set the run aside and say so."""
    from pplgate.verdicts import UnreadableRun

    bench = {"stats": {"median": median, "stddev": 0.01, "rounds": 3}, "extra_info": {"test": "t", "tokens": 4096}}
    with pytest.raises(UnreadableRun, match="t: stats.median is"):
        timing_of(bench, "0001", "", "", "node")
    with pytest.raises(UnreadableRun, match="t: extra_info.tokens is 0.0"):
        timing_of({**bench, "stats": {**bench["stats"], "median": 0.5}, "extra_info": {"test": "t", "tokens": 0}}, "0001", "", "", "node")


def test_a_numpy_reference_of_a_model_pplgate_did_not_build_is_one_sentence(tiny_model, blocks, tmp_path):
    from pplgate.testmodel import cached_reference_perplexity

    model = onnx.load(str(tiny_model))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "exported.onnx"))
    with pytest.raises(PplgateError, match=r'^model exported\.onnx was not built by pplgate .*"computed": "numpy-reference" is for builtin: models'):
        cached_reference_perplexity(tmp_path / "exported.onnx", blocks.head(1), tmp_path / "c")


def test_a_damaged_reference_cache_is_computed_again(tiny_model, blocks, tmp_path):
    from pplgate.testmodel import cached_reference_perplexity

    first = cached_reference_perplexity(tiny_model, blocks.head(1), tmp_path)
    (entry,) = (tmp_path / "reference").iterdir()
    for damaged in (entry.read_text()[:10], '{"perplexity": "x"}', '{"perplexity": 0}', "[]"):
        entry.write_text(damaged)
        assert cached_reference_perplexity(tiny_model, blocks.head(1), tmp_path) == first
        assert json.loads(entry.read_text())["perplexity"] == first


def test_fetch_never_deletes_a_file_it_did_not_write(dataset_dir, tokenizer_dir, tmp_path):
    folder = tmp_path / "s"
    args = [sys.executable, "-m", "pplgate", "fetch", str(folder), "--model", "builtin:tiny", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
            "--no-progress", "--cache-dir", str(tmp_path / "c")]
    assert subprocess.run(args, capture_output=True, text=True, timeout=300).returncode == 0
    mine = folder / "gpt2" / "notes.txt"
    mine.write_text("the user's")
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert again.stderr.strip() == (f"pplgate: error: {folder / 'gpt2'} holds files fetch did not write (notes.txt), which replacing the folder "
                                    "would delete: move them out, or fetch into another folder.")
    assert mine.read_text() == "the user's"


def test_leftover_cleanup_removes_only_pplgates_own_names(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    ours = tmp_path / f".r.json.{dead}.deadbeef.tmp"
    others = [tmp_path / f".r.json.{dead}", tmp_path / f".r.json.{dead}.backup", tmp_path / f".r.json.{dead}.deadbeef.tmp.keep"]
    folder = tmp_path / f".r.json.{dead}.notours"  # a folder of another name, holding a file
    folder.mkdir()
    (folder / "x").write_text("x")
    for path in [ours, *others]:
        path.write_text("x")
    write_atomic(tmp_path / "r.json", lambda f: f.write(b"{}"))
    assert not ours.exists()
    assert all(p.exists() for p in others) and (folder / "x").exists()
