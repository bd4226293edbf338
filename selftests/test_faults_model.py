"""Model files that cannot be evaluated: one sentence, exit 1 (CLI) or a failed test (gate)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pplgate.cli import main
from pplgate.testmodel import PRESETS, write_model

pytest_plugins = ["pytester"]


def _edit(tiny_model, path, change):
    model = onnx.load(str(tiny_model))
    change(model)
    onnx.save(model, str(path))
    return path


def _no_input_ids(m):
    m.graph.input[0].name = "tokens"
    for n in m.graph.node:
        n.input[:] = ["tokens" if i == "input_ids" else i for i in n.input]


def _no_logits(m):
    m.graph.output[0].name = "scores"
    for n in m.graph.node:
        n.output[:] = ["scores" if o == "logits" else o for o in n.output]
    extra = next(n.output[0] for n in m.graph.node if n.op_type == "Add" and n.input[1] == "h.0.attn.c_attn.bias")
    m.graph.output.append(helper.make_tensor_value_info(extra, TensorProto.FLOAT, ["batch", "sequence", 192]))


def _fixed_512(m):
    for value in (m.graph.input[0], m.graph.input[1]):
        value.type.tensor_type.shape.dim[1].dim_value = 512


def _celu_head(m):
    # Celu's opset-13 types exclude float16: the fp16 conversion of this graph is invalid.
    final = next(n for n in m.graph.node if n.output and n.output[0] == "logits")
    final.input[0], old = "celu_out", final.input[0]
    m.graph.node.append(helper.make_node("Celu", [old], ["celu_out"]))
    m.graph.node.sort(key=lambda n: n.output[0] == "logits")


def _logits_as(elem_type):
    """The logits cast to another type at the graph's end, as an export in another precision gives them."""
    def change(m):
        final = next(n for n in m.graph.node if n.output and n.output[0] == "logits")
        final.output[0] = "logits_raw"
        m.graph.node.append(helper.make_node("Cast", ["logits_raw"], ["logits"], to=elem_type))
        m.graph.output[0].type.tensor_type.elem_type = elem_type
    return change


def _rank_2(m):
    """Logits flattened to [batch * sequence, vocab]."""
    final = next(n for n in m.graph.node if n.output and n.output[0] == "logits")
    final.output[0] = "logits_3d"
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1, 0], dtype=np.int64), "flat_shape"))
    m.graph.node.append(helper.make_node("Reshape", ["logits_3d", "flat_shape"], ["logits"]))
    dims = m.graph.output[0].type.tensor_type.shape.dim
    del dims[0]
    dims[0].dim_param = "rows"


def bad_models(tiny_model, tmp_path):
    """name -> (path, precision, expected sentence fragment)."""
    d = tmp_path
    (d / "empty.onnx").write_bytes(b"")
    (d / "truncated.onnx").write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    (d / "text.onnx").write_text("this is not a model\n")
    (d / "folder.onnx").mkdir()
    small_vocab = write_model(dataclasses.replace(PRESETS["tiny"], vocab_size=1000), d / "vocab1000.onnx")
    return {
        "missing": (d / "absent.onnx", "fp32", "absent.onnx does not exist: pass --model"),
        "directory": (d / "folder.onnx", "fp32", "is a directory, not a file"),
        "empty": (d / "empty.onnx", "fp32", "empty.onnx is empty: delete it"),
        "truncated": (d / "truncated.onnx", "fp32", "truncated.onnx is not a readable ONNX model"),
        "not onnx": (d / "text.onnx", "fp32", "text.onnx is not a readable ONNX model"),
        "no input_ids": (_edit(tiny_model, d / "noids.onnx", _no_input_ids), "fp32", "has no input named input_ids (its inputs: tokens, attention_mask)"),
        "no logits": (_edit(tiny_model, d / "nologits.onnx", _no_logits), "fp32", "has no logits output"),
        "vocabulary": (small_vocab, "fp32", "predicts 1000 tokens, but the tokenizer has 50257"),
        "short sequence": (_edit(tiny_model, d / "seq512.onnx", _fixed_512), "fp32", "takes sequences of 512 tokens, fewer than the 1024"),
        "fp16 impossible": (_edit(tiny_model, d / "celu.onnx", _celu_head), "fp16", "cannot build a fp16 session of celu.fp16.onnx on cpu"),
        "int32 logits": (_edit(tiny_model, d / "int32.onnx", _logits_as(TensorProto.INT32)), "fp32",
                         "int32.onnx's logits output logits is tensor(int32), not tensor(float), tensor(float16), tensor(double)"),
        "rank-2 logits": (_edit(tiny_model, d / "rank2.onnx", _rank_2), "fp32", "gives logits of rank 2, not [batch, sequence, vocab] (rank 3)"),
    }


