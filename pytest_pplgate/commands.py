"""The commands a failure or the summary suggests: what to run next, with this run's sources filled in.

Each begins with the interpreter that ran this session (``<python> -m
pytest``): a bare ``pytest`` may be another environment's, without the plugin.
"""

from __future__ import annotations

import shlex
import sys

import pytest

from pytest_pplgate.session import GateSession, Target


def source_args(config: pytest.Config) -> list[str]:
    """The options of this run that a suggested command must repeat: sources and the golden folder.

    Written --option=value: pytest takes a separate path-like word for a test
    path when it looks for its rootdir, and would then miss pytest.ini.
    """
    words = [f"--{o}={config.getoption(f'pplgate_{o}')}" for o in ("model", "dataset", "tokenizer") if config.getoption(f"pplgate_{o}")]
    if config.getoption("pplgate_golden_dir"):
        words.append(f"--golden-dir={config.getoption('pplgate_golden_dir')}")
    return words


def pytest_command(config: pytest.Config, *args: str) -> str:
    """``<python> -m pytest <args> <this run's sources>``, quoted for a shell."""
    from pplgate.sources import describe_words

    return shlex.join(describe_words([sys.executable, "-m", "pytest", *args, *source_args(config)]))


def regenerate_command(config: pytest.Config, nodeid: str) -> str:
    """The command that records the obtained value for this test only."""
    return pytest_command(config, nodeid, "--update-golden")


def localize_command(gate: GateSession, target: Target, reference: str) -> str:
    """``python -m pplgate localize`` for one gate target, as its test ran it."""
    from pplgate.sources import describe_words

    src = gate.sources(target.case)
    method = target.case.method
    words = [sys.executable, "-m", "pplgate", "localize", f"--model={src.model}", f"--dataset={src.dataset}", f"--tokenizer={src.tokenizer}",
             f"--device={target.device.spec}", f"--precision={target.precision}", f"--reference={reference}",
             f"--grouping={method.grouping}", f"--block-size={method.block_size}", f"--model-dir={src.model_dir}", f"--cache-dir={src.cache_dir}"]
    return shlex.join(describe_words(words))
