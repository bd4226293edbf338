"""Downloads against a real HTTP server on 127.0.0.1: a partial file is never a model."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time

import pytest

from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.sources import download


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_whole_download_lands_with_its_provenance(model_server, tmp_path):
    path = download(model_server.url("ok"), tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
    assert listing(tmp_path) == [".model.onnx.lock", "model.onnx", "model.onnx.json"]
    download(model_server.url("ok"), tmp_path, progress=False)
    assert len(model_server.requests) == 1  # the second call reuses the file


def test_unreachable_host_is_a_missing_source(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceUnavailable, match=r"cannot be reached .*: pass --model with a local copy"):
        download(f"http://127.0.0.1:{port}/m/model.onnx", tmp_path, progress=False)
    assert "model.onnx" not in listing(tmp_path)


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_status_leaves_nothing(model_server, tmp_path, status):
    with pytest.raises(PplgateError, match=f"the server answered HTTP {status}"):
        download(model_server.url(f"status-{status}"), tmp_path, progress=False)
    assert [n for n in listing(tmp_path) if not n.startswith(".")] == []


def test_dropped_connection_keeps_the_part_and_the_next_run_resumes(model_server, tmp_path):
    url = model_server.url("dropped")
    with pytest.raises(PplgateError, match=r"broke off after [\d,]+ bytes .*: run again to resume it"):
        download(url, tmp_path, progress=False)
    assert "model.onnx" not in listing(tmp_path)
    half = (tmp_path / "model.onnx.part").stat().st_size
    assert 0 < half < len(model_server.body)
    path = download(url, tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
    assert model_server.requests[-1] == ("/dropped/model.onnx", f"bytes={half}-")
    assert "model.onnx.part" not in listing(tmp_path)


def test_server_without_ranges_starts_over(model_server, tmp_path):
    (tmp_path / "model.onnx.part").write_bytes(b"stale bytes from an earlier try")
    path = download(model_server.url("norange"), tmp_path, progress=False)
    assert path.read_bytes() == model_server.body


def test_body_shorter_than_its_content_length_is_not_a_model(model_server, tmp_path):
    with pytest.raises(PplgateError, match="broke off after"):
        download(model_server.url("short"), tmp_path, progress=False)
    assert "model.onnx" not in listing(tmp_path)


def test_stalled_body_times_out_and_keeps_the_part(model_server, tmp_path):
    with pytest.raises(PplgateError, match="broke off after"):
        download(model_server.url("slow"), tmp_path, progress=False, timeout=0.5)
    assert "model.onnx" not in listing(tmp_path)
    assert "model.onnx.part" in listing(tmp_path)


def test_checksum_mismatch_removes_the_file(model_server, tmp_path):
    with pytest.raises(PplgateError, match="not the declared 0000.*the file was removed"):
        download(model_server.url("ok") + "#sha256=" + "0" * 64, tmp_path, progress=False)
    assert [n for n in listing(tmp_path) if not n.startswith(".")] == []
    good = hashlib.sha256(model_server.body).hexdigest()
    assert download(model_server.url("ok") + f"#sha256={good}", tmp_path, progress=False).read_bytes() == model_server.body


def test_a_changed_file_that_no_longer_matches_is_replaced(model_server, tmp_path):
    good = hashlib.sha256(model_server.body).hexdigest()
    (tmp_path / "model.onnx").write_bytes(b"not the model")
    path = download(model_server.url("ok") + f"#sha256={good}", tmp_path, progress=False)
    assert path.read_bytes() == model_server.body


DOWNLOAD = """
import logging, resource, signal, sys
from pathlib import Path
from pplgate.errors import PplgateError
from pplgate.sources import download
logging.basicConfig(level=logging.INFO, format="%(message)s")
if len(sys.argv) > 3:  # a file-size limit stands in for a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
try:
    download(sys.argv[1], Path(sys.argv[2]), progress=False)
except PplgateError as err:
    print(err, file=sys.stderr)
    sys.exit(1)
"""


def test_no_room_left_removes_the_part(model_server, tmp_path):
    result = subprocess.run([sys.executable, "-c", DOWNLOAD, model_server.url("ok"), str(tmp_path), "1000000"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no room left to write model.onnx into" in result.stderr and "free space there" in result.stderr
    assert [n for n in listing(tmp_path) if not n.startswith(".")] == []


def test_concurrent_runs_download_once(model_server, tmp_path):
    url = model_server.url("throttled")
    procs = [subprocess.Popen([sys.executable, "-c", DOWNLOAD, url, str(tmp_path)], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(log.count("downloading") for log in logs) == 1
    assert len(model_server.requests) == 1
    assert (tmp_path / "model.onnx").read_bytes() == model_server.body


HUB = """
import sys
from pplgate.errors import PplgateError
from pplgate.sources import resolve_model
try:
    resolve_model(sys.argv[1], "model")
