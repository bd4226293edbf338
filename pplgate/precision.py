"""fp16 models for providers that run what they are given.

onnxruntime's own float16 converter, with the graph's inputs and outputs
kept as they were (int64 ids in, float32 logits out), so the feeding and the
scoring are the same as for fp32.  The conversion is a file of its own,
cached next to its source (weights in ``<name>.data`` beside it when over
protobuf's 2 GB), loaded by path like any model, and redone when the source
changes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from pplgate.artifacts import Artifact
from pplgate.digest import sha256_of
from pplgate.errors import PplgateError
from pplgate.fileio import remove_leftovers, user_cache_dir, write_atomic
from pplgate.modelfiles import graph_facts, model_identity
from pplgate.target import Precision, Target


def load(path: Path) -> onnx.ModelProto:
    """The source model, external data included, for conversion."""
    try:
        return onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError) as err:
        raise PplgateError(
            f"model file {path} is not a readable ONNX model ({type(err).__name__}): check that it is a complete "
            f".onnx file."
        ) from err


def fp16_path(source: Path) -> Path:
    return source.with_name(source.stem + ".fp16.onnx")


# protobuf cannot serialize a message of 2 GiB or more: larger conversions keep
# their weights in a file of their own beside the model (ONNX external data).
PROTOBUF_LIMIT = 2**31 - 2**20
CONVERSION_FIX = "copy the model to a writable folder and pass that path to --model"


def save(model: onnx.ModelProto, target: Path, external_over: int = PROTOBUF_LIMIT) -> str:
    """Writes ``model`` to ``target`` atomically; returns the sha256 of ``target``'s bytes."""
    if model.ByteSize() < external_over:
        data = model.SerializeToString()
        write_atomic(target, lambda f: f.write(data), fix=CONVERSION_FIX)
        return hashlib.sha256(data).hexdigest()
    # onnx writes the weights beside the file it saves: save into a scratch
    # folder beside the target, then move the weights, then the model, into place.
    # Named with this pid, as write_atomic's temporary files are: a killed conversion's is removed by the next.
    remove_leftovers(target.parent, f".{target.name}.")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.") as scratch:
        staged = Path(scratch) / target.name
        onnx.save_model(
            model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True, location=target.name + ".data"
        )
        os.replace(staged.with_name(target.name + ".data"), target.with_name(target.name + ".data"))
        os.replace(staged, target)
    return sha256_of(target)


def convert_fp16(source: Path, cache_dir: Path | None = None, external_over: int = PROTOBUF_LIMIT) -> Path:
    """The fp16 conversion of ``source``, made once per source content and remade when it is not what was written."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as err:  # a build without onnxruntime.transformers, or without what it imports
        import onnxruntime

        raise PplgateError(
            f"fp16 needs onnxruntime's float16 converter (onnxruntime.transformers.float16), which this onnxruntime "
            f"{onnxruntime.__version__} cannot import ({err}): install an onnxruntime build that ships "
            f"onnxruntime.transformers, "
            "or run fp32."
        ) from None
    target = fp16_path(source)
    # By content: a same-size, same-time replacement of the source is another model,
    # and so is the same graph with other external data.
    identity = model_identity(source, cache_dir or user_cache_dir()).sha256
    artifact = Artifact(target, source.name, {"source_sha256": identity}, verb="converting", fix=CONVERSION_FIX)
    try:
        # Hashed from the bytes just written, so checking a golden pin costs no second read.
        return artifact.ensure(
            lambda: save(_checked(_converted(convert_float_to_float16, load(source)), source), target, external_over)
        )
    except PermissionError as err:
        raise PplgateError(
            f"cannot write the fp16 conversion of {source.name} next to it in {source.parent}: {CONVERSION_FIX}."
        ) from err


def _checked(model: onnx.ModelProto, source: Path) -> onnx.ModelProto:
    """The conversion, if ONNX's checker finds it valid: an invalid one is never written, so never kept."""
    if model.ByteSize() >= PROTOBUF_LIMIT:
        return model  # the checker takes a proto under 2 GB only; onnxruntime checks it when the session is made
    try:
        # With ONNX's type inference: a node given a type it does not take (Celu in fp16) is invalid too.
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise PplgateError(
            f"onnxruntime's float16 converter made an invalid model of {source.name} "
            f"({str(err).strip().splitlines()[0]}): nothing was kept; run fp32, or convert it with your own tools and "
            "pass the fp16 model to --model with --precision fp16."
        ) from None
    return model


def _converted(convert, model: onnx.ModelProto) -> onnx.ModelProto:
    # onnxruntime 1.9's converter calls numpy functions numpy has deprecated, once a tensor: not the user's to act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return convert(model, keep_io_types=True)


def session_model(source: Path, target: Target, cache_dir: Path | None = None) -> Path:
    """The file a session of ``source`` on ``target`` loads: the source, or its fp16 conversion.

    A model whose weights are fp16 already (an fp16 export, a conversion) is
    run as shipped at fp16, and refused at any other precision: it cannot
    compute in fp32, and a row saying it did would be false.
    """
    if graph_facts(source, cache_dir or user_cache_dir()).stored_in_fp16:
        if target.precision is not Precision.FP16:
            raise PplgateError(
                f"model {source.name} is fp16 already (most of its weights are float16), so it cannot run at "
                f"{target.precision}: pass the fp32 model for {target.precision}, or run this one with --precision "
                "fp16."
            )
        return source
    return convert_fp16(source, cache_dir) if target.converts_to_fp16 else source
