"""Fixtures of the suite's own tests: the shared offline data and a built tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from pplgate.data import load_tokens
from pplgate.sources import resolve_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: the wikitext test split and GPT-2's tokenizer files."""
    if not (SHARED_DATA / "wikitext").is_dir() or not (SHARED_DATA / "gpt2").is_dir():
        pytest.fail(f"the offline data is missing: {SHARED_DATA} must hold wikitext/ and gpt2/ (see README).", pytrace=False)
    return SHARED_DATA


@pytest.fixture(scope="session")
def dataset_dir(shared_data: Path) -> str:
    return str(shared_data / "wikitext")


@pytest.fixture(scope="session")
def tokenizer_dir(shared_data: Path) -> str:
    return str(shared_data / "gpt2")


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model")


@pytest.fixture(scope="session")
def tokens(dataset_dir, tokenizer_dir, token_cache):
    return load_tokens(dataset_dir, tokenizer_dir, token_cache)


@pytest.fixture(scope="session")
def blocks(tokens):
    """[276, 1024] int64."""
    return tokens.blocks()


@pytest.fixture(scope="session")
def tiny_model(model_dir) -> Path:
    return resolve_model("builtin:tiny", model_dir)
