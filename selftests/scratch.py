"""Helpers of the scratch gate projects that the plugin's tests run (the fixture is selftests/conftest.py's scratch_gate)."""

from __future__ import annotations

import json
from pathlib import Path


def write_case(folder: Path, expected: dict, model: str = "builtin:tiny", name: str = "mini", max_blocks: int = 2, **top) -> Path:
    """A golden file ``<folder>/<name>.json``: the model on the hub's data ids (--dataset and --tokenizer point at the copies)."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({
        "case": name,
        "sources": {"model": model, "dataset": "Salesforce/wikitext", "tokenizer": "openai-community/gpt2"},
        "method": {"max_blocks": max_blocks},
        "expected": expected,
        **top,
    }, indent=2))
    return path


# A scratch project whose machine is reported idle: what its runs are judged to be must not depend on what else the
# machine does (a parallel test run counts as load).
IDLE_CONFTEST = """
import pytest
from pplgate.conditions import Conditions, Watch

pytest_plugins = ["pytest_pplgate.plugin"]

@pytest.fixture(autouse=True)
def idle_machine(monkeypatch):
    monkeypatch.setattr(Watch, "stop", lambda self: Conditions(0.1, 0.1, 0.0, None, None, 2))
"""
