"""What a language-model graph takes and gives, read from its onnxruntime session.

Styles met in the field, all fed by input name with the graph's own dtypes,
only the logits fetched:

- the vendor's: ``input_ids``, ``attention_mask`` -> ``logits``;
- Hugging Face/optimum ``decoder_model.onnx``: the same, ``position_ids`` on
  some, ``present.*`` outputs;
- ``decoder_with_past_model.onnx``: also ``past_key_values.N.key/value``
  [batch, heads, past, head_dim], fed with a past of length 0;
- ``decoder_model_merged.onnx``: also ``use_cache_branch`` [1] bool, fed false.

The interface comes from the session (``get_inputs``/``get_outputs``), not from
``onnx.load``: the model file is never read into Python memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pplgate.errors import PplgateError

IDS, MASK, POSITIONS, CACHE_BRANCH = "input_ids", "attention_mask", "position_ids", "use_cache_branch"
PAST = re.compile(r"^past_key_values\.\d+\.(key|value)$")
# onnxruntime's NodeArg.type -> numpy
_DTYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(bool)": np.bool_,
    "tensor(double)": np.float64,
}
# What logits may be: scored in float32 (float16 and double are cast), as the vendor's host code scores them.
LOGITS_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")


@dataclass(frozen=True)
class GraphInterface:
    input_dtypes: dict[str, type]  # every input the graph declares, by name
    # past_key_values.N.key/value -> (heads, head_dim), fed as [B, heads, 0, head_dim]
    past_shapes: dict[str, tuple[int, int]]
    logits: str
    logits_dtype: type  # float32, or float16 for a graph converted without kept I/O types
    vocab_size: int | None  # None when the graph leaves it symbolic
    sequence_length: int | None  # None when dynamic
    batch_size: int | None = None  # blocks per run the graph takes; None when dynamic

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.input_dtypes)


def _dim(d) -> int | None:
    return d if isinstance(d, int) else None


@dataclass(frozen=True)
class _Arg:
    """A graph input or output as onnxruntime's NodeArg describes it."""

    name: str
    type: str
    shape: list


_TYPE_NAMES = {
    1: "tensor(float)",
    10: "tensor(float16)",
    11: "tensor(double)",
    7: "tensor(int64)",
    6: "tensor(int32)",
    9: "tensor(bool)",
}


class GraphArgs:
    """A graph read with onnx, answering as an onnxruntime session does (``get_inputs``, ``get_outputs``)."""

    def __init__(self, graph):
        initialized = {t.name for t in graph.initializer}
        self._inputs = [self._arg(v) for v in graph.input if v.name not in initialized]
        self._outputs = [self._arg(v) for v in graph.output]

    @staticmethod
    def _arg(value) -> _Arg:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        return _Arg(value.name, _TYPE_NAMES.get(tensor.elem_type, f"tensor(type {tensor.elem_type})"), dims)

    def get_inputs(self) -> list[_Arg]:
        return self._inputs

    def get_outputs(self) -> list[_Arg]:
        return self._outputs


