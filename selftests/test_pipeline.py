"""From options to a report: every model, block size or target that cannot be evaluated is one sentence before any block is scored."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pplgate.errors import PplgateError
from pplgate.method import Method
from pplgate.modelfiles import model_identity
from pplgate.options import RunSettings
from pplgate.pipeline import run
from pplgate.sourcefolder import Sources
from pplgate.target import Target
from pplgate.testmodel import PRESETS, write_model
from test_modelfiles import save_external


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


def _fixed_2048(m):
    for value in (m.graph.input[0], m.graph.input[1]):
        value.type.tensor_type.shape.dim[1].dim_value = 2048


def _fixed_batch_1(m):
    for value in m.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 1


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


def _logits_one_short(m):
    """The logits leave out the last position."""
    for node in m.graph.node:
        node.output[:] = ["logits_all" if o == "logits" else o for o in node.output]
    for name, value in (("cut_start", 0), ("cut_end", -1), ("cut_axis", 1)):
        m.graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [1], [value]))
    m.graph.node.append(helper.make_node("Slice", ["logits_all", "cut_start", "cut_end", "cut_axis"], ["logits"]))


def bad_models(tiny_model, tmp_path):
    """name -> (path, extra CLI arguments, expected sentence fragment)."""
    d = tmp_path
    (d / "empty.onnx").write_bytes(b"")
    (d / "truncated.onnx").write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    (d / "text.onnx").write_text("this is not a model\n")
    (d / "folder.onnx").mkdir()
    small_vocab = write_model(dataclasses.replace(PRESETS["tiny"], vocab_size=1000), d / "vocab1000.onnx")
    return {
        "missing": (d / "absent.onnx", [], "absent.onnx does not exist: pass --model"),
        "directory": (d / "folder.onnx", [], "is a directory, not a file"),
        "empty": (d / "empty.onnx", [], "empty.onnx is empty: delete it"),
        "truncated": (d / "truncated.onnx", [], "truncated.onnx is not a readable ONNX model"),
        "not onnx": (d / "text.onnx", [], "text.onnx is not a readable ONNX model"),
        "no input_ids": (_edit(tiny_model, d / "noids.onnx", _no_input_ids), [], "has no input named input_ids (its inputs: tokens, attention_mask)"),
        "no logits": (_edit(tiny_model, d / "nologits.onnx", _no_logits), [], "has no logits output"),
        "vocabulary": (small_vocab, [], "predicts 1000 tokens, but the tokenizer has 50257"),
        "short sequence": (_edit(tiny_model, d / "seq512.onnx", _fixed_512), [], "takes sequences of 512 tokens, fewer than the 1024"),
        "fp16 impossible": (_edit(tiny_model, d / "celu.onnx", _celu_head), ["--precision", "fp16"],
                            "onnxruntime's float16 converter made an invalid model of celu.onnx"),
        "longer fixed sequence": (_edit(tiny_model, d / "seq2048.onnx", _fixed_2048), [],
                                  "model seq2048.onnx takes sequences of exactly 2048 tokens, more than the 1024 of a block: pass --block-size 2048"),
        "int32 logits": (_edit(tiny_model, d / "int32.onnx", _logits_as(TensorProto.INT32)), [],
                         "int32.onnx's logits output logits is tensor(int32), not tensor(float), tensor(float16), tensor(double)"),
        "rank-2 logits": (_edit(tiny_model, d / "rank2.onnx", _rank_2), [], "gives logits of rank 2, not [batch, sequence, vocab] (rank 3)"),
        "fixed batch": (_edit(tiny_model, d / "batch1.onnx", _fixed_batch_1), ["--batchsize", "4", "--max-blocks", "4"],
                        "model batch1.onnx takes exactly 1 block(s) per run (its input_ids is [1, sequence]), not 4: "
                        "pass --batch-size 1 (in the gate --gate-batch-size=1), or export it with a dynamic batch axis."),
        "logits one short (graph)": (_edit(tiny_model, d / "short.onnx", _logits_one_short), ["--scoring", "graph"],
                                     "model short.onnx gives 7 rows of logits for 8 input tokens, not one per position, so no token can be "
                                     "scored against the next: export the language model with logits for every input position ([batch, sequence, vocab]), "
                                     "as transformers' export does."),
        "logits one short (host)": (d / "short.onnx", ["--scoring", "host"], "model short.onnx gives 7 rows of logits for 8 input tokens"),
    }


@pytest.fixture(scope="module")
def broken(tiny_model, tmp_path_factory):
    return bad_models(tiny_model, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated", "not onnx", "no input_ids", "no logits", "vocabulary", "short sequence",
                                  "longer fixed sequence", "fp16 impossible", "int32 logits", "rank-2 logits", "fixed batch", "logits one short (graph)", "logits one short (host)"])
def test_a_model_that_cannot_be_evaluated_is_one_sentence(case, broken, tmp_path, dataset_dir, tokenizer_dir, token_cache, cli):
    path, extra, fragment = broken[case]
    report = tmp_path / "report.json"
    line = cli("--model", path, "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, "--cache-dir", token_cache,
               "--max-blocks", "1", "--no-progress", "--report-json", report, *extra).error
    assert fragment in line and line.endswith("."), line
    assert not report.exists()


@pytest.mark.parametrize("scoring", ["graph", "host"])
def test_logits_of_double_are_scored_as_the_float32_they_were_cast_from(scoring, tiny_model, tmp_path, base_args, cli):
    wide = _edit(tiny_model, tmp_path / "float64.onnx", _logits_as(TensorProto.DOUBLE))
    perplexities = [cli(*base_args, "--model", path, "--max-blocks", "1", "--block-size", "256", "--scoring", scoring).report["perplexity"]
                    for path in (tiny_model, wide)]
    assert perplexities[0] == perplexities[1]


def test_token_ids_outside_a_symbolic_vocabulary(tmp_path, base_args, cli):
    from pplgate.testmodel import build_model

    model = build_model(dataclasses.replace(PRESETS["tiny"], vocab_size=1000))
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "vocab"  # the graph no longer says
    onnx.save(model, str(tmp_path / "vocab1000.onnx"))
    # The session infers the vocabulary the file leaves symbolic, so the mismatch is named before any block runs.
    assert "predicts 1000 tokens, but the tokenizer has 50257: pass --tokenizer" in cli(*base_args, "--model", tmp_path / "vocab1000.onnx", "--max-blocks", "1").error


def test_block_size_512(base_args, cli):
    report = cli(*base_args, "--block-size", "512", "--max-blocks", "3").report
    assert (report["blocks"], report["scored_tokens"]) == (3, 3 * 511)


def test_a_block_size_the_graph_cannot_take_is_refused(base_args, cli):
    # builtin:tiny has learned positions up to 1024: its sequence axis is dynamic, its context is not.
    line = cli(*base_args, "--block-size", "2048", "--max-blocks", "1").error
    assert "cannot take blocks of 2048 tokens" in line and line.endswith("pass --block-size (a case's method.block_size) no larger than its context.")


def test_a_block_larger_than_memory_is_refused_before_it_is_allocated(base_args, cli):
    assert cli(*base_args, "--grouping", "contiguous", "--block-size", "283287").error.startswith(
        "pplgate: error: blocks of 283287 tokens (batch 1) need 53.0 GiB for their logits alone, more than this machine's")


@pytest.mark.parametrize("device", ["cpu", "gcu"])
def test_tf32_off_cuda_is_one_sentence_before_any_source(device, tmp_path, cli):
    provider = {"cpu": "CPUExecutionProvider", "gcu": "TopsInferenceExecutionProvider"}[device]
    assert cli("--model", tmp_path / "absent.onnx", "--device", device, "--precision", "tf32").error == (
        f"pplgate: error: tf32 is CUDA's TensorFloat-32 matmul mode, which {provider} does not have: {device} computes fp32 as IEEE fp32; run tf32 on gpu.")


def test_a_provider_option_that_changes_the_precision_is_refused_before_any_source(tmp_path, cli):
    assert cli("--model", tmp_path / "absent.onnx", "--device", "gpu", "--provider-option", "use_tf32=1").error.startswith(
        "pplgate: error: --provider-option use_tf32=1 contradicts precision fp32")


def test_a_provider_option_on_the_cpu_is_refused_before_any_source(tmp_path, cli):
    assert cli("--model", tmp_path / "absent.onnx", "--provider-option", "use_tf32=1").error == (
        "pplgate: error: --provider-option use_tf32=1: CPUExecutionProvider takes no provider options (onnxruntime would "
        "ignore it): drop it; --intra-op-threads sets its threads.")


def test_an_option_the_provider_does_not_list_is_refused():
    """Where the provider lists its options (CUDA does), one it does not list would be ignored: refused, by name."""
    from pplgate.runtime import _refuse_unknown_options

    gpu = Target.parse("gpu-fp32").device
    with pytest.raises(PplgateError, match=r"^--provider-option use_tf23 is not an option of CUDAExecutionProvider, which "
                                           r"would ignore it \(its options: device_id, use_tf32\): check its spelling\.$"):
        _refuse_unknown_options({"use_tf23": "0"}, {"device_id": "0", "use_tf32": "0"}, gpu)
    _refuse_unknown_options({"use_tf32": "0"}, {"device_id": "0", "use_tf32": "0"}, gpu)
    _refuse_unknown_options({"anything": "1"}, {}, Target.parse("gcu-fp32").device)  # a provider that lists none


def test_the_report_pins_the_weights(dataset_dir, tokenizer_dir, token_cache, tmp_path):
    model = save_external(tmp_path / "copy")
    sources = Sources(model=str(model), dataset=dataset_dir, tokenizer=tokenizer_dir, model_dir=tmp_path / "m", cache_dir=token_cache)
    report, _ = run(sources, Target.parse("cpu-fp32"), Method(max_blocks=1), RunSettings(progress=False))
    assert report["model_sha256"] == model_identity(model, token_cache).sha256
    assert report["model_files"] == model_identity(model, token_cache).files
    assert report["model_bytes"] == sum((tmp_path / "copy" / name).stat().st_size for name in ("model.onnx", "model.onnx_data"))
