"""Golden files: what a case's perplexity should be, per device and precision, and why.

One JSON file per case (a model on a dataset with a method).  Each entry under
``expected`` is keyed ``<device>-<precision>`` and holds either a measured
value::

    "cpu-fp32": {"perplexity": 29.372, "rel_tol": 2e-4, "why": "...", "provenance": {...}}

or a rule tied to another entry, for combinations nobody has measured::

    "gpu-fp16": {"relative_to": "cpu-fp32", "rel_tol": 0.01, "why": "..."}

or, for the suite's built models only, the value of their independent float64
numpy forward pass on the very blocks the run fed, so the case holds on any
faithful copy of the data::

    "cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5, "why": "..."}

A measured value pins what it was measured on: ``blocks`` (count, scored
tokens, sha256 of the ids fed) and ``model`` (sha256 and size of the file, and
of its fp16 conversion).  The gate checks both before the perplexity, so a
change of data, tokenizer, grouping or model file is named as such.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pplgate.errors import GoldenError, PplgateError
from pplgate.fileio import locked, write_json_atomic
from pplgate.method import BLOCK_SIZE, DATASET_CONFIG, ROWS_PER_BATCH, SPLIT, Method
from pplgate.target import DEVICES, PRECISIONS, Device, Precision, Target, golden_key

# What a case may bound about a run against a reference session on the same
# blocks (pplgate.reference): each as <name>_max or <name>_min in "limits".
LIMITED = ("kl_mean", "kl_median", "kl_p99", "kl_max", "top1_agreement", "perplexity_ratio")

# Tolerances given to a value recorded by --gate-update-golden where the entry had
# none.  fp32 results differ across devices by accumulation order only; fp16
# by rounding of every activation.
DEFAULT_REL_TOL = {Precision.FP32: 2e-4, Precision.FP16: 2e-3, Precision.TF32: 1e-2}


COMPUTED = ("numpy-reference",)


@dataclass(frozen=True)
class BlocksPin:
    """The blocks a value was measured on."""

    count: int
    scored_tokens: int
    sha256: str

    @classmethod
    def of(cls, report: dict) -> BlocksPin:
        return cls(report["blocks"], report["scored_tokens"], report["blocks_sha256"])

    def describe(self) -> str:
        return f"{self.count} blocks, {self.scored_tokens} scored tokens, sha256 {self.sha256[:12]}"


@dataclass(frozen=True)
class ModelPin:
    """The model file a value was measured on, and the conversion that ran, if any."""

    sha256: str
    bytes: int
    converted_sha256: str | None = None  # the fp16 conversion of that file

    @classmethod
    def of(cls, report: dict) -> ModelPin:
        return cls(report["model_sha256"], report["model_bytes"], report.get("converted_model_sha256"))


@dataclass(frozen=True)
class Expected:
    perplexity: float | None
    rel_tol: float
    relative_to: Target | None = None
    why: str = ""
    provenance: dict = field(default_factory=dict)
    limits: Limits | None = None
    computed: str | None = None  # how a built model's value is computed on the run's own blocks
    blocks: BlocksPin | None = None
    model: ModelPin | None = None


@dataclass(frozen=True)
class Limits:
    """Bounds on a run against a reference session, e.g. fp16 against cpu-fp32."""

    reference: Target
    blocks: int | None  # the first N blocks only: the comparison fetches every logit; None: all
    bounds: tuple[tuple[str, str, float], ...]  # (metric, "max" | "min", value): a metric may be bounded on both sides

    @property
    def metrics(self) -> list[str]:
        """The metrics bounded, each once, in the file's order."""
        return list(dict.fromkeys(metric for metric, _, _ in self.bounds))

    def violations(self, obtained: dict) -> list[tuple[str, float, str, float]]:
        """(metric, obtained, max|min, bound) for each bound the run breaks."""
        out = []
        for metric, side, bound in self.bounds:
            value = obtained[metric]
            ok = value <= bound if side == "max" else value >= bound
            if not ok or value != value:  # NaN never passes
                out.append((metric, value, side, bound))
        return out


@dataclass(frozen=True)
class Resolved:
    """What a test compares against: a number, its tolerance, and the entry it came from."""

    perplexity: float | None  # None for a computed entry: the gate computes it
    rel_tol: float
    key: Target
    via: Target | None  # the entry a rule pointed at, if any
    computed: str | None = None
    blocks: BlocksPin | None = None  # what the value was measured on, where recorded
    model: ModelPin | None = None


