"""``python -m pplgate localize``: the first node where a run departs from its reference.

Both sides run the same blocks with intermediate tensors exposed as graph
outputs, matched by tensor name, visited in topological order.  Per tensor:
max absolute error, relative L2 error ||a - b|| / ||b|| and cosine
similarity, accumulated over the blocks; only these statistics are kept.

Memory stays bounded: each model is saved once with its weights in a file of
their own, and each group of GROUP tensors is a small graph file over the
same weights, run on one side and then the other (one session alive at a
time) and dropped before the next group.

The first divergence is the first tensor whose relative error is above the
threshold for the compared precisions and at least JUMP times the largest
error among its inputs: rounding carried from earlier nodes grows slowly,
a broken kernel or weight makes the error jump at its node.

A graph whose tensors are all outputs is not the graph the user's session
runs: onnxruntime cannot fuse a node whose intermediate result must be kept
(a LayerNorm spelled out, a GELU), and an fp16 graph unfused can overflow
where the fused kernel accumulates in fp32.  So the sessions as they run,
nothing exposed, are compared first at their logits, and each tapped run's
logits against the session's: a divergence the session does not have is
said to be the tapped graph's, never reported as the session's.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from pplgate.blocks import Blocks
from pplgate.errors import PplgateError
from pplgate.fileio import remove_leftovers, write_atomic
from pplgate.interface import feeds, inspect
from pplgate.precision import session_model
from pplgate.runtime import ORT_RUN_ERRORS, RuntimeOptions, create_session
from pplgate.target import Precision, Target

# Tensors fetched per run of a side, for one block: about 400 MB of a GPT-2-small layer.
GROUP = 32
# rel_l2 above which a tensor may diverge, by whether fp16 is on either side.
# Measured on the built models (README, "localize"): fp32 against fp32 on the
# CPU is exact; across devices fp32 differs by accumulation order, 1e-7 to
# 1e-6; fp16 rounds every tensor, up to about 1e-2 in attention scores.
DEFAULT_THRESHOLD = {False: 1e-4, True: 5e-2}
# Elements compared at a time, in float64.
ELEMENTS = 1 << 20
# How many times its inputs' largest error a tensor's error must be to be where it starts.
JUMP = 10.0
# A tapped graph's logits within this relative L2 error of the session's compute the same thing:
# fp32 reordering reaches 1e-7 to 1e-6, a lost fusion in fp16 far more.
TAPPING_TOLERANCE = 1e-5
_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


@dataclass
class TensorError:
    output: str  # the tensor's name
    node: str  # the node that makes it
    op_type: str
    depth: int  # longest path from the graph's inputs, in nodes
    inputs: list[str]  # the tensors other nodes make that it is made from
    weights: list[str]  # its other inputs: initializers and graph inputs, not compared
    max_abs: float = 0.0
    rel_l2: float = 0.0
    cosine: float = 1.0
    nonfinite_both: int = 0  # positions that are the same NaN or infinity on both sides
    # Running sums over the blocks: ||a - b||^2, ||b||^2, ||a||^2, a.b
    _sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0], repr=False)

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = a.ravel(), b.ravel()
        # In float64, a million elements at a time: a logits-sized tensor would
        # otherwise take four float64 copies of itself (1.6 GB for GPT-2's).
        for start in range(0, a.size, ELEMENTS):
            x, y = a[start : start + ELEMENTS].astype(np.float64), b[start : start + ELEMENTS].astype(np.float64)
            # The same non-finite value in the same place on both sides (NaN and NaN, inf and inf) is equal: it
            # counts as no error, and the norms are of the finite values.
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            shared = same & ~np.isfinite(x)
            self.nonfinite_both += int(shared.sum())
            if shared.any():
                x, y = np.where(shared, 0.0, x), np.where(shared, 0.0, y)
            d = np.where(same, 0.0, x - y)
            self.max_abs = max(self.max_abs, float(np.abs(d).max()) if d.size else 0.0)
            for i, v in enumerate((d @ d, y @ y, x @ x, x @ y)):
                self._sums[i] += float(v)
        dd, bb, aa, ab = self._sums
        self.rel_l2 = math.sqrt(dd / bb) if bb > 0 else (0.0 if dd == 0 else math.inf)
        self.cosine = ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else (1.0 if dd == 0 else 0.0)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


@dataclass
class Localization:
    run: str  # e.g. cpu-fp16 of model.onnx
    reference: str
    blocks: int
    threshold: float
    tensors: list[TensorError]  # compared, in topological order
    only_run: list[str]  # tensors the reference does not have
    only_reference: list[str]
    # The run's session against the reference's as they run, nothing exposed: their logits.
    session_logits: TensorError | None = None
    # The largest relative L2 error between a tapped run graph's logits and the run's session's:
    # above 0, exposing tensors changed what onnxruntime computes (fusions lost).
    tapping_rel_l2: float = 0.0

    @property
    def session_diverges(self) -> bool | None:
        """Whether the run's session, as it runs, departs from the reference's at its logits (None: not compared)."""
        if self.session_logits is None:
            return None
        return not math.isfinite(self.session_logits.rel_l2) or self.session_logits.rel_l2 > self.threshold

    @property
    def tapping_changed(self) -> bool:
        """Whether the tapped graphs compute other logits than the session (beyond fp32 rounding)."""
        return not math.isfinite(self.tapping_rel_l2) or self.tapping_rel_l2 > TAPPING_TOLERANCE

    @property
    def first_divergence(self) -> TensorError | None:
        """The first tensor whose error jumps past the threshold, or the first NaN or infinite one whose inputs were
        finite.
        """
        errors = {t.output: t.rel_l2 for t in self.tensors}
        for t in self.tensors:
            before = [errors.get(i, 0.0) for i in t.inputs]
            if not all(math.isfinite(b) for b in before):
                continue  # carried from an input: it started there
            if not math.isfinite(t.rel_l2) or (
                t.rel_l2 > self.threshold and t.rel_l2 > JUMP * max(before, default=0.0)
            ):
                return t
        return None

    def report(self) -> dict:
        first = self.first_divergence
        return {
            "run": self.run,
            "reference": self.reference,
            "blocks": self.blocks,
            "threshold": self.threshold,
            "jump": JUMP,
            "first_divergence": None
            if first is None
            else {
                "node": first.node,
                "op_type": first.op_type,
                "output": first.output,
                "rel_l2": first.rel_l2,
                "max_abs": first.max_abs,
                "cosine": first.cosine,
                "inputs": {i: self.error(i) for i in first.inputs},
            },
            "session_logits": None
            if self.session_logits is None
            else {
                k: v
                for k, v in self.session_logits.record().items()
                if k in ("rel_l2", "max_abs", "cosine", "nonfinite_both")
            },
            "session_diverges": self.session_diverges,
            "tapping_logits_rel_l2": self.tapping_rel_l2,
            "tapping_changed_the_graph": self.tapping_changed,
            "tensors": [t.record() for t in self.tensors],
            "only_in_run": self.only_run,
            "only_in_reference": self.only_reference,
        }

    def error(self, name: str) -> float | None:
        return next((t.rel_l2 for t in self.tensors if t.output == name), None)


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a model file on a device at a precision."""

    path: Path  # the file the session loads (an fp16 conversion where the provider needs one)
    target: Target

    @property
    def label(self) -> str:
        return f"{self.target.spec} of {self.path.name}"

    @classmethod
    def of(cls, model: Path, target: Target, cache_dir: Path | None = None) -> Side:
        """``model`` as a session on ``target`` loads it: converted to fp16 where the provider has no mode of its own"""
        return cls(session_model(Path(model), target, cache_dir), target)


