"""The model as shipped: loaded by path, fed every input its style declares, scored in a second session."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import pplgate.runtime
from pplgate.runtime import _environment, open_session, resolve_scoring
from pplgate.target import Target
from pplgate.testmodel import PRESETS, build_model, load_weights, reference_token_losses

CPU_FP32 = Target.parse("cpu-fp32")


def _save(model: onnx.ModelProto, path, external: bool = False):
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def export_styles(tmp_path_factory):
    """builtin:tiny's weights in each interface of the field, and with its weights in a file of their own."""
    folder = tmp_path_factory.mktemp("styles")
    cfg = PRESETS["tiny"]
    return {
        "past": _save(build_model(cfg, style="past"), folder / "decoder_with_past_model.onnx"),
        "merged": _save(build_model(cfg, style="merged"), folder / "decoder_model_merged.onnx"),
        "external data": _save(build_model(cfg), folder / "external.onnx", external=True),
    }


@pytest.mark.parametrize("style", ["past", "merged", "external data"])
@pytest.mark.parametrize("scoring", ["graph", "host"])
def test_every_export_style_gives_the_reference_losses(export_styles, block_matrix, style, scoring):
    path = export_styles[style]
    session = open_session(path, CPU_FP32, scoring)
    if style == "external data":
        assert path.with_name(path.name + ".data").stat().st_size > path.stat().st_size  # the weights are beside it
    else:
        assert "past_key_values.0.key" in session.iface.inputs and session.iface.past_shapes["past_key_values.0.key"] == (2, 32)
    assert ("use_cache_branch" in session.iface.inputs) == (style == "merged")
    cfg, weights = load_weights(path)
    ids = block_matrix[:1, :256]
    np.testing.assert_allclose(session.token_losses(ids)[0], reference_token_losses(cfg, weights, ids[0]), rtol=1e-4)


def _hf_style(tiny_model, tmp_path):
    """The tiny model as optimum exports look: position_ids fed, present.* outputs."""
    model = onnx.load(str(tiny_model))
    g = model.graph
    for node in g.node:
        if node.op_type == "Gather" and node.input[0] == "wpe":
            node.input[1] = "position_ids"
    g.input.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]))
    first_qkv = next(n.output[0] for n in g.node if n.op_type == "Add" and n.input[1] == "h.0.attn.c_attn.bias")
    g.output.append(helper.make_tensor_value_info(first_qkv, TensorProto.FLOAT, None))
    path = tmp_path / "hf_style.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("scoring", ["graph", "host"])
def test_an_hf_style_graph_gives_the_same_losses(tiny_model, block_matrix, tmp_path, scoring):
    session = open_session(_hf_style(tiny_model, tmp_path), CPU_FP32, scoring)
    assert "position_ids" in session.iface.inputs
    ids = block_matrix[:2, :256]
    np.testing.assert_allclose(session.token_losses(ids), open_session(tiny_model, CPU_FP32, "graph").token_losses(ids), rtol=1e-5)


def test_the_model_file_is_what_onnxruntime_loads(tiny_model, block_matrix, monkeypatch, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_model.read_bytes())
    created = []
    real = ort.InferenceSession

    def spy(what, *args, **kwargs):
        created.append(what)
        return real(what, *args, **kwargs)

    def no_load(*args, **kwargs):
        raise AssertionError("the evaluation path read the model into Python")

    monkeypatch.setattr(pplgate.runtime.ort, "InferenceSession", spy)
    monkeypatch.setattr(onnx, "load", no_load)
    monkeypatch.setattr(onnx, "load_model", no_load)
    session = open_session(model, CPU_FP32, "graph")
    session.token_losses(block_matrix[:1, :64])
    # The model by its path; the scorer is pplgate's own small graph, as bytes.
    assert created[0] == str(model)
    assert isinstance(created[1], bytes) and len(created[1]) < 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no rewritten copy on disk


def test_fp16_on_the_cpu_keeps_the_vendors_boundary(tiny_model, block_matrix):
    session = open_session(tiny_model, Target.parse("cpu-fp16"), "graph")
    assert session.model_path.name.endswith(".fp16.onnx")
    # int64 ids in, float32 scoring: the feeding and the scoring are the same as fp32's.
    assert session.iface.input_dtypes["input_ids"] == np.int64
    ids = block_matrix[:1, :256]
    fp16, fp32 = session.token_losses(ids).mean(), open_session(tiny_model, CPU_FP32, "graph").token_losses(ids).mean()
    assert fp16 != fp32 and fp16 == pytest.approx(fp32, rel=0.01)


def test_the_gcu_precision_variable_is_set_only_while_the_session_is_made(monkeypatch):
    monkeypatch.setenv("ORT_TOPSINFERENCE_FP16_ENABLE", "1")
    with _environment("ORT_TOPSINFERENCE_FP16_ENABLE", "0"):
        assert os.environ["ORT_TOPSINFERENCE_FP16_ENABLE"] == "0"
    assert os.environ["ORT_TOPSINFERENCE_FP16_ENABLE"] == "1"
    monkeypatch.delenv("ORT_TOPSINFERENCE_FP16_ENABLE")
    with _environment("ORT_TOPSINFERENCE_FP16_ENABLE", "1"):
        pass
    assert "ORT_TOPSINFERENCE_FP16_ENABLE" not in os.environ


def test_auto_scoring_is_the_vendors_where_the_provider_lowers_precision():
    assert resolve_scoring("auto", Target.parse("gcu-fp16")) == "host"
    assert resolve_scoring("auto", Target.parse("gcu:2-fp32")) == "graph"
    assert resolve_scoring("auto", Target.parse("gpu-fp16")) == "graph"  # a converted model: scoring stays float32
    assert resolve_scoring("graph", Target.parse("gcu-fp16")) == "graph"
