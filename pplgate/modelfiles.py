"""A model is its ``.onnx`` file and every file its tensors are kept in.

A model over protobuf's 2 GB keeps its weights outside the graph (ONNX
external data): each initializer names a file, by a location relative to the
model's folder.  Changing those bytes changes the model as surely as changing
the graph, so a model's identity covers them all:

- with no external data, its sha256 is the ``.onnx`` file's, as before;
- with external data, it is the sha256 of the lines ``sha256sum`` prints
  for the graph read from standard input (named ``-``, so a renamed copy
  keeps its identity) and for each weights file by its location, sorted.
  In the model's folder: ``{ sha256sum < model.onnx; sha256sum model.onnx_data; } | sha256sum``.

A location that leaves the model's folder (an absolute path, ``../x``, a link
out) is refused before anything is read: onnxruntime and ``fetch`` would
otherwise read, and copy to other nodes, whatever file it names.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from pplgate.digest import file_digest
from pplgate.errors import PplgateError
from pplgate.fileio import CACHE_FIX, read_json_dict, write_json_atomic


@dataclass(frozen=True)
class ModelIdentity:
    sha256: str  # what golden files and saved runs pin
    bytes: int  # of all its files together
    files: dict[str, str]  # name (relative to the model's folder) -> sha256, the .onnx first


# Bumped when read_facts finds what it did not before: facts cached by an older reader are read again.
READER_VERSION = 3  # 2: sparse initializers, attribute tensor lists, local functions; 3: weights by element type


@dataclass(frozen=True)
class GraphFacts:
    """What pplgate reads from a model's graph, once per content: where its tensors are kept, and in what type."""

    locations: list[str]  # external-data locations, as written in the file
    elements: dict[str, int]  # floating element type (FLOAT, FLOAT16, ...) -> elements of the model's tensors in it

    @property
    def stored_in_fp16(self) -> bool:
        """Most of the weights are float16: the model was exported or converted to fp16 already."""
        half = self.elements.get("FLOAT16", 0) + self.elements.get("BFLOAT16", 0)
        return half > self.elements.get("FLOAT", 0) + self.elements.get("DOUBLE", 0)


def _tensors(model):
    """Every tensor a model can hold, wherever ONNX allows one: initializers and sparse initializers of the graph and
    its subgraphs (the branches of a merged decoder's If), tensors in node attributes (Constant), dense or sparse, and
    the same in the bodies of the model's local functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes):
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graph_tensors(sub)


def read_facts(model: Path) -> GraphFacts:
    """``model``'s external-data locations and its tensors' element types; the graph only is read."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as err:
        raise PplgateError(
            f"model file {model} is not a readable ONNX model ({type(err).__name__}): check that it is a complete "
            f".onnx file."
        ) from err
    locations: set[str] = set()
    elements: dict[str, int] = {}
    for tensor in _tensors(proto):
        if uses_external_data(tensor):
            locations.add(ExternalDataInfo(tensor).location)
        kind = onnx.TensorProto.DataType.Name(tensor.data_type)
        if kind in FLOATING:
            count = 1
            for dim in tensor.dims:
                count *= dim
            elements[kind] = elements.get(kind, 0) + count
    return GraphFacts(sorted(locations), elements)


FLOATING = ("FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE")


def leaves_folder(location: str) -> bool:
    """Whether a location, as written, names a file outside the model's folder."""
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    return (
        not location
        or posix.is_absolute()
        or windows.is_absolute()
        or bool(windows.drive)
        or ".." in posix.parts
        or ".." in windows.parts
    )


def check_locations(model: Path, locations: list[str]) -> None:
    """Refuses any location that leaves ``model``'s folder, as written or through a link; reads nothing."""
    folder = model.resolve().parent
    for location in locations:
        outside = leaves_folder(location)
        if not outside:
            target = (model.parent / location).resolve()
            outside = folder not in target.parents
        if outside:
            raise PplgateError(
                f"model {model.name} keeps tensors in {location!r}, which is outside its folder {model.parent}: "
                "nothing was read; export the model again with its weights beside it (onnx.save_model(..., "
                "location=<a file name>))."
            )


def graph_facts(model: Path, cache_dir: Path) -> GraphFacts:
    """``model``'s graph facts, its locations checked to stay in its folder; kept by the model's sha256, so a large
    graph is parsed once."""
    model = Path(model)
    sha = file_digest(model, cache_dir).sha256
    cached = Path(cache_dir) / "external-data" / f"{sha[:32]}.json"
    record = read_json_dict(cached)
    facts = None
    if record.get("sha256") == sha and record.get("reader") == READER_VERSION:
        locations, elements = record.get("locations"), record.get("elements")
        if (
            isinstance(locations, list)
            and all(isinstance(x, str) for x in locations)
            and isinstance(elements, dict)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in elements.values())
        ):
            facts = GraphFacts(locations, elements)
    if facts is None:
        facts = read_facts(model)
        write_json_atomic(
            cached,
            {"sha256": sha, "reader": READER_VERSION, "locations": facts.locations, "elements": facts.elements},
            fix=CACHE_FIX,
        )
    check_locations(model, facts.locations)
    return facts


def external_locations(model: Path, cache_dir: Path) -> list[str]:
    """``model``'s external-data locations, checked to stay in its folder."""
    return graph_facts(model, cache_dir).locations


def check_present(model: Path, locations: list[str], fix: str) -> None:
    """One sentence for the first weights file that is not beside the model, instead of onnxruntime's."""
    for location in locations:
        path = model.parent / location
        if not path.is_file():
            raise PplgateError(
                f"model {model.name} keeps its weights in {location}, which is not beside it in {model.parent}: {fix}."
            )
        if not os.access(path, os.R_OK):
            raise PplgateError(
                f"model {model.name}'s weights file {path} is not readable by this user: make it readable, or {fix}."
            )


def model_identity(model: Path, cache_dir: Path) -> ModelIdentity:
    """The sha256 that pins ``model`` and its external-data files together, their total size, and each file's sha256."""
    model = Path(model)
    locations = external_locations(model, cache_dir)
    check_present(model, locations, "copy the model's folder whole")
    own = file_digest(model, cache_dir)
    digests, total = {}, own.bytes
    for location in locations:
        digest = file_digest(model.parent / location, cache_dir)
        digests[PurePosixPath(location).as_posix()] = digest.sha256
        total += digest.bytes
    files = {model.name: own.sha256, **digests}
    if not locations:
        return ModelIdentity(own.sha256, total, files)
    listing = f"{own.sha256}  -\n" + "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))
    return ModelIdentity(hashlib.sha256(listing.encode()).hexdigest(), total, files)
