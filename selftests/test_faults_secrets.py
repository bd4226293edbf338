"""Credentials in a model address are used, never shown: not in messages, reports, skip reasons, suggested commands, help or files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

pytest_plugins = ["pytester"]

SECRET = "s3cret-pw"
TOKEN = "tok-9d8e7f"


def everything_written(*folders: Path) -> str:
    """Every file's text below the folders, binary files included as far as they decode."""
    return "".join(p.read_bytes().decode("utf-8", "replace") for f in folders for p in Path(f).rglob("*") if p.is_file())


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pplgate", "--no-progress", *args], capture_output=True, text=True, timeout=300)


def test_basic_auth_in_the_url_is_sent_as_a_header_and_never_shown(model_server, base_args, tmp_path):
    url = model_server.url("auth").replace("http://", f"http://user:{SECRET}@")
    models = tmp_path / "models"
    result = cli(*base_args, "--model", url, "--model-dir", str(models), "--max-blocks", "1", "--report-json", str(tmp_path / "r.json"),
                 "--save-losses", str(tmp_path / "l.npz"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["model"] == model_server.url("auth")
    assert SECRET not in result.stdout + result.stderr + everything_written(tmp_path)


def test_wrong_credentials_are_one_sentence_without_them(model_server, base_args, tmp_path):
    url = model_server.url("auth").replace("http://", "http://user:wrong-pw@")
    result = cli(*base_args, "--model", url, "--model-dir", str(tmp_path), "--max-blocks", "1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"pplgate: error: download of {model_server.url('auth')} failed: the server answered HTTP 401 Unauthorized; "
        "check the URL (signed links expire) or pass --model with a local copy.")
    assert "wrong-pw" not in result.stdout + result.stderr + everything_written(tmp_path)


def test_help_hides_the_vendor_urls_key_and_signature():
    from pplgate.sources import VENDOR_MODEL_URL

    shown = cli("--help").stdout
    assert "AKIDYyBAwXzDD1e4GEzZUBgy2iDU5TeaIVUG" not in shown and "143a3bbaf9de6b76c0b2f11b4d40a71dc5eaad75" not in shown
    assert "AKIDYyBAwXzDD1e4GEzZUBgy2iDU5TeaIVUG" in VENDOR_MODEL_URL  # the address itself still carries them


def test_gate_masks_tokens_in_failures_commands_and_reports(scratch_gate, model_server, tmp_path):
    url = model_server.url("ok") + f"?token={TOKEN}&sig=abc123sig"
    scratch_gate.ini(devices="cpu")
    scratch_gate.case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1}}, model="https://example.invalid/x.onnx", max_blocks=1)
    report, junit = scratch_gate.path / "gate.json", scratch_gate.path / "junit.xml"
    result = scratch_gate.run(f"--model={url}", f"--gate-report={report}", f"--junitxml={junit}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*outside its tolerance*", "*-m pplgate localize '--model=http://127.0.0.1:*/ok/model.onnx?token=???&sig=???' *"])
    assert TOKEN not in result.stdout.str() + result.stderr.str()
    assert "abc123sig" not in result.stdout.str()
    assert TOKEN not in everything_written(scratch_gate.golden) + report.read_text() + junit.read_text()


def test_unreachable_url_with_a_password_skips_without_it(scratch_gate):
    url = f"http://user:{SECRET}@127.0.0.1:9/unreachable.onnx"  # the discard port: nothing listens
    scratch_gate.ini(devices="cpu")
    scratch_gate.case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1}}, model="https://example.invalid/x.onnx", max_blocks=1)
    report = scratch_gate.path / "gate.json"
    result = scratch_gate.run(f"--model={url}", "-rs", f"--gate-report={report}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*model URL http://127.0.0.1:9/unreachable.onnx cannot be reached*"])
    assert SECRET not in result.stdout.str() + result.stderr.str() + report.read_text()


def test_mask_leaves_addresses_usable_and_hides_what_is_secret():
    from pplgate.sources import mask

    assert mask("x https://u:p@h/a.onnx?X-Amz-Signature=1&q-ak=2&q-signature=3&api_key=4&part=5 y") == (
        "x https://***@h/a.onnx?X-Amz-Signature=***&q-ak=***&q-signature=***&api_key=***&part=*** y")
    # Every value but a known harmless one, whatever the name or its spelling; fragments and bare values too.
    assert mask("https://h/m.onnx?pw=1&pwd=2&pass=3&code=4&Authorization=Bearer%20x&jwt=5&bearer=6&%74oken=7;sid=8&revision=main#sha256=ab") == (
        "https://h/m.onnx?pw=***&pwd=***&pass=***&code=***&Authorization=***&jwt=***&bearer=***&%74oken=***;sid=***&revision=main#sha256=ab")
    assert mask("hf://o/r/f.onnx?token=hf_abc#frag https://h/x?opaque") == "hf://o/r/f.onnx?token=***#*** https://h/x?***"
    assert mask("builtin:tiny /data/model.onnx hf://o/r/f.onnx") == "builtin:tiny /data/model.onnx hf://o/r/f.onnx"


def test_a_hub_token_in_the_address_is_never_shown(scratch_gate, tmp_path):
    spec = f"hf://owner/repo/onnx/model.onnx?token={TOKEN}"
    scratch_gate.ini(devices="cpu")
    scratch_gate.case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1}}, model="https://example.invalid/x.onnx", max_blocks=1)
    report, junit = scratch_gate.path / "gate.json", scratch_gate.path / "junit.xml"
    for extra in ([], [f"--gate-sources={tmp_path / 'empty-sources'}"]):
        (tmp_path / "empty-sources").mkdir(exist_ok=True)
        result = scratch_gate.run(f"--gate-model={spec}", "-rs", f"--gate-report={report}", f"--junitxml={junit}", *extra)
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*model hf://owner/repo/onnx/model.onnx *"])
        assert TOKEN not in result.stdout.str() + result.stderr.str() + report.read_text() + junit.read_text()
    shown = cli("--model", spec, "--dataset", "/nonexistent", "--max-blocks", "1")
    assert shown.returncode != 0 and TOKEN not in shown.stdout + shown.stderr


def test_an_hf_address_takes_revision_and_token_only():
    import pytest

    from pplgate.errors import PplgateError
    from pplgate.sources import hub_address

    assert hub_address("hf://o/r/onnx/m.onnx?revision=v1&token=t") == ("o/r", "onnx/m.onnx", {"revision": "v1", "token": "t"})
    with pytest.raises(PplgateError, match=r"^model hf://o/r/m\.onnx has parameter 'sig', which an hf:// address does not take"):
        hub_address("hf://o/r/m.onnx?sig=secret")
