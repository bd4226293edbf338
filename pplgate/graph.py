"""What a language-model graph takes and gives, read from the ONNX file.

Two styles are met in the field: the vendor's (``input_ids``,
``attention_mask`` -> ``logits``) and Hugging Face/optimum exports (the same
plus ``position_ids`` on some, and ``present.*`` outputs).  Inputs are fed by
name with the graph's own dtypes; only the logits are fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from pplgate.errors import PplgateError

IDS, MASK, POSITIONS = "input_ids", "attention_mask", "position_ids"
FED = (IDS, MASK, POSITIONS)


@dataclass(frozen=True)
class GraphInterface:
    input_dtypes: dict[str, np.dtype]  # every input the graph declares, by name
    logits: str
    vocab_size: int | None  # None when the graph leaves it symbolic
    sequence_length: int | None  # None when dynamic
    opset: int

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.input_dtypes)


def load(path: Path) -> onnx.ModelProto:
    path = Path(path)
    if path.stat().st_size == 0:
        raise PplgateError(f"model file {path} is empty: delete it and download or export the model again.")
    try:
        return onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError) as err:
        raise PplgateError(f"model file {path} is not a readable ONNX model ({type(err).__name__}): check that it is a complete .onnx file.") from err


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | None:
    return d.dim_value if d.HasField("dim_value") else None


def inspect(model: onnx.ModelProto, name: str) -> GraphInterface:
    """Reads the interface; refuses graphs that cannot be fed or scored the vendor's way."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    dtypes = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in inputs}
    if IDS not in dtypes:
        raise PplgateError(f"model {name} has no input named input_ids (its inputs: {', '.join(dtypes) or 'none'}): export the language model with an input_ids input.")
    unfed = [n for n in dtypes if n not in FED]
    if unfed:
        raise PplgateError(f"model {name} needs inputs pplgate does not feed ({', '.join(unfed)}): export it without a past key/value cache, as the vendor's *-nocache.onnx is.")
    logits = _find_logits(graph.output, name)
    shape = logits.type.tensor_type.shape.dim
    ids_shape = next(i for i in inputs if i.name == IDS).type.tensor_type.shape.dim
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return GraphInterface(
        input_dtypes=dtypes,
        logits=logits.name,
        vocab_size=_dim(shape[-1]),
        sequence_length=_dim(ids_shape[1]) if len(ids_shape) == 2 else None,
        opset=opset,
    )


def _find_logits(outputs, name: str) -> onnx.ValueInfoProto:
    by_name = {o.name: o for o in outputs}
    if "logits" in by_name:
        return by_name["logits"]
    candidates = [
        o
        for o in outputs
        if not o.name.startswith("present")
        and len(o.type.tensor_type.shape.dim) == 3
        and o.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    ]
    if len(candidates) != 1:
        raise PplgateError(f"model {name} has no logits output (its outputs: {', '.join(by_name) or 'none'}): export it with a [batch, sequence, vocab] output named logits.")
    return candidates[0]


def check_fits(iface: GraphInterface, name: str, block_size: int, vocab_size: int, max_id: int) -> None:
    """Refuses a graph whose shape cannot take the blocks or disagrees with the tokenizer."""
    if iface.sequence_length is not None and iface.sequence_length < block_size:
        raise PplgateError(f"model {name} takes sequences of {iface.sequence_length} tokens, fewer than the {block_size} of a block: export it with a dynamic or {block_size}-token sequence axis.")
    if iface.vocab_size is not None and iface.vocab_size != vocab_size:
        raise PplgateError(f"model {name} predicts {iface.vocab_size} tokens, but the tokenizer has {vocab_size}: pass --tokenizer with the tokenizer the model was trained with.")
    if max_id >= (iface.vocab_size or vocab_size):
        raise PplgateError(f"the data holds token id {max_id}, outside the {iface.vocab_size or vocab_size} ids of model {name}: pass --tokenizer with the tokenizer the model was trained with.")
