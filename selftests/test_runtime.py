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


def test_one_session_scores_the_model_where_its_logits_are_made(tiny_model, block_matrix, monkeypatch, tmp_path):
    """The scorer is appended to the model's graph once, written beside it; every later session loads that file by
    path, one session (no scorer beside it), the model never read into Python again."""
    from pplgate.scored import scored_path

    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_model.read_bytes())
    first = open_session(model, CPU_FP32, "graph", vocab=50257)
    assert first.scored and first.scorer is None
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
    session = open_session(model, CPU_FP32, "graph", vocab=50257)
    np.testing.assert_array_equal(session.token_losses(block_matrix[:1, :64]), first.token_losses(block_matrix[:1, :64]))
    assert created == [str(scored_path(model))]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["m.onnx", "m.scored.onnx", "m.scored.onnx.json"]


@pytest.mark.parametrize("external", [False, True])
def test_the_scored_graph_equals_the_scorer_beside_the_model(tiny_model, block_matrix, tmp_path, monkeypatch, external):
    """Where the scored graph cannot be written (a read-only folder), the scorer runs as a session of its own: the
    same losses.  A model with its weights beside it gets a scored graph that names the same weights: nothing copied."""
    import pplgate.scored
    from pplgate.fileio import WriteFailed

    folder = tmp_path / "m"
    folder.mkdir()
    _save(onnx.load(str(tiny_model)), folder / "m.onnx", external=external)
    ids = block_matrix[:2, :256]
    scored = open_session(folder / "m.onnx", CPU_FP32, "graph", vocab=50257)
    if external:
        assert (folder / "m.scored.onnx").stat().st_size < 100_000  # the graph only: the weights stay in m.onnx.data

    def read_only(*args, **kwargs):
        raise WriteFailed("cannot write: the folder is read-only")

    monkeypatch.setattr(pplgate.scored, "scored_model", read_only)
    pair = open_session(folder / "m.onnx", CPU_FP32, "graph", vocab=50257)
    assert scored.scored and not pair.scored and pair.scorer is not None
    np.testing.assert_allclose(scored.token_losses(ids), pair.token_losses(ids), rtol=1e-6)


def test_a_padded_vocabulary_is_scored_over_the_tokenizers_entries(tiny_model, block_matrix, tmp_path):
    """50,304 logits for 50,257 tokens: the padding (here, logits that would count) is left out, graph and host alike."""
    model = onnx.load(str(tiny_model))
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.full((1, 1, 47), 5.0, np.float32), "padding"))
    model.graph.node.append(onnx.helper.make_node("Shape", ["logits_raw"], ["raw_shape"]))
    model.graph.node.append(onnx.helper.make_node("Slice", ["raw_shape", "pad_start", "pad_stop"], ["batch_seq"]))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0], np.int64), "pad_start"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([2], np.int64), "pad_stop"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([47], np.int64), "pad_width"))
    model.graph.node.append(onnx.helper.make_node("Concat", ["batch_seq", "pad_width"], ["pad_shape"], axis=0))
    model.graph.node.append(onnx.helper.make_node("Expand", ["padding", "pad_shape"], ["pad"]))
    model.graph.node.append(onnx.helper.make_node("Concat", ["logits_raw", "pad"], ["logits"], axis=2))
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 50304
    padded = tmp_path / "padded.onnx"
    onnx.save(model, str(padded))
    ids = block_matrix[:1, :128]
    plain = open_session(tiny_model, CPU_FP32, "graph", vocab=50257).token_losses(ids)
    for scoring in ("graph", "host"):
        np.testing.assert_allclose(open_session(padded, CPU_FP32, scoring, vocab=50257).token_losses(ids), plain, rtol=1e-5)


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