class TapModel:
    """A model saved once with its weights beside it; ``tap(names)`` writes a graph exposing ``names``."""

    def __init__(self, path: Path, workdir: Path):
        self.folder = Path(tempfile.mkdtemp(dir=workdir))
        model = onnx.load(str(path))  # weights included, this once
        onnx.save_model(
            model,
            str(self.folder / "model.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="weights.data",
        )
        del model
        self.graph_only = onnx.load(str(self.folder / "model.onnx"), load_external_data=False)
        inferred = onnx.shape_inference.infer_shapes(self.graph_only)
        self.types = {
            v.name: v.type.tensor_type.elem_type
            for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
        }

    def tensors(self) -> list[TensorError]:
        """Every floating-point tensor a node of the main graph makes, in topological order."""
        depth: dict[str, int] = {}
        out = []
        for node in self.graph_only.graph.node:
            made_from = [i for i in node.input if i in depth]
            weights = [i for i in node.input if i and i not in depth]
            d = 1 + max((depth[i] for i in made_from), default=0)
            for name in node.output:
                if not name:
                    continue
                depth[name] = d
                if node.op_type != "Constant" and self.types.get(name) in _FLOATS:
                    out.append(TensorError(name, node.name or name, node.op_type, d, made_from, weights))
        return out

    def logits_name(self) -> str:
        """The graph's logits output: "logits", else its first output."""
        names = [o.name for o in self.graph_only.graph.output]
        return "logits" if "logits" in names else names[0]

    def tap(self, names: list[str]) -> Path:
        graph = self.graph_only.graph
        kept = [o for o in graph.output if o.name == self.logits_name()]
        del graph.output[:]
        graph.output.extend(
            kept + [onnx.helper.make_tensor_value_info(n, self.types[n], None) for n in names if n != kept[0].name]
        )
        path = self.folder / "tap.onnx"
        data = self.graph_only.SerializeToString()
        write_atomic(path, lambda f: f.write(data))
        return path


def _fetch(
    tap: Path, side: Side, names: list[str], blocks: Blocks, options: RuntimeOptions, each=None
) -> list[list[np.ndarray]]:
    """``names`` for every block from ``side``: kept and returned, or handed to ``each(block, values)`` and dropped."""
    session = _session(tap, side, options)
    iface = inspect(session, side.path.name)
    kept = []
    for i in range(len(blocks)):
        try:
            values = session.run(names, feeds(iface, blocks.block(i)[None, :]))
        except ORT_RUN_ERRORS as err:
            raise PplgateError(_no_taps(side, str(err).strip().splitlines()[0])) from err
        if each is None:
            kept.append(values)
        else:
            each(i, values)
    return kept


def _add(group: list[TensorError], xs: list[np.ndarray], ys: list[np.ndarray], run: Side, reference: Side) -> None:
    for t, x, y in zip(group, xs, ys):
        if x.shape != y.shape:
            raise PplgateError(
                f"tensor {t.output} has shape {x.shape} in {run.path.name} but {y.shape} in {reference.path.name}: "
                "the two models are not the same architecture; pass --reference-model with an export of the same model."
            )
        t.add(x, y)


def _session(tap: Path, side: Side, options: RuntimeOptions):
    try:
        return create_session(str(tap), side.target, options, side.path.name)
    except PplgateError as err:
        raise PplgateError(_no_taps(side, str(err))) from err


def _no_taps(side: Side, why: str) -> str:
    return (
        f"{side.target.provider} cannot expose the intermediate tensors of {side.path.name} ({why.rstrip('.')}); "
        f"compare on the CPU at the same precision instead: --device cpu --precision {side.target.precision}."
    )


def _session_logits(side: Side, blocks: Blocks, options: RuntimeOptions, each=None) -> list[np.ndarray]:
    """The logits of ``side``'s model as a session runs it, nothing exposed: kept, or handed to ``each(block,
    logits)``.
    """
    session = create_session(str(side.path), side.target, options, side.path.name)
    iface = inspect(session, side.path.name)
    kept = []
    for i in range(len(blocks)):
        try:
            (logits,) = session.run([iface.logits], feeds(iface, blocks.block(i)[None, :]))
        except ORT_RUN_ERRORS as err:
            raise PplgateError(
                f"the {side.label} session cannot run block {i} ({str(err).strip().splitlines()[0]}): "
                "check it with python -m pplgate --device cpu --precision fp32."
            ) from err
        if each is None:
            kept.append(logits)
        else:
            each(i, logits)
    return kept


def localize(
    run: Side,
    reference: Side,
    blocks: Blocks,
    threshold: float | None = None,
    options: RuntimeOptions | None = None,
    workdir: Path | None = None,
) -> Localization:
    """The sessions' logits first, then ``blocks`` through both sides, GROUP tensors at a time; only statistics are
    kept.
    """
    options = options or RuntimeOptions()
    if threshold is None:
        threshold = DEFAULT_THRESHOLD[Precision.FP16 in (run.target.precision, reference.target.precision)]
    workdir = Path(workdir or tempfile.gettempdir())
    # As the user's sessions run: one alive at a time, the run's logits kept for the tapped graphs too.
    as_run = _session_logits(run, blocks, options)
    session_logits = TensorError("logits", "the session", "session", 0, [], [])
    _session_logits(reference, blocks, options, each=lambda i, y: session_logits.add(as_run[i], y))
    remove_leftovers(workdir, "pplgate-localize-")  # a killed localize's tapped models are gigabytes
    tapping = 0.0
    with tempfile.TemporaryDirectory(dir=workdir, prefix=f"pplgate-localize-{os.getpid()}.") as scratch:
        run_model, ref_model = TapModel(run.path, Path(scratch)), TapModel(reference.path, Path(scratch))
        ref_names = {t.output for t in ref_model.tensors()}
        all_run = run_model.tensors()
        matched = [t for t in all_run if t.output in ref_names]
        outputs = {o.name for o in run_model.graph_only.graph.output}
        if all(t.output in outputs for t in matched):
            raise PplgateError(
                f"no tensor of {run.path.name} has a namesake in {reference.path.name}: the two exports name their "
                f"tensors differently, "
                "so there is nothing to compare node by node; compare the perplexities with --reference instead."
            )
        logits = run_model.logits_name()
        # Fewer tensors a group when more blocks are fed: the run's side of a group is held for every block.
        size = max(4, GROUP // len(blocks))
        for start in range(0, len(matched), size):
            group = matched[start : start + size]
            names = [t.output for t in group]
            fetched = names if logits in names else names + [logits]
            # One side at a time: only one model's session is alive.
            obtained = _fetch(run_model.tap(names), run, fetched, blocks, options)
            for i, values in enumerate(obtained):
                changed = TensorError(logits, "", "", 0, [], [])
                changed.add(values[fetched.index(logits)], as_run[i])
                if not math.isfinite(changed.rel_l2) or changed.rel_l2 > tapping:
                    tapping = changed.rel_l2  # a NaN stays: nothing finite outranks it
            _fetch(
                ref_model.tap(names),
                reference,
                names,
                blocks,
                options,
                each=lambda i, ys, group=group, obtained=obtained: _add(
                    group, obtained[i][: len(group)], ys, run, reference
                ),
            )
    run_names = {t.output for t in all_run}
    return Localization(
        run=run.label,
        reference=reference.label,
        blocks=len(blocks),
        threshold=threshold,
        tensors=matched,
        only_run=sorted(run_names - ref_names),
        only_reference=sorted(ref_names - run_names),
        session_logits=session_logits,
        tapping_rel_l2=tapping,
    )


def render(loc: Localization, worst: int = 10) -> str:
    """The terminal table: the first divergence and its inputs, then the worst tensors."""

    def row(t: TensorError) -> str:
        return (
            f"  {t.output:<28} {t.op_type:<16} {t.depth:>5} {t.rel_l2:>10.3g} {t.max_abs:>10.3g} {t.cosine:>12.9f} "
            f" {t.node}"
        )

    header = f"  {'tensor':<28} {'op':<16} {'depth':>5} {'rel_l2':>10} {'max_abs':>10} {'cosine':>12}  node"
    lines = [
        f"run:       {loc.run}",
        f"reference: {loc.reference}",
        f"compared {len(loc.tensors)} tensors over {loc.blocks} block(s); threshold rel_l2 {loc.threshold:g}, jump "
        f"x{JUMP:g}",
    ]
    lines += _session_lines(loc)
    first = loc.first_divergence
    if first is None:
        lines.append(
            "no divergence in the tapped graphs: no tensor's error is above the threshold and a jump over its inputs'"
        )
    else:
        where = (
            "first divergence:"
            if loc.session_diverges is not False
            else "first divergence in the tapped graphs only, NOT in the run's session (its logits agree with the "
            "reference's within the threshold):"
        )
        lines += ["", where, header, row(first), "  its inputs:"]
        by_name = {t.output: t for t in loc.tensors}
        lines += [row(by_name[i]) for i in first.inputs if i in by_name]
        lines += [f"  {w:<28} (a weight or graph input: not compared)" for w in first.weights]
    ranked = sorted(loc.tensors, key=lambda t: -t.rel_l2)[:worst]
    lines += ["", f"the {len(ranked)} largest errors:", header] + [row(t) for t in ranked]
    for label, names in (("only in the run", loc.only_run), ("only in the reference", loc.only_reference)):
        if names:
            lines.append(
                f"{len(names)} tensors {label}, not compared: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
            )
    return "\n".join(lines)


def _session_lines(loc: Localization) -> list[str]:
    """What the sessions as they run say, before anything the tapped graphs say."""
    if loc.session_logits is None:
        return []
    t = loc.session_logits
    verdict = "DIVERGES" if loc.session_diverges else "agrees within the threshold"
    lines = [
        f"the run's session as it runs, nothing exposed: logits rel_l2 {t.rel_l2:.3g}, max_abs {t.max_abs:.3g}, "
        f"cosine {t.cosine:.9f} against the reference's session: {verdict}"
    ]
    if t.nonfinite_both:
        lines.append(
            f"non-finite logits in both: {t.nonfinite_both:,} values are the same NaN or infinity on both sides, so "
            f"they agree "
            "there; find where they start with the reference at cpu-fp32 (--reference cpu-fp32)"
        )
    if loc.tapping_changed:
        lines.append(
            f"exposing tensors changed the run's graph: a tapped graph's logits differ from the session's by rel_l2 "
            f"{loc.tapping_rel_l2:.3g} "
            "(onnxruntime fuses no node whose intermediate tensor is an output, e.g. a LayerNorm or a GELU); "
            "the errors below are the tapped graph's"
        )
    else:
        lines.append(
            f"exposing tensors left the run's logits as the session computes them (rel_l2 {loc.tapping_rel_l2:.3g})"
        )
    if loc.session_diverges and loc.first_divergence is None:
        lines.append(
            "the session diverges but no tapped tensor does: the divergence is inside what onnxruntime fuses in the "
            "session; "
            "compare the fused kernels' precision (e.g. run the reference at the run's precision)"
        )
    return lines


def plot(loc: Localization, output: Path) -> Path:
    """Relative error against graph depth, the threshold as a line, the first divergence marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI nodes; chosen here, never at import
    import matplotlib.pyplot as plt

    floor = 1e-12  # exact agreement, drawn at the bottom of the log axis
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.scatter(
        [t.depth for t in loc.tensors],
        [max(t.rel_l2, floor) for t in loc.tensors],
        s=10,
        label="tensor (exact agreement drawn at 1e-12)",
    )
    ax.axhline(loc.threshold, color="grey", linestyle="--", label=f"threshold {loc.threshold:g}")
    first = loc.first_divergence
    if first is not None:
        ax.scatter(
            [first.depth],
            [first.rel_l2],
            s=120,
            marker="*",
            color="red",
            zorder=3,
            label=f"first divergence: {first.node} ({first.op_type})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("graph depth (nodes from the inputs)")
    ax.set_ylabel("relative L2 error ||a - b|| / ||b||")
    ax.set_title(f"{loc.run}\nagainst {loc.reference}, {loc.blocks} block(s)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    write_atomic(Path(output), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return Path(output)