except PplgateError as err:
    print(type(err).__name__, err, file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.parametrize(("spec", "message"), [
    ("hf://openai-community/gpt2/onnx/decoder_model.onnx",
     "SourceUnavailable model hf://openai-community/gpt2/onnx/decoder_model.onnx cannot be reached: "
     "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set: pass --model with a local copy, "
     "or --sources DIR (in the gate --gate-sources=DIR, or $PPLGATE_SOURCES) with a folder 'python -m pplgate fetch DIR' wrote."),
    ("hf://gpt2", "PplgateError model hf://gpt2 is not of the form hf://<owner>/<repo>/<path in repo>: for example hf://openai-community/gpt2/onnx/decoder_model.onnx."),
])
def test_hub_models_offline(spec, message, tmp_path):
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run([sys.executable, "-c", HUB, spec], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == message


def test_a_part_of_a_changed_file_is_never_resumed(model_server, tmp_path):
    """The rest is asked for under If-Range: a server whose file changed sends the whole new one."""
    url = model_server.url("dropped")
    with pytest.raises(PplgateError, match="broke off after"):
        download(url, tmp_path, progress=False)
    model_server.body = model_server.body[::-1]  # a new version, the same size
    path = download(url, tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
    assert model_server.if_ranges[-1] is not None and model_server.requests[-1][1] is not None, "asked for the rest, under If-Range"


def test_a_server_that_ignores_if_range_is_caught_by_its_etag(model_server, tmp_path):
    url = model_server.url("ignores-if-range")
    old = model_server.body
    (tmp_path / "model.onnx.part").write_bytes(old[: len(old) // 2])
    (tmp_path / "model.onnx.part.json").write_text(json.dumps({"url": url, "length": len(old), "etag": '"an-older-version"', "last_modified": None}))
    path = download(url, tmp_path, progress=False)
    assert path.read_bytes() == old
    assert model_server.requests[-1][1] is None, "the 206 of another version was dropped and the whole file asked for"


def test_a_part_without_a_validator_starts_over(model_server, tmp_path):
    """An old .part (or a server that names no version) cannot be proven the same file: it is not resumed."""
    (tmp_path / "model.onnx.part").write_bytes(model_server.body[:100])
    path = download(model_server.url("novalidator"), tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
    assert model_server.requests == [("/novalidator/model.onnx", None)]


def test_a_trickling_server_is_cut_off_with_its_rate(model_server, tmp_path):
    started = time.monotonic()
    with pytest.raises(PplgateError, match=r"^download of http://127\.0\.0\.1:\d+/trickle/model\.onnx made no real progress: \d+ bytes in the last 0\.\d s "
                                           r"\(\d+ bytes/s, under 1,024\); the \d+ bytes so far are kept: run again to resume"):
        download(model_server.url("trickle"), tmp_path, progress=False, timeout=0.5)
    assert time.monotonic() - started < 10
    assert "model.onnx" not in listing(tmp_path) and "model.onnx.part" in listing(tmp_path)


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_a_content_length_that_is_no_size_is_one_sentence(model_server, tmp_path, length):
    with pytest.raises(PplgateError, match=rf"^download of .* failed: the server sent Content-Length '{length}', which is not a size"):
        download(model_server.url(f"length-{length}"), tmp_path, progress=False)
    assert [n for n in listing(tmp_path) if not n.startswith(".")] == []


def test_a_body_of_unannounced_size_is_kept_only_when_it_is_a_whole_model(model_server, tmp_path):
    path = download(model_server.url("unsized"), tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
    with pytest.raises(PplgateError, match=r"sent [\d,]+ bytes without announcing its size, and they are not a whole ONNX model, so nothing was kept"):
        download(model_server.url("unsized-cut", "cut.onnx"), tmp_path, progress=False)
    assert "cut.onnx" not in listing(tmp_path) and "cut.onnx.part" not in listing(tmp_path)


def test_a_model_built_before_is_used_without_taking_its_lock(tmp_path, monkeypatch):
    """A read-only checkout (or model folder) with the model already there runs: no lock file needs to be made."""
    import pplgate.sources
    from pplgate.fileio import WriteFailed
    from pplgate.sources import build_builtin

    path = build_builtin("tiny", tmp_path)

    def no_locks(_):
        raise WriteFailed("cannot lock: the folder is read-only")

    monkeypatch.setattr(pplgate.sources, "locked", no_locks)
    assert build_builtin("tiny", tmp_path) == path