@dataclass(frozen=True)
class GoldenCase:
    name: str
    path: Path
    sources: dict[str, str]  # model, dataset, tokenizer
    method: Method  # how the split becomes blocks: grouping, block size, max blocks
    expected: dict[Target, Expected]  # by golden key: targets without a card index

    def entry(self, target: Target) -> Expected | None:
        """The entry for ``target``, whatever card it runs on."""
        return self.expected.get(entry_key(target))

    def resolve(
        self, target: Target, record_command: Callable[[Target], str] = lambda key: "--gate-update-golden"
    ) -> Resolved | None:
        """The value and tolerance ``target`` is checked against; ``record_command(t)`` says how entry t is recorded."""
        key = entry_key(target)
        entry = self.expected.get(key)
        if entry is None:
            return None
        if entry.relative_to is None:
            return Resolved(entry.perplexity, entry.rel_tol, key, None, entry.computed, entry.blocks, entry.model)
        other = self.expected.get(entry.relative_to)
        if other is None or other.relative_to is not None:
            raise GoldenError(
                f"golden file {self.path}: expected.{key.key} is a rule relative to {entry.relative_to.key}, which "
                f"holds no value yet: "
                f"record {entry.relative_to.key} first, on a node that has its device, with: "
                f"{record_command(entry.relative_to)}"
            )
        return Resolved(
            other.perplexity, entry.rel_tol, key, entry.relative_to, other.computed, other.blocks, other.model
        )


def entry_key(target: Target) -> Target:
    """The golden entry a target is checked against: its device kind, without the card index, at its precision."""
    return Target(Device(target.device.kind), target.precision)


@dataclass(frozen=True)
class Tolerance:
    """An obtained perplexity against the expected one, within a relative tolerance."""

    obtained: float
    expected: float
    rel_tol: float

    @property
    def difference(self) -> float:
        return self.obtained - self.expected

    @property
    def rel_difference(self) -> float:
        return abs(self.difference) / abs(self.expected) if self.expected else math.inf

    @property
    def passed(self) -> bool:
        # NaN and inf compare false here, so they never pass.
        return math.isfinite(self.obtained) and self.rel_difference <= self.rel_tol


def digits(value: int) -> int:
    """How many decimal digits an int has, without str(), which Python >= 3.11 refuses past 4,300."""
    return len(str(abs(value))) if value.bit_length() < 10000 else int(value.bit_length() * math.log10(2)) + 1


def _require(data: dict, key: str, kind, where: str, path: Path):
    if key not in data:
        raise GoldenError(
            f"golden file {path}: key {where}{key} is missing: add it, or regenerate the file with "
            f"--gate-update-golden."
        )
    value = data[key]
    allowed = (int, float) if kind is float else kind
    if (kind is float and isinstance(value, bool)) or not isinstance(value, allowed):
        want = {float: "a number", str: "a string", dict: "an object"}[kind]
        shown = json.dumps(value)
        raise GoldenError(
            f"golden file {path}: key {where}{key} must be {want}, not "
            f"{shown if len(shown) <= 60 else shown[:57] + '...'}: "
            "fix it, or regenerate the entry with --gate-update-golden."
        )
    if kind is float:
        try:
            float(value)
        except OverflowError:
            raise GoldenError(
                f"golden file {path}: key {where}{key} is a {digits(int(value))}-digit number, beyond any float: "
                "write it with at most 17 significant digits, or regenerate the entry with --gate-update-golden."
            ) from None
    return value


def _limits(data: dict, where: str, path: Path) -> Limits | None:
    if "limits" not in data:
        return None
    raw = _require(data, "limits", dict, where, path)
    where += "limits."
    reference = _require(raw, "reference", str, where, path)
    blocks = raw.get("blocks")
    if blocks is not None and (not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1):
        raise GoldenError(
            f"golden file {path}: key {where}blocks must be a whole number of 1 or more, or absent for all blocks."
        )
    bounds = []
    for name in raw:
        if name in ("reference", "blocks"):
            continue
        metric, _, side = name.rpartition("_")
        if metric not in LIMITED or side not in ("max", "min"):
            known = ", ".join(f"{m}_max/_min" for m in LIMITED)
            raise GoldenError(f"golden file {path}: key {where}{name} is not a known limit: use {known}.")
        bound = float(_require(raw, name, float, where, path))
        if not math.isfinite(bound):
            raise GoldenError(
                f"golden file {path}: key {where}{name} is {bound}, not a finite number: write the bound, or remove "
                f"the key for none."
            )
        bounds.append((metric, side, bound))
    if not bounds:
        raise GoldenError(
            f"golden file {path}: key {where[:-1]} names a reference and no bound, so it would check nothing: "
            f"add a bound such as kl_mean_max, or remove the limits."
        )
    for metric in dict.fromkeys(m for m, _, _ in bounds):
        sides = {side: bound for m, side, bound in bounds if m == metric}
        if len(sides) == 2 and sides["min"] > sides["max"]:
            raise GoldenError(
                f"golden file {path}: key {where}{metric}_min is {sides['min']:g}, above {metric}_max "
                f"{sides['max']:g}: "
                "no run could pass; fix the bounds."
            )
    try:
        target = Target.parse(reference)
    except PplgateError as err:
        raise GoldenError(f"golden file {path}: key {where}reference: {err}") from None
    return Limits(target, blocks, tuple(bounds))


