"""``python -m pplgate convert``: the graph a session runs, written out for deployment.

The same code and cache as a run (``pplgate.precision.session_model``), so the
file written is byte for byte the one the gate evaluated for that device and
precision, and the line printed names the sha256 a golden file pins for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic
from pplgate.modelfiles import model_identity
from pplgate.models import resolve_model
from pplgate.precision import session_model
from pplgate.redact import bare_address
from pplgate.target import Precision, Target


def write_session_model(spec: str, target: Target, output: Path, model_dir: Path, cache_dir: Path) -> str:
    """Writes what a ``target`` session of ``spec`` loads to ``output``; returns the line that says what it is."""
    target.check()
    source = resolve_model(spec, Path(model_dir), cache_dir=cache_dir)
    graph = session_model(source, target, cache_dir)
    output = Path(output)
    if output.exists() and output.resolve() in (source.resolve(), graph.resolve()):
        raise PplgateError(f"--output {output} is the model it would be written from: pass another path.")
    fix = "pass --output a file path in a writable folder with room"
    with open(graph, "rb") as src:
        write_atomic(output, lambda out: shutil.copyfileobj(src, out), fix)
    weights = graph.with_name(graph.name + ".data")  # precision._save names a conversion's external weights so
    beside = ""
    if weights.is_file() and graph != source:
        with open(weights, "rb") as src:
            write_atomic(output.with_name(weights.name), lambda out: shutil.copyfileobj(src, out), fix)
        beside = f", its weights beside it in {weights.name} (the name the model reads them by)"
    digest = model_identity(output, cache_dir).sha256  # the graph and its weights: what a golden file pins
    kind = target.device.kind
    if target.converts_to_fp16:
        what = f"onnxruntime's fp16 conversion of {bare_address(spec)}, as the {target.key} session loads it"
    elif target.precision is Precision.FP16:
        what = (
            f"{bare_address(spec)} itself: {kind.name} runs fp16 as its provider's own mixed precision on the fp32 "
            f"model "
            f"({kind.fp16_env}=1 when the session is created)"
        )
    else:
        what = f"{bare_address(spec)} itself: {target.key} runs the model as given"
    return f"wrote {output} (sha256 {digest}){beside}: {what}"
