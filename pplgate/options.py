"""Every option of a run and of the gate, declared once, with where else its value may come from.

One table, as pytest-benchmark's ``add_global_options(addoption, prefix)``
serves its CLI and its plugin: the CLI passes ``ArgumentParser.add_argument``
and no prefix, the pytest plugin its group's ``addoption`` and ``"gate-"``.
One scheme, as pytest-benchmark's ``--benchmark-*``: in pytest every pplgate
option starts with ``--gate-``, and the CLI's name for the same thing is the
same without it.  The gate's own options (strictness, the golden folder,
...) are rows of the same table.

Where a value comes from, first found first (``resolve``)::

    the option  >  its pytest.ini key (the gate only)  >  its environment variable  >  its default

One rule for a relative path in pytest.ini, pytest's own for ``cache_dir``:
it is taken from the rootdir (the ini file's folder).  A source (model,
dataset, tokenizer) is a path there only when written as one (``./data``,
``../data``, ``/data``, ``~/data``); otherwise it is a hub id or an address.

Light on purpose: the plugin imports this in every pytest run of its
environment.  Every value goes through the small parsers of
``pplgate.argtypes``, and every help text ends with the default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pplgate.argtypes import device_list, key_value, percent, positive_int, precision_list, thread_count
from pplgate.fileio import default_model_dir, user_cache_dir
from pplgate.method import DEFAULT_DATASET, DEFAULT_TOKENIZER, VENDOR_MODEL_URL
from pplgate.redact import bare_address
from pplgate.spec import local_path, looks_local
from pplgate.target import Precision

SOURCES_ENV = "PPLGATE_SOURCES"
CACHE_ENV = "PPLGATE_CACHE"
# "graph": cross-entropy appended to the model's graph (pplgate.scored); only losses leave the runtime.
# "host": the vendor's way, logits fetched and scored in float32 numpy.
# "auto": graph, except where the provider lowers the graph's precision itself
# (GCU fp16 mixed precision): there the appended scoring could run in fp16,
# and the vendor's figures were scored in float32 on the host.
SCORINGS = ("auto", "graph", "host")
DEFAULT_DEVICES = "cpu gpu gcu"


@dataclass(frozen=True)
class Option:
    name: str  # the CLI's flag without dashes; --gate-<name> in pytest
    help: str
    default: Callable[[], object] = lambda: None  # called when needed: read from the environment then, not at import
    type: Callable[[str], object] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    action: str | None = None
    aliases: tuple[str, ...] = ()  # other flags the CLI accepts: the vendor's run_onnx.py spelling
    ini: str | None = None  # the pytest.ini key that gives the gate's value when the option is absent
    ini_bool: bool = False
    env: str | None = None  # the environment variable that gives the value when the option (and ini key) are absent
    path: bool = False  # a path: relative in pytest.ini means from the rootdir
    source: bool = False  # a model, dataset or tokenizer: a path only when written as one
    gate_only: bool = False
    # In the gate, what an absent option means when neither the ini key nor the
    # environment say, in words: set for the case sources, which are then each golden file's own (None).
    gate_absent: str | None = None
    shown: Callable[[Any], str] = str  # how the help writes the default

    @property
    def dest(self) -> str:
        return "pplgate_" + self.name.replace("-", "_")

    def parse(self, text: str) -> object:
        if self.path:
            return local_path(text)
        return self.type(text) if self.type is not None else text

    def fallback(self, environ: Mapping[str, str] = os.environ) -> object:
        """What an absent option is outside pytest.ini: the environment variable's value, else the default."""
        if self.env and environ.get(self.env):
            return self.parse(environ[self.env])
        return self.default()

    def help_default(self, in_gate: bool) -> str:
        said = []
        if in_gate and self.ini:
            said.append(f"pytest.ini's {self.ini}")
        if self.env:
            said.append(f"${self.env} when set")
        said.append(self.gate_absent if in_gate and self.gate_absent else self.shown(self.default()))
        return ", else ".join(said)


def _sources_shown(value: object) -> str:
    return "none" if value is None else str(value)