# What each object of a golden file may hold; any other key is refused, so a
# misspelt one is named instead of silently meaning its default.
TOP_KEYS = ("case", "description", "sources", "method", "notes", "expected")
SOURCE_KEYS = ("model", "dataset", "tokenizer")
# config and split are the only ones pplgate reads; prose about the method goes in "notes".
METHOD_KEYS = ("config", "split", "grouping", "rows_per_batch", "block_size", "max_blocks")
ENTRY_KEYS = ("perplexity", "relative_to", "computed", "rel_tol", "why", "provenance", "limits", "blocks", "model")
VALUE_KEYS = ("perplexity", "relative_to", "computed")  # exactly one: a value, a rule, or how it is computed


def _only(data: dict, allowed: tuple[str, ...], where: str, path: Path) -> None:
    for key in data:
        if key not in allowed:
            raise GoldenError(
                f"golden file {path}: key {where}{key} is not one pplgate reads: use {', '.join(allowed)}"
                + (", and put explanations under notes." if where == "method." else ".")
            )


def _entry(data: dict, key: str, path: Path) -> Expected:
    where = f"expected.{key}."
    if not isinstance(data, dict):
        raise GoldenError(
            f"golden file {path}: key expected.{key} must be an object: fix it, or regenerate the entry with "
            f"--gate-update-golden."
        )
    _only(data, ENTRY_KEYS, where, path)
    given = [k for k in VALUE_KEYS if k in data]
    if len(given) != 1:
        said = " and ".join(given) if given else "none of them"
        raise GoldenError(
            f"golden file {path}: key expected.{key} holds {said}: give exactly one of perplexity (a measured value), "
            "relative_to (a rule tied to another entry) or computed."
        )
    if given[0] != "perplexity" and ("blocks" in data or "model" in data):
        raise GoldenError(
            f"golden file {path}: key expected.{key} pins blocks or a model beside {given[0]}: pins belong to a "
            f"measured perplexity; remove them."
        )
    rel_tol = float(_require(data, "rel_tol", float, where, path))
    if not 0 <= rel_tol < 1:
        raise GoldenError(
            f"golden file {path}: key {where}rel_tol is {rel_tol}, not a fraction in [0, 1): write e.g. 0.0002 for "
            f"0.02%."
        )
    limits = _limits(data, where, path)
    why = _require(data, "why", str, where, path) if "why" in data else ""
    if "relative_to" in data:
        other = _require(data, "relative_to", str, where, path)
        # It may name an entry not recorded yet: the test says to record that one first.
        return Expected(None, rel_tol, _key(other, path, f"expected.{key}.relative_to = {other!r}"), why, limits=limits)
    if "computed" in data:
        how = _require(data, "computed", str, where, path)
        if how not in COMPUTED:
            raise GoldenError(
                f"golden file {path}: key {where}computed is {how!r}: use {', '.join(COMPUTED)}, or record a measured "
                f"perplexity."
            )
        return Expected(None, rel_tol, None, why, limits=limits, computed=how)
    value = float(_require(data, "perplexity", float, where, path))
    if not math.isfinite(value) or value < 1:
        raise GoldenError(
            f"golden file {path}: key {where}perplexity is {value}, not a finite perplexity of 1 or more: fix it, or "
            f"regenerate the entry with --gate-update-golden."
        )
    provenance = _require(data, "provenance", dict, where, path) if "provenance" in data else {}
    return Expected(
        value,
        rel_tol,
        None,
        why,
        provenance if isinstance(provenance, dict) else {},
        limits,
        blocks=_blocks_pin(data, where, path),
        model=_model_pin(data, where, path),
    )