def inspect(session, name: str) -> GraphInterface:
    """Reads the interface of a session (or of ``GraphArgs``); refuses graphs that cannot be fed or scored the vendor's
    way.  The scorer's own input and output, in a graph pplgate appended it to, are not the model's."""
    from pplgate.scoring import LABELS

    inputs = [i for i in session.get_inputs() if i.name != LABELS]
    dtypes = {i.name: _DTYPES.get(i.type) for i in inputs}
    if IDS not in dtypes:
        raise PplgateError(
            f"model {name} has no input named input_ids (its inputs: {', '.join(dtypes) or 'none'}): export the "
            f"language model with an input_ids input."
        )
    unfed = [n for n in dtypes if n not in (IDS, MASK, POSITIONS, CACHE_BRANCH) and not PAST.match(n)]
    if unfed:
        raise PplgateError(
            f"model {name} needs inputs pplgate does not feed ({', '.join(unfed)}): export it as a Hugging "
            f"Face/optimum decoder "
            "(input_ids, attention_mask, position_ids, past_key_values.N.key/value, use_cache_branch)."
        )
    untyped = next((i for i in inputs if dtypes[i.name] is None), None)
    if untyped is not None:
        raise PplgateError(
            f"model {name}'s input {untyped.name} is {untyped.type}, which pplgate cannot feed: export it with "
            f"integer ids, "
            "a mask of int64, int32, float or bool, and float or float16 past values."
        )
    typed: dict[str, type] = {k: v for k, v in dtypes.items() if v is not None}
    past_shapes = {}
    for i in inputs:
        if PAST.match(i.name):
            shape = list(i.shape)
            if len(shape) != 4 or _dim(shape[1]) is None or _dim(shape[3]) is None:
                raise PplgateError(
                    f"model {name} declares {i.name} with shape {shape}, not [batch, heads, past, head_dim] with "
                    f"fixed heads and head_dim: "
                    "export it with optimum, or without a past key/value cache."
                )
            past_shapes[i.name] = (shape[1], shape[3])
    logits = _find_logits(_model_outputs(session), name)
    if logits.type not in LOGITS_TYPES:
        raise PplgateError(
            f"model {name}'s logits output {logits.name} is {logits.type}, not {', '.join(LOGITS_TYPES)}: "
            "export the language model with floating-point logits."
        )
    if logits.shape and len(logits.shape) != 3:
        raise logits_rank(name, len(logits.shape))
    ids_shape = next(i for i in inputs if i.name == IDS).shape
    if (
        len(ids_shape) == 2
        and len(logits.shape) == 3
        and None not in (_dim(ids_shape[1]), _dim(logits.shape[1]))
        and ids_shape[1] != logits.shape[1]
    ):
        raise logits_short(name, logits.shape[1], ids_shape[1])
    return GraphInterface(
        input_dtypes=typed,
        past_shapes=past_shapes,
        logits=logits.name,
        logits_dtype=_DTYPES[logits.type],
        vocab_size=_dim(logits.shape[-1]),
        sequence_length=_dim(ids_shape[1]) if len(ids_shape) == 2 else None,
        batch_size=_dim(ids_shape[0]) if len(ids_shape) == 2 else None,
    )


# ONNX's element type names, as onnxruntime spells them.
_ELEMENT_TYPES = {"FLOAT": "tensor(float)", "FLOAT16": "tensor(float16)", "DOUBLE": "tensor(double)"}


def _model_outputs(session) -> list:
    """The model's own outputs; for a graph pplgate appended its scorer to (whose only output is the losses), the
    logits it was made from, as its metadata describes them."""
    import json

    from pplgate.scoring import LOGITS_META, TOKEN_LOSSES

    outputs = session.get_outputs()
    if [o.name for o in outputs] != [TOKEN_LOSSES]:
        return outputs
    meta = json.loads(session.get_modelmeta().custom_metadata_map[LOGITS_META])
    kind = _ELEMENT_TYPES.get(meta["type"], f"tensor({meta['type'].lower()})")
    return [_Arg(meta["name"], kind, list(meta["shape"]))]


def _find_logits(outputs, name: str):
    by_name = {o.name: o for o in outputs}
    if "logits" in by_name:
        return by_name["logits"]
    candidates = [
        o for o in outputs if not o.name.startswith("present") and len(o.shape) == 3 and o.type in LOGITS_TYPES
    ]
    if len(candidates) != 1:
        raise PplgateError(
            f"model {name} has no logits output (its outputs: {', '.join(by_name) or 'none'}): export it with a "
            f"[batch, sequence, vocab] output named logits."
        )
    return candidates[0]


