"""``python -m pplgate convert``: the graph a session runs, written out for deployment.

The same code and cache as a run (``pplgate.precision.session_model``), so the
file written is byte for byte the one the gate evaluated for that device and
precision, and the line printed names the sha256 a golden file pins for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pplgate.digest import sidecar
from pplgate.errors import PplgateError
from pplgate.fileio import write_atomic
from pplgate.golden import refuse_over_cases
from pplgate.modelfiles import external_locations, model_identity
from pplgate.models import resolve_model
from pplgate.precision import fp16_path, session_model
from pplgate.redact import bare_address
from pplgate.scored import scored_path
from pplgate.target import Precision, Target


def write_session_model(spec: str, target: Target, output: Path, model_dir: Path, cache_dir: Path) -> str:
    """Writes what a ``target`` session of ``spec`` loads to ``output``, with every weights file its graph names beside
    it; returns the line that says what it is."""
    target.check()
    source = resolve_model(spec, Path(model_dir), cache_dir=cache_dir)
    graph = session_model(source, target, cache_dir)
    output = Path(output)
    refuse_over_cases(output, "--output")
    locations = external_locations(graph, cache_dir)
    files = [(graph, output)] + [(graph.parent / loc, output.parent / loc) for loc in locations]
    # The source, its fp16 conversion and the scored graphs of both (pplgate.scored), with their weights and records.
    made = (source, graph, fp16_path(source), scored_path(source), scored_path(fp16_path(source)))
    protected = set().union(*(_made_of(m, cache_dir) for m in made))
    for _, written in files:
        if written.resolve() not in protected:
            continue
        if written == output:
            raise PplgateError(
                f"--output {output} is a file of the model it would be written from ({source.name}, its fp16 "
                f"conversion, "
                "their weights or records): pass another path."
            )
        raise PplgateError(
            f"--output {output} would write the weights file it names, {written.name}, over {written}, a file of the "
            f"model it "
            f"is written from ({source.name}, its fp16 conversion, their weights or records): pass a path in another "
            f"folder."
        )
    fix = "pass --output a file path in a writable folder with room"
    done: list[Path] = []
    try:
        # The weights first and the graph last: a graph is never there without the files it names.
        for origin, written in reversed(files):
            _copy(origin, written, fix)
            done.append(written)
    except BaseException:
        for written in done:
            written.unlink(missing_ok=True)
        raise
    beside = (
        f", its weights beside it in {', '.join(locations)} (the names the model reads them by)" if locations else ""
    )
    digest = model_identity(output, cache_dir).sha256  # the graph and its weights: what a golden file pins
    kind = target.device.kind
    if target.converts_to_fp16 and graph == source:
        what = f"{bare_address(spec)} itself: its weights are fp16 already, and {target.key} runs it as shipped"
    elif target.converts_to_fp16:
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


def _made_of(model: Path, cache_dir: Path) -> set[Path]:
    """A model's files, resolved: the graph, the weights it names, and pplgate's records beside them."""
    if not model.is_file():
        return {model.resolve(), sidecar(model).resolve(), model.with_name(model.name + ".data").resolve()}
    files = [model] + [model.parent / loc for loc in external_locations(model, cache_dir)]
    return {p.resolve() for f in files for p in (f, sidecar(f))} | {model.with_name(model.name + ".data").resolve()}


def _copy(origin: Path, written: Path, fix: str) -> None:
    with open(origin, "rb") as src:
        write_atomic(written, lambda out: shutil.copyfileobj(src, out), fix)
