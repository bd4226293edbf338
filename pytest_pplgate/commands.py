"""The commands a failure or the summary suggests: what to run next, with this run's sources filled in.

Each begins with the interpreter that ran this session (``<python> -m
pytest``): a bare ``pytest`` may be another environment's, without the plugin.
"""

from __future__ import annotations

import shlex
import sys

import pytest

from pplgate.target import Target
from pytest_pplgate.session import CaseTarget, GateSession

# The options of a run that a suggested command repeats where given: what was read and how it ran.
REPEATED = (
    "model",
    "dataset",
    "tokenizer",
    "sources",
    "model-dir",
    "golden-dir",
    "cache-dir",
    "batch-size",
    "scoring",
    "intra-op-threads",
)


def source_args(config: pytest.Config) -> list[str]:
    """The options given to this run that a suggested command must repeat, in the --gate- spelling.

    Written --option=value: pytest takes a separate path-like word for a test
    path when it looks for its rootdir, and would then miss pytest.ini.
    """
    from pplgate.options import BY_NAME, absent

    words = []
    for name in REPEATED:
        value = config.getoption(BY_NAME[name].dest)
        if not absent(value):
            words.append(f"--gate-{name}={value}")
    words += [
        f"--gate-provider-option={key}={value}"
        for key, value in config.getoption(BY_NAME["provider-option"].dest) or []
    ]
    return words


def pytest_command(config: pytest.Config, *args: str) -> str:
    """``<python> -m pytest <args> <this run's sources>``, quoted for a shell, secrets masked."""
    from pplgate.redact import redact

    return shlex.join(redact(w) for w in [sys.executable, "-m", "pytest", *args, *source_args(config)])


def regenerate_command(config: pytest.Config, nodeid: str) -> str:
    """The command that records the obtained value for this test only."""
    return pytest_command(config, nodeid, "--gate-update-golden")


def localize_command(gate: GateSession, param: CaseTarget, reference: Target) -> str:
    """``python -m pplgate localize`` for one gate test, as it ran."""
    from pplgate.redact import redact

    src = gate.sources(param.case)
    method = param.case.method
    target = param.target
    words = [
        sys.executable,
        "-m",
        "pplgate",
        "localize",
        f"--model={src.model}",
        f"--dataset={src.dataset}",
        f"--tokenizer={src.tokenizer}",
        f"--device={target.device.spec}",
        f"--precision={target.precision}",
        f"--reference={reference.spec}",
        f"--grouping={method.grouping}",
        f"--block-size={method.block_size}",
        f"--model-dir={src.model_dir}",
        f"--cache-dir={src.cache_dir}",
    ]
    return shlex.join(redact(w) for w in words)