def feeds(iface: GraphInterface, ids: np.ndarray) -> dict[str, np.ndarray]:
    """ids [B, T] -> every input the graph declares, in its own dtype."""
    b, t = ids.shape
    out: dict[str, np.ndarray] = {}
    for name, dtype in iface.input_dtypes.items():
        if name == IDS:
            value = ids
        elif name == MASK:
            value = np.ones((b, t))  # the vendor attends to every position; a past of 0 adds none
        elif name == POSITIONS:
            value = np.broadcast_to(np.arange(t), (b, t))
        elif name == CACHE_BRANCH:
            value = np.zeros(1)  # false: the merged decoder's branch without a cache
        else:
            heads, head_dim = iface.past_shapes[name]
            value = np.zeros((b, heads, 0, head_dim))  # [B, H, 0, D]: a past of length 0
        out[name] = np.ascontiguousarray(value, dtype=dtype)
    return out


def logits_rank(name: str, rank: int) -> PplgateError:
    """The sentence for logits that are not [batch, sequence, vocab]."""
    return PplgateError(
        f"model {name} gives logits of rank {rank}, not [batch, sequence, vocab] (rank 3), so no position can be "
        f"scored: "
        "export the language model with logits for every input position, as transformers' export does."
    )


def logits_short(name: str, rows: int, tokens: int) -> PplgateError:
    """The sentence for logits that are not one row per input position."""
    return PplgateError(
        f"model {name} gives {rows} rows of logits for {tokens} input tokens, not one per position, so no token can "
        f"be scored against the next: "
        "export the language model with logits for every input position ([batch, sequence, vocab]), as transformers' "
        "export does."
    )


def check_fits(
    iface: GraphInterface,
    name: str,
    block_size: int,
    vocab_size: int,
    max_id: int,
    batch_size: int = 1,
    shortest: int | None = None,
) -> None:
    """Refuses a graph whose shape cannot take the blocks (``block_size`` the longest, ``shortest`` the shortest) or
    whose vocabulary is smaller than the tokenizer's."""
    if iface.batch_size is not None and batch_size != iface.batch_size:
        raise PplgateError(
            f"model {name} takes exactly {iface.batch_size} block(s) per run (its input_ids is [{iface.batch_size}, "
            f"sequence]), not {batch_size}: "
            f"pass --batch-size {iface.batch_size} (in the gate --gate-batch-size={iface.batch_size}), or export it "
            f"with a dynamic batch axis."
        )
    if iface.sequence_length is not None and iface.sequence_length > block_size:
        raise PplgateError(
            f"model {name} takes sequences of exactly {iface.sequence_length} tokens, more than the {block_size} of a "
            f"block: "
            f"pass --block-size {iface.sequence_length} (a case's method.block_size), or export it with a dynamic "
            f"sequence axis."
        )
    if iface.sequence_length is not None and shortest is not None and shortest < iface.sequence_length:
        raise PplgateError(
            f"model {name} takes sequences of exactly {iface.sequence_length} tokens, but one block is {shortest} "
            f"tokens "
            "(the last of a 1,000-row batch with fewer ids, as the vendor's grouping cuts it): use --grouping "
            "contiguous, "
            "or export it with a dynamic sequence axis."
        )
    if iface.sequence_length is not None and iface.sequence_length < block_size:
        raise PplgateError(
            f"model {name} takes sequences of {iface.sequence_length} tokens, fewer than the {block_size} of a block: "
            f"pass --block-size {iface.sequence_length} (a case's method.block_size), or export it with a dynamic or "
            f"{block_size}-token sequence axis."
        )
    if iface.vocab_size is not None and iface.vocab_size < vocab_size:
        raise PplgateError(
            f"model {name} predicts {iface.vocab_size} tokens, but the tokenizer has {vocab_size}: pass --tokenizer "
            f"with the tokenizer the model was trained with."
        )
    if max_id >= (iface.vocab_size or vocab_size):
        raise PplgateError(
            f"the data holds token id {max_id}, outside the {iface.vocab_size or vocab_size} ids of model {name}: "
            f"pass --tokenizer with the tokenizer the model was trained with."
        )