def _blocks_pin(data: dict, where: str, path: Path) -> BlocksPin | None:
    if "blocks" not in data:
        return None
    raw = _require(data, "blocks", dict, where, path)
    where += "blocks."
    _only(raw, ("count", "scored_tokens", "sha256"), where, path)
    return BlocksPin(
        _whole(raw, "count", where, path),
        _whole(raw, "scored_tokens", where, path),
        _require(raw, "sha256", str, where, path),
    )


def _model_pin(data: dict, where: str, path: Path) -> ModelPin | None:
    if "model" not in data:
        return None
    raw = _require(data, "model", dict, where, path)
    where += "model."
    _only(raw, ("sha256", "bytes", "converted_sha256"), where, path)
    converted = _require(raw, "converted_sha256", str, where, path) if raw.get("converted_sha256") is not None else None
    return ModelPin(_require(raw, "sha256", str, where, path), _whole(raw, "bytes", where, path), converted)


def _whole(data: dict, key: str, where: str, path: Path) -> int:
    value = _require(data, key, float, where, path)
    if not isinstance(value, int) or value < 0:
        raise GoldenError(
            f"golden file {path}: key {where}{key} must be a whole number, not {json.dumps(value)}: fix it, or "
            f"regenerate the entry with --gate-update-golden."
        )
    return value


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            # json keeps the last silently: the visible first value would never be checked.
            raise _Duplicate(key)
        seen[key] = value
    return seen


class _Duplicate(Exception):
    pass


def _read(path: Path) -> dict:
    """The file's JSON object; anything else is one sentence naming the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise GoldenError(
            f"golden file {path} is not UTF-8 text (byte {err.start}): restore it with git checkout, or save it as "
            f"UTF-8."
        ) from None
    except OSError as err:
        raise GoldenError(
            f"golden file {path} cannot be read ({err.strerror or err}): make it a readable JSON file, or move it out "
            f"of the golden folder."
        ) from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as err:
        raise GoldenError(
            f"golden file {path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): fix it, or "
            f"restore it with git checkout."
        ) from None
    except _Duplicate as dup:
        raise GoldenError(
            f"golden file {path} holds key {dup.args[0]!r} twice in one object, and only the last would count: keep "
            f"one."
        ) from None
    except RecursionError:
        raise GoldenError(f"golden file {path} nests too deeply to be a case: restore it with git checkout.") from None
    except ValueError as err:  # an integer of more digits than Python converts (4,300 since 3.11)
        raise GoldenError(
            f"golden file {path} holds a number Python cannot read ({str(err).splitlines()[0][:80]}): "
            "write it with at most 17 significant digits, or restore the file with git checkout."
        ) from None
    if not isinstance(data, dict):
        raise GoldenError(f"golden file {path} must hold a JSON object: restore it with git checkout.")
    return data


def _method(raw: dict, path: Path) -> Method:
    _only(raw, METHOD_KEYS, "method.", path)
    for key, fixed in (("config", DATASET_CONFIG), ("split", SPLIT)):
        if key in raw and raw[key] != fixed:
            raise GoldenError(
                f"golden file {path}: key method.{key} is {json.dumps(raw[key])}, but pplgate evaluates "
                f"{DATASET_CONFIG} {SPLIT}: write {json.dumps(fixed)} or leave it out."
            )
    grouping = raw.get("grouping", "vendor")
    if grouping == "vendor" and raw.get("rows_per_batch", ROWS_PER_BATCH) != ROWS_PER_BATCH:
        raise GoldenError(
            f"golden file {path}: key method.rows_per_batch is {json.dumps(raw['rows_per_batch'])}, but the vendor's "
            f"batches are {ROWS_PER_BATCH} rows: write {ROWS_PER_BATCH}."
        )
    try:
        return Method(grouping, raw.get("block_size", BLOCK_SIZE), raw.get("max_blocks"))
    except PplgateError as err:
        raise GoldenError(f"golden file {path}: key method: {err}") from None


def _key(key: str, path: Path, where: str) -> Target:
    """An expected entry's key, ``<device>-<precision>`` of known names, as written."""
    try:
        return golden_key(key)
    except PplgateError:
        raise GoldenError(
            f"golden file {path}: key {where} is not <device>-<precision> of known names: "
            f"devices {', '.join(DEVICES)}; precisions {', '.join(PRECISIONS)} (lower case, no card index)."
        ) from None


