"""The model's graph with the scorer appended (``pplgate.scoring``), written once beside the model.

A session of it takes the labels as one more input and gives the per-token
losses as one more output: the loss is computed where the logits are made.
It is a file of its own, like an fp16 conversion, made once per model content
and scorer version, and loaded by path:

- a model whose weights are in files of their own (ONNX external data) gets a
  small graph beside it that names the same files: nothing is copied;
- a model whose weights are inside it gets a copy with them inside too (or in
  ``<name>.data`` beside it, over protobuf's 2 GB).

Where that file cannot be written (a read-only folder), the caller scores in
a session of its own instead; the numbers are the same.
"""

from __future__ import annotations

from pathlib import Path

from pplgate.artifacts import Artifact
from pplgate.interface import GraphArgs, inspect
from pplgate.modelfiles import external_locations
from pplgate.precision import PROTOBUF_LIMIT, save
from pplgate.scoring import OLDEST_OPSET, SCORER_VERSION, append_scorer, default_opset

SCORED_FIX = "copy the model to a writable folder, or pass --scoring host"


def scored_path(model: Path) -> Path:
    return model.with_name(model.stem + ".scored.onnx")


def scored_model(model: Path, identity: str, vocab: int | None, cache_dir: Path) -> Path | None:
    """The scored graph of ``model`` (whose content is ``identity``), scoring ``vocab`` entries; None where the model's
    opset is older than the scorer can be spelled in."""
    target = scored_path(model)
    artifact = Artifact(
        target,
        model.name,
        {"source_sha256": identity, "scorer": SCORER_VERSION, "vocab": vocab},
        verb="appending the scorer to",
        fix=SCORED_FIX,
    )
    if artifact.current():
        return target
    import onnx

    graph_only = onnx.load(str(model), load_external_data=False)
    if default_opset(graph_only) < OLDEST_OPSET:
        return None
    _refine_outputs(graph_only)
    iface = inspect(GraphArgs(graph_only.graph), model.name)

    def make() -> str:
        # Weights in files of their own stay there, named by the same locations (load_external_data=False kept them
        # as references, checked to stay in the folder); weights inside the model were read with it and come along.
        external_locations(model, cache_dir)
        append_scorer(graph_only, iface.logits, iface.logits_dtype, vocab or iface.vocab_size, iface.vocab_size)
        return save(graph_only, target, PROTOBUF_LIMIT)

    return artifact.ensure(make)


def _refine_outputs(model) -> None:
    """The outputs' shapes as ONNX infers them, where the file leaves a dimension symbolic (a vocabulary written as
    ``vocab``): what onnxruntime's session of the model itself would report, so the scored graph reads the same."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph.output
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
        return  # custom operators ONNX cannot infer through: the declared shapes stand
    for declared, found in zip(model.graph.output, inferred):
        if declared.name == found.name:
            declared.CopyFrom(found)