OPTIONS = (
    Option(
        "model",
        "ONNX model: a path, an https URL (#sha256=<hex> checks it), hf://<repo>/<file>, or builtin:tiny / "
        "builtin:gpt2-small",
        default=lambda: VENDOR_MODEL_URL,
        metavar="SOURCE",
        shown=lambda v: bare_address(str(v)),
        ini="pplgate_model",
        source=True,
        gate_absent="each golden file's sources.model",
    ),
    Option(
        "dataset",
        "the wikitext dataset: a hub id or a local folder laid out like it",
        default=lambda: DEFAULT_DATASET,
        metavar="SOURCE",
        ini="pplgate_dataset",
        source=True,
        gate_absent=f"each golden file's sources.dataset ({DEFAULT_DATASET})",
    ),
    Option(
        "tokenizer",
        "the tokenizer: a hub id or a local folder",
        default=lambda: DEFAULT_TOKENIZER,
        metavar="SOURCE",
        ini="pplgate_tokenizer",
        source=True,
        gate_absent=f"each golden file's sources.tokenizer ({DEFAULT_TOKENIZER})",
    ),
    Option(
        "sources",
        "read remote sources from DIR, a folder written by 'python -m pplgate fetch DIR'",
        metavar="DIR",
        ini="pplgate_sources",
        env=SOURCES_ENV,
        path=True,
        shown=_sources_shown,
    ),
    Option(
        "model-dir",
        "where downloaded, built and converted models go, for the CLI and the gate alike",
        metavar="DIR",
        default=default_model_dir,
        ini="pplgate_model_dir",
        path=True,
    ),
    Option(
        "cache-dir",
        "where tokenized data, file hashes and computed references are cached",
        metavar="DIR",
        default=lambda: user_cache_dir(ignore_env=True),
        env=CACHE_ENV,
        path=True,
    ),
    Option(
        "batch-size",
        "blocks per session.run",
        type=positive_int,
        default=lambda: 1,
        metavar="N",
        aliases=("batchsize",),
    ),
    Option(
        "scoring",
        "graph: cross-entropy appended to the model's graph, computed where the logits are made; "
        "host: the vendor's numpy scoring of fetched logits; auto: graph, but host where the provider lowers "
        "precision itself (gcu fp16)",
        default=lambda: "auto",
        choices=SCORINGS,
    ),
    Option(
        "intra-op-threads",
        "onnxruntime intra-op threads per session; 0 is onnxruntime's choice, one per physical core",
        type=thread_count,
        default=lambda: 0,
        metavar="N",
    ),
    Option(
        "provider-option",
        "passed to every session's execution provider; repeatable",
        type=key_value,
        action="append",
        default=lambda: [],
        metavar="KEY=VALUE",
        shown=lambda v: "none",
    ),
    # The gate's own.
    Option(
        "strict",
        "fail, rather than skip, cases whose provider, model, dataset or tokenizer is missing",
        action="store_true",
        default=lambda: False,
        ini="pplgate_strict",
        ini_bool=True,
        gate_only=True,
        shown=lambda v: "off: skip",
    ),
    Option(
        "update-golden",
        "record the obtained perplexities of the selected tests in their golden files",
        action="store_true",
        default=lambda: False,
        gate_only=True,
        shown=lambda v: "off, golden files are never changed",
    ),
    Option(
        "history",
        "record each run, accuracy and throughput, in STORE and judge throughput against its runs: a folder, or a "
        "PostgreSQL database (postgresql://..., or postgresql: for libpq's environment)",
        metavar="STORE",
        ini="pplgate_history",
        env="PPLGATE_HISTORY",
        source=True,
        gate_only=True,
        shown=lambda v: (
            "none: throughput judged against pytest-benchmark's storage, where --benchmark-autosave "
            "saves the run with its accuracy results"
        ),
    ),
    Option(
        "report",
        "write the gate's results as JSON to PATH",
        metavar="PATH",
        path=True,
        gate_only=True,
        shown=_sources_shown,
    ),
    Option(
        "devices",
        "devices to parametrize over, e.g. 'cpu gcu:1'",
        type=device_list,
        metavar="LIST",
        ini="pplgate_devices",
        default=lambda: device_list(DEFAULT_DEVICES),
        gate_only=True,
        shown=lambda v: " ".join(d.spec for d in v),
    ),
    Option(
        "precisions",
        "precisions to parametrize over",
        type=precision_list,
        metavar="LIST",
        ini="pplgate_precisions",
        default=lambda: tuple(Precision),
        gate_only=True,
        shown=lambda v: " ".join(v),
    ),
    Option(
        "bench-blocks",
        "blocks each throughput test times per round",
        type=positive_int,
        default=lambda: 4,
        metavar="N",
        gate_only=True,
    ),
    Option(
        "bench-rounds",
        "timed rounds of each throughput test, after one warm-up round",
        type=positive_int,
        default=lambda: 3,
        metavar="N",
        gate_only=True,
    ),
    Option(
        "throughput-fail",
        "fail a throughput test whose tokens/s fell by more than PCT percent and beyond the noise of its saved runs",
        type=percent,
        metavar="PCT",
        gate_only=True,
        shown=lambda v: "such slowdowns beyond 10% are only reported",
    ),
    Option(
        "drift-fail",
        "fail a throughput test whose perplexity moved from the last saved run on the same model, blocks and method",
        action="store_true",
        default=lambda: False,
        gate_only=True,
        shown=lambda v: "a warning",
    ),
    Option(
        "cards",
        "cards per device on this node: pytest-xdist worker n uses card n mod N",
        type=positive_int,
        metavar="N",
        ini="pplgate_cards",
        gate_only=True,
        shown=lambda v: "the number of pytest-xdist workers",
    ),
    Option(
        "golden-dir",
        "folder of the golden JSON files (the cases)",
        metavar="DIR",
        ini="pplgate_golden_dir",
        path=True,
        default=lambda: Path("golden"),
        gate_only=True,
        shown=lambda v: "golden, from the rootdir",
    ),
)
BY_NAME = {o.name: o for o in OPTIONS}


