"""The commands a failure or the summary suggests: what to run next, with this run's sources filled in.

Each begins with the interpreter that ran this session (``<python> -m
pytest``): a bare ``pytest`` may be another environment's, without the plugin.
"""

from __future__ import annotations

import shlex
import sys

import pytest

from pytest_pplgate.session import GateSession, Target


# The options of a run that a suggested command repeats where given: what was read and how it ran.
REPEATED = ("model", "dataset", "tokenizer", "sources", "model-dir", "golden-dir", "cache-dir", "batch-size", "scoring", "intra-op-threads")


def source_args(config: pytest.Config) -> list[str]:
    """The options of this run that a suggested command must repeat, in the --gate- spelling, where they differ from their defaults.

    Written --option=value: pytest takes a separate path-like word for a test
    path when it looks for its rootdir, and would then miss pytest.ini.
    """
    from pplgate.options import SHARED

    declared = {o.name: o.default() for o in SHARED if o.gate_default is None}  # what an absent option is, where pytest has a value for it
    words = []
    for name in REPEATED:
        value = config.getoption("pplgate_" + name.replace("-", "_"))
        if value not in (None, "") and value != declared.get(name):
            words.append(f"--gate-{name}={value}")
    words += [f"--gate-provider-option={key}={value}" for key, value in config.getoption("pplgate_provider_option") or []]
    return words


def pytest_command(config: pytest.Config, *args: str) -> str:
    """``<python> -m pytest <args> <this run's sources>``, quoted for a shell."""
    from pplgate.sources import describe_words

    return shlex.join(describe_words([sys.executable, "-m", "pytest", *args, *source_args(config)]))


def regenerate_command(config: pytest.Config, nodeid: str) -> str:
    """The command that records the obtained value for this test only."""
    return pytest_command(config, nodeid, "--gate-update-golden")


def localize_command(gate: GateSession, target: Target, reference: str) -> str:
    """``python -m pplgate localize`` for one gate target, as its test ran it."""
    from pplgate.sources import describe_words

    src = gate.sources(target.case)
    method = target.case.method
    words = [sys.executable, "-m", "pplgate", "localize", f"--model={src.model}", f"--dataset={src.dataset}", f"--tokenizer={src.tokenizer}",
             f"--device={target.device.spec}", f"--precision={target.precision}", f"--reference={reference}",
             f"--grouping={method.grouping}", f"--block-size={method.block_size}", f"--model-dir={src.model_dir}", f"--cache-dir={src.cache_dir}"]
    return shlex.join(describe_words(words))