def load_case(path: Path) -> GoldenCase:
    path = Path(path)
    data = _read(path)
    _only(data, TOP_KEYS, "", path)
    name = _require(data, "case", str, "", path)
    if "description" in data:
        _require(data, "description", str, "", path)
    if "notes" in data and not isinstance(data["notes"], (dict, str)):
        raise GoldenError(
            f"golden file {path}: key notes must be an object or a string, not "
            f"{json.dumps(data['notes'])[:60]}: "
            "write prose, or an object of prose."
        )
    if name != path.stem:
        # Test ids come from the file name whether or not the file loads.
        raise GoldenError(
            f"golden file {path}: key case is {name!r}, but the file is named {path.name}: name the file {name}.json "
            f"or the case {path.stem!r}."
        )
    sources = _require(data, "sources", dict, "", path)
    _only(sources, SOURCE_KEYS, "sources.", path)
    for source_key in SOURCE_KEYS:
        _require(sources, source_key, str, "sources.", path)
    method = _method(_require(data, "method", dict, "", path) if "method" in data else {}, path)
    expected = _require(data, "expected", dict, "", path)
    entries = {_key(k, path, f"expected.{k}"): _entry(v, k, path) for k, v in expected.items()}
    for target, entry in entries.items():
        other = entry.relative_to
        if other is not None and other.widens_fp16 and target.device != other.device:
            raise GoldenError(
                f"golden file {path}: expected.{target.key} is relative to {other.key}, which the CPU provider "
                f"computes "
                f"mostly in fp32: it is no evidence for {target.key}; make {target.key} relative to cpu-fp32, or "
                f"record it "
                f"on its device."
            )
    return GoldenCase(name, path, sources, method, entries)


def is_case_file(path: Path) -> bool:
    """Whether ``path`` is a golden case file: a JSON object with a case and its expected values."""
    if not path.is_file() or path.suffix != ".json":
        return False
    try:
        data = json.loads(path.read_bytes()[: 1 << 22])
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "case" in data and "expected" in data


def refuse_over_cases(path: Path, option: str, golden: Path | None = None) -> None:
    """An output is never written over a golden case file, nor into a folder of them: golden files change only through
    --gate-update-golden.  ``golden``: the gate's golden folder, which counts even while it holds no case."""
    path = Path(path)
    folder = path.parent.resolve()
    in_golden = golden is not None and folder == Path(golden).resolve() and path.suffix == ".json"
    holds_cases = folder.is_dir() and path.suffix == ".json" and any(is_case_file(p) for p in folder.glob("*.json"))
    if is_case_file(path) or in_golden or holds_cases:
        raise PplgateError(
            f"{option} {path} is in a folder of golden case files ({folder}), where it would replace or add a case: "
            "write it elsewhere (golden files change only through --gate-update-golden)."
        )


def golden_record(path: Path, target: Target, report: dict, provenance: dict) -> None:
    """Writes one measured entry, keeping every other entry and key of the file as it was.

    Under a lock (pytest-xdist workers may update one file together) and
    atomically: an interruption leaves the old file whole.
    """
    path = Path(path)
    key = entry_key(target).key
    value = report["perplexity"]
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise PplgateError(
            f"the obtained perplexity for {key} is {value}, which is never recorded: a golden file holds finite "
            f"values only; "
            "find why the run overflowed (python -m pplgate localize) before recording it."
        )
    with locked(path):
        data = json.loads(path.read_text())
        old = data["expected"].get(key, {})
        model = ModelPin.of(report)
        pin = {"sha256": model.sha256, "bytes": model.bytes}
        if model.converted_sha256:
            pin["converted_sha256"] = model.converted_sha256
        entry = {
            "perplexity": report["perplexity"],
            "rel_tol": old.get("rel_tol", DEFAULT_REL_TOL[target.precision]),
            "why": old.get("why", f"default {target.precision} tolerance of pplgate"),
            "blocks": asdict(BlocksPin.of(report)),
            "model": pin,
            "provenance": provenance,
        }
        if "limits" in old:
            entry["limits"] = old["limits"]
        data["expected"][key] = entry
        write_json_atomic(path, data)


def provenance(report: dict) -> dict:
    """Where a value recorded by --gate-update-golden came from."""
    keys = (
        "device",
        "providers",
        "onnxruntime",
        "onnxruntime_distribution",
        "model",
        "dataset",
        "tokenizer",
        "grouping",
        "rows",
        "batch_size",
        "scoring",
    )
    return {
        "source": "pplgate --gate-update-golden",
        "hardware": report["machine"],
        **{k: report[k] for k in keys},
        "date": datetime.date.today().isoformat(),
    }
