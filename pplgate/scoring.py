"""Cross-entropy in a second, small onnxruntime session on the same device.

The vendor fetches the logits [B, T, V] (206 MB a block for GPT-2) and
computes the cross-entropy on the host.  pplgate runs the model as shipped,
loaded by path and untouched, binds its logits output where they are made,
and hands them to a scoring session built here: logits and labels in,
per-token losses out.  On the CPU the model writes its logits into one
buffer that the scorer reads in place, a few hundred rows a run, so no copy
and no second logits-sized buffer exists; on CUDA the logits stay on the
card as one OrtValue and only the losses come back.

    loss[b, t] = logsumexp(logits[b, t, :]) - logits[b, t, ids[b, t + 1]]    t = 0 .. T-2

How the log-sum-exp is computed is chosen by measurement on 2 cores, one
block of logits (1024 x 50257):

- onnxruntime's ReduceLogSumExp: 200 ms; LogSoftmax: 37 ms, vectorized and
  threaded.  Either sums 50,257 float32 terms in one pass, which biases the
  loss by about -3e-6 against float64 (2e-6 relative on the perplexity).
- So the vocabulary is cut into K chunks of L (50257 = 29 x 1733): LogSoftmax
  over each chunk gives the chunk's own log-sum-exp, and ReduceLogSumExp over
  the K chunk values gives the total.  Same speed, bias below 2e-7.

A chunk's log-sum-exp is read at its largest logit, where LogSoftmax is
largest too (it is monotonic): lse_k = max(x[k, :]) - max(logsoftmax(x[k, :])).
There the subtraction is of a logit and a number between -log(L) and 0, so
nothing cancels.  Read at any other element it can: a masking logit of -1e9
(a padded or banned token) gives -1e9 - (-1e9 - lse_k), which float32 rounds
to a few units, and -inf gives NaN.  A chunk of -inf only has lse_k = -inf,
which ReduceLogSumExp takes as an empty chunk.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TOKEN_LOSSES = "token_losses"


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


LOGITS, LABELS = "logits", "labels"
# Opset 13: what onnxruntime 1.9, the vendor's runtime, still runs.  Squeeze
# and Unsqueeze take axes as an input there, reductions as an attribute.
OPSET = 13


def labels_of(ids: np.ndarray) -> np.ndarray:
    """ids [B, T] -> labels [B, T]: position t is scored against id t + 1; the last gets a dummy 0, its loss dropped."""
    labels = np.zeros_like(ids, dtype=np.int64)
    labels[:, :-1] = ids[:, 1:]
    return labels


def scoring_model(vocab_size: int | None, logits_dtype: type) -> onnx.ModelProto:
    """logits [B, R, V] (float32 or float16) and labels [B, R] int64 in; ``token_losses`` [B, R] float32 out.

    R is any run of positions: the CPU path scores a block's logits a few
    hundred rows at a time, in place, so the scorer's own buffers stay small.
    """
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []

    def const(name: str, values: list[int]) -> str:
        initializers.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const_f(name: str, value: float) -> str:
        initializers.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        return name

    logits = LOGITS
    if logits_dtype != np.float32:
        # Score in float32 whatever the model computes in, as the vendor's host code does.
        logits = node("Cast", [logits], "logits_f32", to=TensorProto.FLOAT)

    count = chunk_count(vocab_size)

    def log_sum_exp(x: str, name: str) -> str:
        """x [..., N] -> [...]: read at the largest element (see the module's note)."""
        top = node("ReduceMax", [x], name + "_max", axes=[-1], keepdims=0)
        top_logprob = node(
            "ReduceMax",
            [node("LogSoftmax", [x], name + "_logprobs", axis=-1)],
            name + "_max_logprob",
            axes=[-1],
            keepdims=0,
        )
        lse = node("Sub", [top, top_logprob], name + "_at_max")
        # All -inf: LogSoftmax gives NaN; the log-sum-exp of nothing is -inf.
        empty = node("Equal", [top, const_f(name + "_neg_inf", -np.inf)], name + "_empty")
        return node("Where", [empty, top, lse], name)

    if count is None or vocab_size is None:
        lse = log_sum_exp(logits, "lse")  # [B, R]
    else:
        shape = const("chunks", [0, 0, count, vocab_size // count])
        chunks = node("Reshape", [logits, shape], "chunked")  # [B, R, K, L]
        lse_k = log_sum_exp(chunks, "chunk_lse")  # [B, R, K]
        lse = node("ReduceLogSumExp", [lse_k], "lse", axes=[-1], keepdims=0)  # [B, R]

    labels = node("Unsqueeze", [LABELS, const("axis2u", [2])], "labels_3d")  # [B, R, 1]
    picked = node("GatherElements", [logits, labels], "picked", axis=2)  # [B, R, 1]
    picked = node("Squeeze", [picked, const("axis2p", [2])], "picked_2d")  # [B, R]
    node("Sub", [lse, picked], TOKEN_LOSSES)  # [B, R]

    elements: dict[type, int] = {
        np.float32: TensorProto.FLOAT,
        np.float16: TensorProto.FLOAT16,
        np.float64: TensorProto.DOUBLE,
    }
    elem = elements[logits_dtype]
    graph = helper.make_graph(
        nodes,
        "pplgate_scoring",
        [
            helper.make_tensor_value_info(LOGITS, elem, ["batch", "rows", vocab_size or "vocab"]),
            helper.make_tensor_value_info(LABELS, TensorProto.INT64, ["batch", "rows"]),
        ],
        [helper.make_tensor_value_info(TOKEN_LOSSES, TensorProto.FLOAT, ["batch", "rows"])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pplgate")
    model.ir_version = 7  # opset 13's, readable by onnxruntime 1.9
    onnx.checker.check_model(model)
    return model
