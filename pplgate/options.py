"""The options a run and the gate share, declared once.

``add_global_options(addoption, prefix)`` serves both, as pytest-benchmark's
does: the CLI passes ``argparse.ArgumentParser.add_argument`` and no prefix,
the pytest plugin its group's ``addoption`` and ``"gate-"``.  One scheme, as
pytest-benchmark's ``--benchmark-*``: in pytest every pplgate option starts
with ``--gate-``, and the CLI's name for the same thing is the same without
it.  The spellings of earlier releases (``--model``, ``--sources`` ... in
pytest) are still accepted, for one release.  Every value goes through the
small parsers of ``pplgate.argtypes``, and every help text ends with the
default it was declared with.

Light on purpose: the plugin imports this in every pytest run of its
environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pplgate.argtypes import key_value, positive_int, thread_count
from pplgate.fileio import default_model_dir, user_cache_dir
from pplgate.sources import DEFAULT_DATASET, DEFAULT_TOKENIZER, VENDOR_MODEL_URL, describe, local_path

SOURCES_ENV = "PPLGATE_SOURCES"
# "graph": cross-entropy in a scoring session fed the logits where they are; only losses leave the runtime.
# "host": the vendor's way, logits fetched and scored in float32 numpy.
# "auto": graph, except where the provider lowers the graph's precision itself
# (GCU fp16 mixed precision): there the appended scoring could run in fp16,
# and the vendor's figures were scored in float32 on the host.
SCORINGS = ("auto", "graph", "host")


@dataclass(frozen=True)
class Option:
    name: str  # the CLI's flag without dashes
    help: str
    default: Callable[[], object] = lambda: None  # called when declared: read from the environment then, not at import
    type: Callable[[str], object] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    action: str | None = None
    # Spelled in pytest without the prefix before 0.2 (--model): still accepted there, for one release.
    bare_in_gate: bool = False
    aliases: tuple[str, ...] = ()  # other flags the CLI accepts: the vendor's run_onnx.py spelling
    # In the gate: what an absent option means (the pytest.ini key and the
    # golden file are read first); None: the declared default, as in the CLI.
    gate_default: str | None = None
    shown: Callable[[object], str] = str  # how the help writes the default

    @property
    def dest(self) -> str:
        return "pplgate_" + self.name.replace("-", "_")


def default_sources_folder() -> Path | None:
    """``$PPLGATE_SOURCES``, read when a run starts, not at import."""
    value = os.environ.get(SOURCES_ENV)
    return local_path(value) if value else None


def _ini(key: str, default: str) -> str:
    return f"pytest.ini's {key}, else {default}"


SHARED = (
    Option("model", "ONNX model: a path, an https URL (#sha256=<hex> checks it), hf://<repo>/<file>, or builtin:tiny / builtin:gpt2-small",
           default=lambda: VENDOR_MODEL_URL, metavar="SOURCE", shown=describe,
           gate_default=_ini("pplgate_model", "each golden file's sources.model"), bare_in_gate=True),
    Option("dataset", "the wikitext dataset: a hub id or a local folder laid out like it", default=lambda: DEFAULT_DATASET, metavar="SOURCE",
           gate_default=_ini("pplgate_dataset", f"each golden file's sources.dataset ({DEFAULT_DATASET})"), bare_in_gate=True),
    Option("tokenizer", "the tokenizer: a hub id or a local folder", default=lambda: DEFAULT_TOKENIZER, metavar="SOURCE",
           gate_default=_ini("pplgate_tokenizer", f"each golden file's sources.tokenizer ({DEFAULT_TOKENIZER})"), bare_in_gate=True),
    Option("sources", "read remote sources from DIR, a folder written by 'python -m pplgate fetch DIR'", type=Path, metavar="DIR",
           default=lambda: default_sources_folder(), shown=lambda v: f"${SOURCES_ENV} when set, else none",
           gate_default=_ini("pplgate_sources", f"${SOURCES_ENV} when set, else none"), bare_in_gate=True),
    Option("model-dir", "where downloaded, built and converted models go, for the CLI and the gate alike", type=Path, metavar="DIR",
           default=default_model_dir, gate_default=_ini("pplgate_model_dir", str(default_model_dir())), bare_in_gate=True),
    Option("cache-dir", "where tokenized data, file hashes and computed references are cached", type=Path, metavar="DIR",
           default=user_cache_dir),
    Option("batch-size", "blocks per session.run", type=positive_int, default=lambda: 1, metavar="N", aliases=("batchsize",)),
    Option("scoring", "graph: cross-entropy in a second onnxruntime session reading the logits where the model made them; "
           "host: the vendor's numpy scoring of fetched logits; auto: graph, but host where the provider lowers precision itself (gcu fp16)",
           default=lambda: "auto", choices=SCORINGS),
    Option("intra-op-threads", "onnxruntime intra-op threads per session; 0 is onnxruntime's choice, one per physical core",
           type=thread_count, default=lambda: 0, metavar="N", bare_in_gate=True),
    Option("provider-option", "passed to every session's execution provider; repeatable", type=key_value, action="append",
           default=lambda: [], metavar="KEY=VALUE", shown=lambda v: "none", bare_in_gate=True),
)


def add_global_options(addoption: Callable, prefix: str = "") -> None:
    """Declares the shared options through ``addoption``: argparse's ``add_argument`` (prefix "") or pytest's (prefix "gate-")."""
    in_gate = bool(prefix)
    for o in SHARED:
        flags = [f"--{prefix}{o.name}"]
        if not in_gate:
            flags += [f"--{a}" for a in o.aliases]
        elif o.bare_in_gate:
            flags.append(f"--{o.name}")  # the earlier spelling, for one release
        value = o.default()
        default = None if in_gate and o.gate_default is not None else value
        said = o.gate_default if in_gate and o.gate_default is not None else o.shown(value)
        kwargs = {"dest": o.dest, "default": default, "help": f"{o.help} (default: {said})".replace("%", "%%")}
        if o.action is not None:
            kwargs["action"] = o.action
        for key in ("type", "choices", "metavar"):
            if getattr(o, key) is not None:
                kwargs[key] = getattr(o, key)
        addoption(*flags, **kwargs)


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
