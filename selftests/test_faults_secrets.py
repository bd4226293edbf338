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
        "x https://***@h/a.onnx?X-Amz-Signature=***&q-ak=***&q-signature=***&api_key=***&part=5 y")
    assert mask("builtin:tiny /data/model.onnx hf://o/r/f.onnx") == "builtin:tiny /data/model.onnx hf://o/r/f.onnx"
