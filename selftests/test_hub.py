"""Hub addresses (hf://owner/repo/path) and what a hub source that cannot be had says."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pplgate.errors import PplgateError
from pplgate.hub import hub_address, hub_download, offline_advice


def test_an_hf_address_takes_revision_and_token_only():
    assert hub_address("hf://o/r/onnx/m.onnx?revision=v1&token=t") == ("o/r", "onnx/m.onnx", {"revision": "v1", "token": "t"})
    with pytest.raises(PplgateError, match=r"^model hf://o/r/m\.onnx has parameter 'sig', which an hf:// address does not take"):
        hub_address("hf://o/r/m.onnx?sig=secret")
    with pytest.raises(PplgateError, match=r"^model hf://o/r/m\.onnx has a fragment, which an hf:// address does not take"):
        hub_address("hf://o/r/m.onnx#x")


@pytest.mark.parametrize("spec", ["hf://", "hf://gpt2", "hf://owner/repo/", "hf://owner//file.onnx"])
def test_malformed_hub_addresses(spec):
    with pytest.raises(PplgateError) as info:
        hub_address(spec)
    assert str(info.value).startswith(f"model {spec} is not of the form hf://<owner>/<repo>/<path in repo>: for example hf://openai-community/gpt2")


def test_a_repository_name_the_hub_refuses_is_one_sentence():
    with pytest.raises(PplgateError, match=r"^model hf://own er/re po/file\.onnx names no valid hub repository"):
        hub_download("hf://own er/re po/file.onnx")


def test_the_advice_never_says_to_do_what_is_done(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE is set" in offline_advice("--model", "a local copy")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert offline_advice("--model", "a local copy").endswith("or set HF_HUB_OFFLINE=1 to use the Hugging Face cache")


HUB = """
import sys
from pplgate.errors import PplgateError
from pplgate.models import resolve_model
try:
    resolve_model(sys.argv[1], "model")
except PplgateError as err:
    print(type(err).__name__, err, file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.e2e
def test_a_hub_model_not_in_the_cache_offline(tmp_path):
    """huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when imported: a process of its own."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-c", HUB, "hf://openai-community/gpt2/onnx/decoder_model.onnx"], capture_output=True, text=True,
                            timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "SourceUnavailable model hf://openai-community/gpt2/onnx/decoder_model.onnx cannot be reached: "
        "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set: pass --model with a local copy, "
        "or --sources DIR (in the gate --gate-sources=DIR, or $PPLGATE_SOURCES) with a folder 'python -m pplgate fetch DIR' wrote.")