CASES = ["missing", "directory", "empty", "truncated", "not onnx", "no input_ids", "no logits", "vocabulary", "short sequence", "fp16 impossible",
         "int32 logits", "rank-2 logits"]


@pytest.mark.parametrize("case", CASES)
def test_cli_refuses_with_one_sentence(case, tiny_model, tmp_path, dataset_dir, tokenizer_dir, token_cache, capsys):
    path, precision, fragment = bad_models(tiny_model, tmp_path)[case]
    report = tmp_path / "report.json"
    code = main(["--model", str(path), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, "--cache-dir", str(token_cache),
                 "--precision", precision, "--max-blocks", "1", "--no-progress", "--report-json", str(report)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pplgate: error:")]
    assert code == 1
    assert len(err) == 1 and fragment in err[0], err
    assert err[0].endswith(".")
    assert not report.exists()


def test_gate_fails_bad_models_with_the_sentence(scratch_gate, tiny_model, tmp_path):
    models = bad_models(tiny_model, tmp_path)
    scratch_gate.ini(devices="cpu", precisions="fp32 fp16")
    for case in ("truncated", "no logits", "fp16 impossible"):
        path, precision, _ = models[case]
        scratch_gate.case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1}}, model=str(path), name=case.replace(" ", "_"), max_blocks=1)
    result = scratch_gate.run("-k", "truncated-cpu-fp32 or no_logits-cpu-fp32 or impossible-cpu-fp16")
    result.assert_outcomes(errors=3)
    for _, _, fragment in (models["truncated"], models["no logits"], models["fp16 impossible"]):
        result.stdout.fnmatch_lines([f"*{fragment}*"])
    assert "Traceback" not in result.stdout.str()


CONVERT = """
import logging, sys
from pathlib import Path
from pplgate.precision import convert_fp16
logging.basicConfig(level=logging.INFO, format="%(message)s")
print(convert_fp16(Path(sys.argv[1])))
"""


def test_concurrent_runs_convert_to_fp16_once(tiny_model, tmp_path):
    import shutil
    import subprocess
    import sys

    source = shutil.copy(tiny_model, tmp_path / "model.onnx")
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT, str(source)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(err.count("converting model.onnx to fp16") for _, err in outs) == 1
    assert {out.strip() for out, _ in outs} == {str(tmp_path / "model.fp16.onnx")}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["model.fp16.onnx", "model.fp16.onnx.json", "model.onnx"]
    onnx.checker.check_model(str(tmp_path / "model.fp16.onnx"))


@pytest.mark.parametrize("scoring", ["graph", "host"])
def test_float64_logits_are_scored(scoring, tiny_model, tmp_path, dataset_dir, tokenizer_dir, token_cache, capsys):
    """A graph that gives double logits is scored as the float32 ones it was cast from: the same perplexity."""
    import json

    wide = _edit(tiny_model, tmp_path / "float64.onnx", _logits_as(TensorProto.DOUBLE))
    perplexities = []
    for path in (tiny_model, wide):
        assert main(["--model", str(path), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, "--cache-dir", str(token_cache),
                     "--max-blocks", "1", "--no-progress", "--scoring", scoring]) == 0
        perplexities.append(json.loads(capsys.readouterr().out.split("Final report:\n", 1)[1])["perplexity"])
    assert perplexities[0] == perplexities[1]
