"""Writes a GPT-2-architecture ONNX graph (opset 13) from numpy weights.

The graph has the vendor model's interface: ``input_ids`` and
``attention_mask`` [batch, sequence] int64 in, ``logits`` [batch, sequence,
vocab] float32 out, batch and sequence dynamic.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pplgate.fileio import write_atomic
from pplgate.testmodel.config import GPT2Config, init_weights

OPSET = 13
# Added to the scores of masked positions.  A finite value, as older GPT-2
# exports use, so that an fp16 conversion cannot turn it into -inf and NaN.
MASK_VALUE = -1e4
CONFIG_KEY = "pplgate.testmodel.config"


class _Graph:
    """Accumulates nodes and initializers; each op returns its output's name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _layer_norm(g: _Graph, x: str, prefix: str, w: dict, eps: float) -> str:
    # Opset 13 has no LayerNormalization; spelled out over the last axis.
    mean = g.op("ReduceMean", x, axes=[-1], keepdims=1)
    centred = g.op("Sub", x, mean)
    var = g.op("ReduceMean", g.op("Mul", centred, centred), axes=[-1], keepdims=1)
    denom = g.op("Sqrt", g.op("Add", var, g.const(prefix + ".eps", np.float32(eps))))
    normed = g.op("Div", centred, denom)
    scaled = g.op("Mul", normed, g.const(prefix + ".weight", w[prefix + ".weight"]))
    return g.op("Add", scaled, g.const(prefix + ".bias", w[prefix + ".bias"]))


def _linear(g: _Graph, x: str, prefix: str, w: dict) -> str:
    y = g.op("MatMul", x, g.const(prefix + ".weight", w[prefix + ".weight"]))
    return g.op("Add", y, g.const(prefix + ".bias", w[prefix + ".bias"]))


def _gelu_tanh(g: _Graph, x: str, name: str) -> str:
    # GPT-2's "gelu_new": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    x3 = g.op("Mul", g.op("Mul", x, x), x)
    inner = g.op("Add", x, g.op("Mul", x3, g.const(name + ".c", np.float32(0.044715))))
    t = g.op("Tanh", g.op("Mul", inner, g.const(name + ".k", np.float32(math.sqrt(2 / math.pi)))))
    one_plus = g.op("Add", t, g.const(name + ".one", np.float32(1.0)))
    return g.op("Mul", g.op("Mul", x, one_plus), g.const(name + ".half", np.float32(0.5)))


def _attention(g: _Graph, x: str, i: int, cfg: GPT2Config, w: dict, causal: str, bias: str) -> str:
    p = f"h.{i}.attn"
    qkv = _linear(g, x, p + ".c_attn", w)  # [B, T, 3C]
    split = g.const(p + ".split", np.array([cfg.n_embd] * 3, dtype=np.int64))
    q_k_v = [f"{p}.{n}" for n in "qkv"]
    g.nodes.append(helper.make_node("Split", [qkv, split], q_k_v, axis=-1))
    heads = g.const(p + ".heads", np.array([0, 0, cfg.n_head, cfg.head_dim], dtype=np.int64))
    q, k, v = (g.op("Reshape", t, heads) for t in q_k_v)  # [B, T, H, D]
    q = g.op("Transpose", q, perm=[0, 2, 1, 3])  # [B, H, T, D]
    k = g.op("Transpose", k, perm=[0, 2, 3, 1])  # [B, H, D, T]
    v = g.op("Transpose", v, perm=[0, 2, 1, 3])  # [B, H, T, D]
    scale = g.const(p + ".scale", np.float32(1.0 / math.sqrt(cfg.head_dim)))
    scores = g.op("Mul", g.op("MatMul", q, k), scale)  # [B, H, T, T]
    scores = g.op("Where", causal, scores, g.const(p + ".masked", np.float32(MASK_VALUE)))
    probs = g.op("Softmax", g.op("Add", scores, bias), axis=-1)
    ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])  # [B, T, H, D]
    merged = g.op("Reshape", ctx, g.const(p + ".merge", np.array([0, 0, cfg.n_embd], dtype=np.int64)))
    return _linear(g, merged, p + ".c_proj", w)


def build_model(cfg: GPT2Config, weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    w = init_weights(cfg) if weights is None else weights
    g = _Graph()
    ids, mask = "input_ids", "attention_mask"  # [B, T] int64 each

    seq_len = g.op("Gather", g.op("Shape", ids), g.const("axis1", np.array(1, dtype=np.int64)), axis=0)
    zero = g.const("zero", np.array(0, dtype=np.int64))
    one = g.const("one", np.array(1, dtype=np.int64))
    positions = g.op("Range", zero, seq_len, one)  # [T]
    x = g.op("Add", g.op("Gather", g.const("wte", w["wte"]), ids), g.op("Gather", g.const("wpe", w["wpe"]), positions))

    # Causal mask [T, T] cut from a constant [P, P] lower triangle.
    tril = np.tril(np.ones((cfg.n_positions, cfg.n_positions), dtype=bool))
    t_1d = g.op("Unsqueeze", seq_len, g.const("axes0", np.array([0], dtype=np.int64)))
    starts = g.const("starts00", np.array([0, 0], dtype=np.int64))
    causal = g.op("Slice", g.const("causal", tril), starts, g.op("Concat", t_1d, t_1d, axis=0))
    # Padding mask as an additive bias [B, 1, 1, T]: 0 where attended.
    mask_f = g.op("Cast", mask, to=TensorProto.FLOAT)
    keep_out = g.op("Sub", g.const("onef", np.float32(1.0)), mask_f)
    bias = g.op("Mul", keep_out, g.const("mask_value", np.float32(MASK_VALUE)))
    bias = g.op("Unsqueeze", bias, g.const("axes12", np.array([1, 2], dtype=np.int64)))

    for i in range(cfg.n_layer):
        eps = cfg.layer_norm_epsilon
        x = g.op("Add", x, _attention(g, _layer_norm(g, x, f"h.{i}.ln_1", w, eps), i, cfg, w, causal, bias))
        h = _gelu_tanh(g, _linear(g, _layer_norm(g, x, f"h.{i}.ln_2", w, eps), f"h.{i}.mlp.c_fc", w), f"h.{i}.gelu")
        x = g.op("Add", x, _linear(g, h, f"h.{i}.mlp.c_proj", w))
    x = _layer_norm(g, x, "ln_f", w, cfg.layer_norm_epsilon)
    # Tied LM head: the embedding matrix, transposed, maps back to the vocabulary.
    g.nodes.append(helper.make_node("MatMul", [x, g.op("Transpose", "wte", perm=[1, 0])], ["logits"]))

    graph = helper.make_graph(
        g.nodes,
        "gpt2",
        [
            helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", cfg.vocab_size])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pplgate")
    # The IR version of opset 13 (onnx 1.8): what onnxruntime 1.9, the vendor's
    # runtime, still reads; the onnx package would otherwise stamp its newest.
    model.ir_version = 7
    helper.set_model_props(model, {CONFIG_KEY: json.dumps(dataclasses.asdict(cfg))})
    onnx.checker.check_model(model)
    return model


def write_model(cfg: GPT2Config, path: Path) -> Path:
    """Builds and writes the model atomically: a reader never sees half a file."""
    model = build_model(cfg)
    return write_atomic(Path(path), lambda f: f.write(model.SerializeToString()))
