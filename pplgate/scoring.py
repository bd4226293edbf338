"""Cross-entropy in onnxruntime, where the logits are made.

The vendor fetches the logits [B, T, V] (206 MB a block for GPT-2) and
computes the cross-entropy on the host.  pplgate appends the scoring to the
model's own graph (``append_scorer``): the session takes the labels as one
more input and gives the per-token losses as one more output, so the logits
are written once and read once, on the device that made them, with no
second session, no copy and no synchronisation in between; only the losses
[B, T] come back.  Where the scored graph cannot be written beside the model
(a read-only folder), the same nodes run as a session of their own
(``scoring_model``) fed the model's logits in place.

    loss[b, t] = logsumexp(logits[b, t, :V]) - logits[b, t, ids[b, t + 1]]    t = 0 .. T-2

V is the tokenizer's vocabulary: a model whose vocabulary is padded beyond it
(50,304 for 50,257) is scored over the tokenizer's entries only, its padding
ignored.

How the log-sum-exp is computed is chosen by measurement (2 cores, one block
of logits, 1024 x 50257, onnxruntime 1.31):

- ReduceLogSumExp: 86 ms; LogSoftmax: 11 ms, vectorized and threaded.
  Either sums 50,257 float32 terms in one pass, which biases the loss
  against float64 (-1.6e-7 relative on Gaussian logits of spread 5, more the
  wider they spread: docs/figures.md).
- So the vocabulary is cut into K chunks of L (50257 = 29 x 1733): LogSoftmax
  over each chunk gives the chunk's own log-sum-exp, and ReduceLogSumExp over
  the K chunk values gives the total.  The bias falls below 1e-8 there.

A chunk's log-sum-exp is read at its largest logit, where LogSoftmax is
largest too (it is monotonic): lse_k = max(x[k, :]) - max(logsoftmax(x[k, :])).
There the subtraction is of a logit and a number between -log(L) and 0, so
nothing cancels.  Read at any other element it can: a masking logit of -1e9
(a padded or banned token) gives -1e9 - (-1e9 - lse_k), which float32 rounds
to a few units, and -inf gives NaN.  A chunk of -inf only has lse_k = -inf,
which ReduceLogSumExp takes as an empty chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The names pplgate adds to a scored graph: none of a model's own.
LABELS = "pplgate.labels"
TOKEN_LOSSES = "pplgate.token_losses"
LOGITS = "pplgate.logits"  # the standalone scorer's logits input
# In a scored graph's metadata: the model's logits output (name, type, shape), which the scored graph no longer gives.
LOGITS_META = "pplgate.logits"
# Opset 13 for the standalone scorer: what onnxruntime 1.9, the vendor's runtime, runs.
OPSET = 13
# The oldest opset whose operators the scorer can be spelled in (GatherElements, float Equal).
OLDEST_OPSET = 11
# Bumped when the scoring nodes change: a scored graph written by an older pplgate is written again.
SCORER_VERSION = 3  # 3: the losses its only output


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


def labels_of(ids: np.ndarray) -> np.ndarray:
    """ids [B, T] -> labels [B, T]: position t is scored against id t + 1; the last gets a dummy 0, its loss dropped."""
    labels = np.zeros_like(ids, dtype=np.int64)
    labels[:, :-1] = ids[:, 1:]
    return labels


_ELEMENT: dict[type, int] = {
    np.float32: TensorProto.FLOAT,
    np.float16: TensorProto.FLOAT16,
    np.float64: TensorProto.DOUBLE,
}


@dataclass
class _Builder:
    """Scoring nodes in the spelling of one opset (reductions and Squeeze change how they take their axes)."""

    opset: int
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)

    def name(self, base: str) -> str:
        return f"pplgate.scoring/{base}"

    def const(self, base: str, values: list[int]) -> str:
        self.initializers.append(numpy_helper.from_array(np.array(values, dtype=np.int64), self.name(base)))
        return self.name(base)

    def const_f(self, base: str, value: float) -> str:
        self.initializers.append(numpy_helper.from_array(np.array(value, dtype=np.float32), self.name(base)))
        return self.name(base)

    def node(self, op: str, inputs: list[str], out: str, **attrs) -> str:
        name = out if out in (TOKEN_LOSSES,) else self.name(out)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def reduce(self, op: str, x: str, out: str) -> str:
        """``op`` over the last axis, the axis dropped: an attribute before opset 18, an input from 18."""
        if self.opset >= 18:
            return self.node(op, [x, self.const(out + "_axes", [-1])], out, keepdims=0)
        return self.node(op, [x], out, axes=[-1], keepdims=0)

    def unsqueeze(self, x: str, axis: int, out: str) -> str:
        if self.opset >= 13:
            return self.node("Unsqueeze", [x, self.const(out + "_axes", [axis])], out)
        return self.node("Unsqueeze", [x], out, axes=[axis])

    def squeeze(self, x: str, axis: int, out: str) -> str:
        if self.opset >= 13:
            return self.node("Squeeze", [x, self.const(out + "_axes", [axis])], out)
        return self.node("Squeeze", [x], out, axes=[axis])

    def log_sum_exp(self, x: str, out: str) -> str:
        """x [..., N] -> [...]: read at the largest element (see the module's note)."""
        top = self.reduce("ReduceMax", x, out + "_max")
        top_logprob = self.reduce(
            "ReduceMax", self.node("LogSoftmax", [x], out + "_logprobs", axis=-1), out + "_max_logprob"
        )
        lse = self.node("Sub", [top, top_logprob], out + "_at_max")
        # All -inf: LogSoftmax gives NaN; the log-sum-exp of nothing is -inf.
        empty = self.node("Equal", [top, self.const_f(out + "_neg_inf", -np.inf)], out + "_empty")
        return self.node("Where", [empty, top, lse], out)

    def scorer(
        self,
        logits: str,
        labels: str,
        logits_dtype: type,
        vocab: int | None,
        model_vocab: int | None,
        chunked: bool = True,
    ) -> None:
        """logits [B, R, model_vocab] and labels [B, R] -> TOKEN_LOSSES [B, R] float32, over the first ``vocab`` entries
        (None: all of them)."""
        if logits_dtype != np.float32:
            # Score in float32 whatever the model computes in, as the vendor's host code does.
            logits = self.node("Cast", [logits], "logits_f32", to=TensorProto.FLOAT)
        if vocab is not None and model_vocab != vocab:
            # A padded (or symbolic) vocabulary: the tokenizer's entries only.
            logits = self.node(
                "Slice",
                [
                    logits,
                    self.const("vocab_start", [0]),
                    self.const("vocab_end", [vocab]),
                    self.const("vocab_axis", [-1]),
                ],
                "logits_scored",
            )
        count = chunk_count(vocab) if chunked else None
        if count is None or vocab is None:
            lse = self.log_sum_exp(logits, "lse")  # [B, R]
        else:
            shape = self.const("chunks_shape", [0, 0, count, vocab // count])
            lse_k = self.log_sum_exp(self.node("Reshape", [logits, shape], "chunks"), "chunk_lse")  # [B, R, K]
            lse = self.reduce("ReduceLogSumExp", lse_k, "lse")  # [B, R]
        label = self.unsqueeze(labels, 2, "labels_3d")  # [B, R, 1]
        picked = self.squeeze(self.node("GatherElements", [logits, label], "picked", axis=2), 2, "picked_2d")  # [B, R]
        self.node("Sub", [lse, picked], TOKEN_LOSSES)  # [B, R]


def scoring_model(
    vocab: int, logits_dtype: type, model_vocab: int | None = None, chunked: bool = True
) -> onnx.ModelProto:
    """The scorer as a graph of its own: LOGITS [B, R, V] and LABELS [B, R] in, TOKEN_LOSSES [B, R] float32 out.

    R is any run of positions: the CPU path scores a block's logits a few
    hundred rows at a time, in place, so the scorer's own buffers stay small.
    ``chunked`` False sums the whole vocabulary in one pass (to measure what
    the chunks are for: benchmarks/scoring_bias.py).
    """
    model_vocab = vocab if model_vocab is None else model_vocab
    b = _Builder(OPSET)
    b.scorer(LOGITS, LABELS, logits_dtype, vocab, model_vocab, chunked)
    graph = helper.make_graph(
        b.nodes,
        "pplgate_scoring",
        [
            helper.make_tensor_value_info(LOGITS, _ELEMENT[logits_dtype], ["batch", "rows", model_vocab]),
            helper.make_tensor_value_info(LABELS, TensorProto.INT64, ["batch", "rows"]),
        ],
        [helper.make_tensor_value_info(TOKEN_LOSSES, TensorProto.FLOAT, ["batch", "rows"])],
        initializer=b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pplgate")
    model.ir_version = 7  # opset 13's, readable by onnxruntime 1.9
    onnx.checker.check_model(model)
    return model


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def append_scorer(
    model: onnx.ModelProto, logits: str, logits_dtype: type, vocab: int | None, model_vocab: int | None
) -> None:
    """Adds the scorer to ``model``'s own graph, in place: LABELS [batch, sequence] int64 in, TOKEN_LOSSES the one
    output.

    The model's own outputs go: onnxruntime allocates every graph output for
    every run, fetched or not, and the logits alone are 206 MB a block for
    GPT-2, 2% of its run on a CPU.  What they were is kept in the model's
    metadata (LOGITS_META), so the interface reads the same.  Nodes are
    spelled in the model's own opset (11 and later).
    """
    b = _Builder(default_opset(model))
    b.scorer(logits, LABELS, logits_dtype, vocab, model_vocab)
    graph = model.graph
    described = next(o for o in graph.output if o.name == logits)
    tensor = described.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    meta = {"name": logits, "type": onnx.TensorProto.DataType.Name(tensor.elem_type), "shape": shape}
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    graph.input.append(helper.make_tensor_value_info(LABELS, TensorProto.INT64, ["batch", "sequence"]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(TOKEN_LOSSES, TensorProto.FLOAT, ["batch", "sequence"]))
    kept = [p for p in model.metadata_props if p.key != LOGITS_META]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=LOGITS_META, value=json.dumps(meta))