def add_global_options(
    addoption: Callable, prefix: str = "", names: tuple[str, ...] | None = None, unset: str | None = None
) -> None:
    """Declares options through ``addoption``: argparse's ``add_argument`` (prefix "") or pytest's (prefix "gate-").

    The CLI gets the shared options (or ``names`` of them); the gate gets every
    option, with no default of its own, so that ``resolve`` can tell an
    absent option from a given one.  ``unset``: the CLI's options default to
    None, their help saying they default to ``unset`` (``the case's``) first.
    """
    in_gate = bool(prefix)
    for o in OPTIONS:
        if (o.gate_only and not in_gate) or (names is not None and o.name not in names):
            continue
        flags = [f"--{prefix}{o.name}"] + ([f"--{a}" for a in o.aliases] if not in_gate else [])
        said = o.help_default(in_gate)
        if unset:
            said = f"{unset}, else {said}"
        kwargs: dict = {"dest": o.dest, "help": f"{o.help} (default: {said})".replace("%", "%%")}
        if in_gate or unset:
            kwargs["default"] = [] if o.action == "append" else None
        else:
            kwargs["default"] = o.fallback()
        if o.action is not None:
            kwargs["action"] = o.action
        if o.action != "store_true":
            kwargs["type"] = o.parse
            kwargs["metavar"] = o.metavar
        if o.choices is not None:
            kwargs["choices"] = o.choices
        addoption(*flags, **kwargs)


def add_ini_keys(addini: Callable) -> None:
    """Declares the pytest.ini keys of the table (pytest's ``parser.addini``)."""
    for o in OPTIONS:
        if o.ini:
            addini(
                o.ini,
                f"default for --gate-{o.name}",
                type="bool" if o.ini_bool else None,
                default=False if o.ini_bool else "",
            )


def absent(value: object) -> bool:
    """Whether an option's value says nothing: not given, or given empty (``--gate-devices=``)."""
    return value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0)


def resolve(
    option: Option,
    given: object,
    ini: object = None,
    root: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    in_gate: bool = False,
) -> object:
    """The option's value: given, else its pytest.ini value (relative paths from ``root``), else its environment
    variable, else its default.

    In the gate a case source with none of these is None: each golden file's own.
    """
    if not absent(given):
        return given
    if option.ini_bool and isinstance(ini, bool) and ini:
        return ini
    if isinstance(ini, str) and ini.strip():
        return ini_value(option, ini.strip(), root)
    if option.env and environ.get(option.env):
        return option.parse(environ[option.env])
    return None if in_gate and option.gate_absent else option.default()


def ini_value(option: Option, text: str, root: Path | None) -> object:
    """A pytest.ini value: a relative path is from the rootdir; a source is a path only when written as one."""
    if option.path or (option.source and looks_local(text) and text.startswith((".", "/", "~"))):
        path = local_path(os.path.expandvars(text))
        if root is not None and not path.is_absolute():
            path = root / path
        return path if option.path else str(path)
    return option.parse(text)


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings that change speed but not the result; recorded in every report."""

    intra_op_threads: int = 0  # 0: onnxruntime's default, one per physical core
    provider_options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSettings:
    """How sessions are built and fed: the same for every block of a run, and for every case of the gate."""

    batch_size: int = 1
    scoring: str = "auto"
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    progress: bool = True  # bars on a terminal, lines in a log
