"""Cross-entropy appended to the model's graph, so logits never leave the runtime.

The vendor fetches the logits [B, T, V] (206 MB a block for GPT-2) and
computes the cross-entropy on the host.  Appending the same computation to
the graph returns only the per-token losses [B, T-1]: no device-to-host copy
of the logits, and the runtime's kernels do the reduction.

    loss[b, t] = logsumexp(logits[b, t, :]) - logits[b, t, ids[b, t + 1]]    t = 0 .. T-2

How the log-sum-exp is computed is chosen by measurement on 2 cores, one
block of logits (1024 x 50257):

- onnxruntime's ReduceLogSumExp: 200 ms; LogSoftmax: 37 ms, vectorized and
  threaded.  Either sums 50,257 float32 terms in one pass, which biases the
  loss by about -3e-6 against float64 (2e-6 relative on the perplexity).
- So the vocabulary is cut into K chunks of L (50257 = 29 x 1733): LogSoftmax
  over each chunk gives the chunk's own log-sum-exp from its first element,
  lse_k = x[k, 0] - logsoftmax(x[k, :])[0], and ReduceLogSumExp over the K
  chunk values gives the total.  Same speed, bias below 2e-7.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pplgate.graph import IDS, GraphInterface

TOKEN_LOSSES = "token_losses"
_PREFIX = "pplgate_scoring/"


def chunk_count(vocab_size: int | None) -> int | None:
    """How many equal chunks to cut the vocabulary into: a divisor near 32.

    Long chunks keep LogSoftmax vectorized (29 chunks of 1733 run as fast as
    one of 50257; 1733 chunks of 29 take eight times longer), and a few dozen
    partial sums are enough to remove the bias.  None (one pass over the whole
    vocabulary) when the vocabulary is symbolic or has no divisor in 8..256.
    """
    if not vocab_size:
        return None
    divisors = [k for k in range(8, 257) if vocab_size % k == 0 and k < vocab_size]
    return min(divisors, key=lambda k: abs(k - 32)) if divisors else None


def append_scoring(model: onnx.ModelProto, iface: GraphInterface) -> onnx.ModelProto:
    """A copy of ``model`` whose only output is ``token_losses`` [B, T-1] float32."""
    scored = onnx.ModelProto()
    scored.CopyFrom(model)
    g = scored.graph
    opset = iface.opset

    def const(name: str, values: list[int]) -> str:
        g.initializer.append(numpy_helper.from_array(np.array(values, dtype=np.int64), _PREFIX + name))
        return _PREFIX + name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        g.node.append(helper.make_node(op, inputs, [_PREFIX + out], name=_PREFIX + out, **attrs))
        return _PREFIX + out

    def axes_op(op: str, inputs: list[str], axes: list[int], out: str, **attrs) -> str:
        # Squeeze/Unsqueeze took axes as an attribute before opset 13, reductions
        # before opset 18; as an input since.
        if opset < (18 if op.startswith("Reduce") else 13):
            return node(op, inputs, out, axes=axes, **attrs)
        return node(op, inputs + [const(out + "_axes", axes)], out, **attrs)

    def first(x: str, axis: int, out: str) -> str:
        return node("Slice", [x, const(out + "_s", [0]), const(out + "_e", [1]), const(out + "_a", [axis])], out)

    logits = iface.logits
    if _logits_elem_type(model, logits) != TensorProto.FLOAT:
        # Score in float32 whatever the model computes in, as the vendor's host code does.
        logits = node("Cast", [logits], "logits_f32", to=TensorProto.FLOAT)

    count = chunk_count(iface.vocab_size)
    if count is None:
        logprobs = node("LogSoftmax", [logits], "logprobs", axis=-1)  # [B, T, V]
        lse = node("Sub", [first(logits, 2, "x0"), first(logprobs, 2, "lp0")], "lse_3d")  # [B, T, 1]
        lse = axes_op("Squeeze", [lse], [2], "lse")  # [B, T]
    else:
        chunks = node("Reshape", [logits, const("chunks", [0, 0, count, iface.vocab_size // count])], "chunked")  # [B, T, K, L]
        logprobs = node("LogSoftmax", [chunks], "chunk_logprobs", axis=-1)  # [B, T, K, L]
        lse_k = node("Sub", [first(chunks, 3, "x0"), first(logprobs, 3, "lp0")], "chunk_lse")  # [B, T, K, 1]
        lse_k = axes_op("Squeeze", [lse_k], [3], "chunk_lse_3d")  # [B, T, K]
        lse = axes_op("ReduceLogSumExp", [lse_k], [-1], "lse", keepdims=0)  # [B, T]

    # Labels are the ids shifted left by one; the last position gets a dummy
    # label 0 whose loss is cut away below, which keeps every tensor [B, T].
    labels = node("Slice", [IDS, const("one", [1]), const("end", [np.iinfo(np.int64).max]), const("axis1", [1])], "labels")
    labels = node("Pad", [labels, const("pad_last", [0, 0, 0, 1])], "labels_padded")  # [B, T]
    if iface.input_dtypes[IDS] != np.int64:
        labels = node("Cast", [labels], "labels_i64", to=TensorProto.INT64)
    labels = axes_op("Unsqueeze", [labels], [2], "labels_3d")  # [B, T, 1]
    picked = node("GatherElements", [logits, labels], "picked", axis=2)  # [B, T, 1]
    picked = axes_op("Squeeze", [picked], [2], "picked_2d")  # [B, T]
    losses = node("Sub", [lse, picked], "losses")  # [B, T]
    g.node.append(helper.make_node(
        "Slice", [losses, const("zero", [0]), const("minus_one", [-1]), const("axis1b", [1])], [TOKEN_LOSSES], name=_PREFIX + "scored"
    ))  # [B, T-1]

    del g.output[:]
    g.output.append(helper.make_tensor_value_info(TOKEN_LOSSES, TensorProto.FLOAT, None))
    return scored


def _logits_elem_type(model: onnx.ModelProto, name: str) -> int:
    return next(o.type.tensor_type.elem_type for o in model.graph.output if o.name == name)
