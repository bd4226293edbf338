"""Writes a GPT-2-architecture ONNX graph (opset 13) from numpy weights.

The plain graph has the vendor model's interface: ``input_ids`` and
``attention_mask`` [batch, sequence] int64 in, ``logits`` [batch, sequence,
vocab] float32 out, batch and sequence dynamic.  The past and merged graphs
have optimum's: past key/value inputs and present outputs, and for the merged
one an If on ``use_cache_branch``.
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
CACHE_BRANCH = "use_cache_branch"
# The interfaces of the field's GPT-2 exports: the vendor's (plain), optimum's
# decoder_with_past_model.onnx (past) and decoder_model_merged.onnx (merged).
STYLES = ("plain", "past", "merged")


class _Graph:
    """Accumulates nodes and initializers; each op returns its output's name.

    Nodes are named ``<scope>/<output>`` (``h.1.mlp/matmul_57``) so that a
    node-by-node comparison can say which layer a node belongs to.
    """

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.scope = "embed"

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{self.scope}/{out}", **attrs))
        return out

    def named(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"{self.scope}/{outputs[0]}", **attrs))


def _layer_norm(g: _Graph, x: str, prefix: str, w: dict, eps: float) -> str:
    # Opset 13 has no LayerNormalization: spelled out over the last axis as
    # torch's export spells it, the square as Pow(centred, 2), so that
    # onnxruntime fuses it into one LayerNormalization kernel, which
    # accumulates in fp32 even in an fp16 graph, as it does the real model's.
    mean = g.op("ReduceMean", x, axes=[-1], keepdims=1)
    centred = g.op("Sub", x, mean)
    var = g.op("ReduceMean", g.op("Pow", centred, g.const(prefix + ".two", np.float32(2.0))), axes=[-1], keepdims=1)
    denom = g.op("Sqrt", g.op("Add", var, g.const(prefix + ".eps", np.float32(eps))))
    normed = g.op("Div", centred, denom)
    scaled = g.op("Mul", normed, g.const(prefix + ".weight", w[prefix + ".weight"]))
    return g.op("Add", scaled, g.const(prefix + ".bias", w[prefix + ".bias"]))


def _linear(g: _Graph, x: str, prefix: str, w: dict) -> str:
    y = g.op("MatMul", x, g.const(prefix + ".weight", w[prefix + ".weight"]))
    return g.op("Add", y, g.const(prefix + ".bias", w[prefix + ".bias"]))


def _gelu_tanh(g: _Graph, x: str, name: str) -> str:
    # GPT-2's "gelu_new", 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in
    # the order torch's export writes it, x^3 as Pow: onnxruntime fuses it
    # into one GELU kernel, as it does the real model's.
    half_x = g.op("Mul", x, g.const(name + ".half", np.float32(0.5)))
    x3 = g.op("Pow", x, g.const(name + ".three", np.float32(3.0)))
    inner = g.op("Add", x, g.op("Mul", x3, g.const(name + ".c", np.float32(0.044715))))
    t = g.op("Tanh", g.op("Mul", inner, g.const(name + ".k", np.float32(math.sqrt(2 / math.pi)))))
    return g.op("Mul", half_x, g.op("Add", t, g.const(name + ".one", np.float32(1.0))))


def _with_past(g: _Graph, style: str, past: str, current: str, present: str, cache_branch: str) -> str:
    """[B, H, P, D] past and [B, H, T, D] current -> [B, H, P+T, D], as optimum's decoders concatenate.

    The merged decoder chooses with an If on use_cache_branch, as optimum's does:
    the cached branch concatenates, the other takes the current keys alone.
    """
    if style == "past":
        g.named("Concat", [past, current], [present], axis=2)
        return present
    then_out, else_out = present + ".cached", present + ".fresh"
    then_branch = helper.make_graph(
        [helper.make_node("Concat", [past, current], [then_out], axis=2)],
        "cached",
        [],
        [helper.make_tensor_value_info(then_out, TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", [current], [else_out])],
        "fresh",
        [],
        [helper.make_tensor_value_info(else_out, TensorProto.FLOAT, None)],
    )
    g.named("If", [cache_branch], [present], then_branch=then_branch, else_branch=else_branch)
    return present


def _attention(g: _Graph, x: str, i: int, cfg: GPT2Config, w: dict, causal: str, bias: str, style: str) -> str:
    p = f"h.{i}.attn"
    qkv = _linear(g, x, p + ".c_attn", w)  # [B, T, 3C]
    split = g.const(p + ".split", np.array([cfg.n_embd] * 3, dtype=np.int64))
    q_k_v = [f"{p}.{n}" for n in "qkv"]
    g.named("Split", [qkv, split], q_k_v, axis=-1)
    heads = g.const(p + ".heads", np.array([0, 0, cfg.n_head, cfg.head_dim], dtype=np.int64))
    q, k, v = (g.op("Transpose", g.op("Reshape", t, heads), perm=[0, 2, 1, 3]) for t in q_k_v)  # [B, H, T, D]
    if style != "plain":
        k = _with_past(g, style, f"past_key_values.{i}.key", k, f"present.{i}.key", CACHE_BRANCH)  # [B, H, P+T, D]
        v = _with_past(g, style, f"past_key_values.{i}.value", v, f"present.{i}.value", CACHE_BRANCH)
    # Divided by sqrt(head_dim), as GPT-2's attention and its export write it.
    root = g.const(p + ".sqrt_head_dim", np.float32(math.sqrt(cfg.head_dim)))
    scores = g.op("Div", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), root)  # [B, H, T, P+T]
    scores = g.op("Where", causal, scores, g.const(p + ".masked", np.float32(MASK_VALUE)))
    probs = g.op("Softmax", g.op("Add", scores, bias), axis=-1)
    ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])  # [B, T, H, D]
    merged = g.op("Reshape", ctx, g.const(p + ".merge", np.array([0, 0, cfg.n_embd], dtype=np.int64)))
    return _linear(g, merged, p + ".c_proj", w)


def _int(g: _Graph, name: str, value: int | list[int]) -> str:
    return g.const(name, np.array(value, dtype=np.int64))


def build_model(cfg: GPT2Config, weights: dict[str, np.ndarray] | None = None, style: str = "plain") -> onnx.ModelProto:
    """The model in one of the interfaces of STYLES."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: one of {STYLES}")
    w = init_weights(cfg) if weights is None else weights
    g = _Graph()
    ids, mask = "input_ids", "attention_mask"  # [B, T] and [B, P+T] int64

    seq_len = g.op("Gather", g.op("Shape", ids), _int(g, "axis1", 1), axis=0)  # T
    past_len = (
        _int(g, "zero", 0)
        if style == "plain"
        else g.op("Gather", g.op("Shape", "past_key_values.0.key"), _int(g, "axis2", 2), axis=0)
    )
    total = g.op("Add", past_len, seq_len)  # P + T
    positions = g.op("Range", past_len, total, _int(g, "one", 1))  # [T]: P .. P+T-1
    x = g.op("Add", g.op("Gather", g.const("wte", w["wte"]), ids), g.op("Gather", g.const("wpe", w["wpe"]), positions))

    # Causal mask [T, P+T]: rows P..P+T-1 of a constant [N, N] lower triangle.
    tril = np.tril(np.ones((cfg.n_positions, cfg.n_positions), dtype=bool))
    axes0 = _int(g, "axes0", [0])
    starts = g.op("Concat", g.op("Unsqueeze", past_len, axes0), _int(g, "zero_1d", [0]), axis=0)
    ends = g.op("Concat", g.op("Unsqueeze", total, axes0), g.op("Unsqueeze", total, axes0), axis=0)
    causal = g.op("Slice", g.const("causal", tril), starts, ends)
    # Padding mask as an additive bias [B, 1, 1, P+T]: 0 where attended.
    mask_f = g.op("Cast", mask, to=TensorProto.FLOAT)
    keep_out = g.op("Sub", g.const("onef", np.float32(1.0)), mask_f)
    bias = g.op("Mul", keep_out, g.const("mask_value", np.float32(MASK_VALUE)))
    bias = g.op("Unsqueeze", bias, _int(g, "axes12", [1, 2]))

    for i in range(cfg.n_layer):
        eps = cfg.layer_norm_epsilon
        g.scope = f"h.{i}.attn"
        x = g.op("Add", x, _attention(g, _layer_norm(g, x, f"h.{i}.ln_1", w, eps), i, cfg, w, causal, bias, style))
        g.scope = f"h.{i}.mlp"
        h = _gelu_tanh(g, _linear(g, _layer_norm(g, x, f"h.{i}.ln_2", w, eps), f"h.{i}.mlp.c_fc", w), f"h.{i}.gelu")
        x = g.op("Add", x, _linear(g, h, f"h.{i}.mlp.c_proj", w))
    g.scope = "head"
    x = _layer_norm(g, x, "ln_f", w, cfg.layer_norm_epsilon)
    # Tied LM head: the embedding matrix, transposed, maps back to the vocabulary.
    g.named("MatMul", [x, g.op("Transpose", "wte", perm=[1, 0])], ["logits"])

    inputs = [
        helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "total_sequence"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", cfg.vocab_size])]
    if style != "plain":
        kv: list[str | int] = ["batch", cfg.n_head, "past_sequence", cfg.head_dim]
        for i in range(cfg.n_layer):
            for kind in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, kv))
                outputs.append(
                    helper.make_tensor_value_info(
                        f"present.{i}.{kind}", TensorProto.FLOAT, ["batch", cfg.n_head, "total_sequence", cfg.head_dim]
                    )
                )
    if style == "merged":
        inputs.append(helper.make_tensor_value_info(CACHE_BRANCH, TensorProto.BOOL, [1]))
    graph = helper.make_graph(g.nodes, "gpt2", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pplgate")
    # The IR version of opset 13 (onnx 1.8): what onnxruntime 1.9, the vendor's
    # runtime, still reads; the onnx package would otherwise stamp its newest.
    model.ir_version = 7
    helper.set_model_props(model, {CONFIG_KEY: json.dumps(dataclasses.asdict(cfg))})
    onnx.checker.check_model(model)
    return model


def write_model(cfg: GPT2Config, path: Path, style: str = "plain") -> Path:
    """Builds and writes the model atomically: a reader never sees half a file."""
    model = build_model(cfg, style=style)
    return write_atomic(Path(path), lambda f: f.write(model.SerializeToString()))
