"""Downloads against a real HTTP server on 127.0.0.1: a partial or changed file is never a model."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import subprocess
import sys
import time

import pytest

import pplgate.digest
from pplgate.digest import file_digest
from pplgate.download import download
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.models import resolve_model


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_whole_download_lands_with_its_provenance(model_server, tmp_path):
    path = download(model_server.url("ok"), tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
    assert listing(tmp_path) == [".model.onnx.lock", "model.onnx", "model.onnx.json"]
    assert json.loads((tmp_path / "model.onnx.json").read_text())["made_from"] == model_server.url("ok")
    download(model_server.url("ok"), tmp_path, progress=False)
    assert len(model_server.requests) == 1  # the second call reuses the file


def test_a_download_is_hashed_while_it_streams_and_never_read_again(model_server, tmp_path, monkeypatch):
    reads = []
    monkeypatch.setattr(pplgate.digest, "sha256_of", lambda path: reads.append(path))
    url = model_server.url("ok") + "#sha256=" + hashlib.sha256(model_server.body).hexdigest()
    path = download(url, tmp_path, progress=False)
    digest = file_digest(path, tmp_path / "cache")
    assert digest.sha256 == hashlib.sha256(model_server.body).hexdigest() and digest.bytes == len(model_server.body)
    download(url, tmp_path, progress=False)
    assert reads == [] and len(model_server.requests) == 1


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


def test_html_saved_as_the_model_by_an_old_run_is_downloaded_again(model_server, tmp_path, caplog, tiny_model):
    url = model_server.url("ok")
    (tmp_path / "model.onnx").write_bytes(b"<!DOCTYPE html><html>expired</html>")
    with caplog.at_level(logging.INFO, logger="pplgate"):
        path = resolve_model(url, tmp_path, progress=False)
    assert path.read_bytes() == tiny_model.read_bytes()
    assert f"{tmp_path / 'model.onnx'} was not made from {url} as it is now: downloading it again" in caplog.text


def test_html_answer_to_a_model_url_is_one_sentence_and_nothing_kept(model_server, tmp_path):
    with pytest.raises(PplgateError, match=r"sent an HTML page, not an ONNX model, so nothing was kept: check the address"):
        resolve_model(model_server.url("html"), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []


def test_another_address_with_the_same_file_name_is_downloaded_again(model_server, tmp_path, caplog):
    first = resolve_model(model_server.url("ok"), tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="pplgate"):
        again = resolve_model(model_server.url("norange"), tmp_path, progress=False)
    assert again == first
    assert f"{first} was made from {model_server.url('ok')}, not {model_server.url('norange')}: downloading it again" in caplog.text
    assert [p for p, _ in model_server.requests] == ["/ok/model.onnx", "/norange/model.onnx"]


def test_a_part_of_a_changed_file_is_never_resumed(model_server, tmp_path):
    """The rest is asked for under If-Range: a server whose file changed sends the whole new one."""
    url = model_server.url("dropped")
    with pytest.raises(PplgateError, match="broke off after"):
        download(url, tmp_path, progress=False)
    model_server.body = other_model(tmp_path)  # a new version, the same size
    path = download(url, tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
    assert model_server.if_ranges[-1] is not None and model_server.requests[-1][1] is not None, "asked for the rest, under If-Range"


def other_model(folder) -> bytes:
    """builtin:tiny's architecture with other weights: a whole model of the same size."""
    import dataclasses

    from pplgate.testmodel import PRESETS, write_model

    return write_model(dataclasses.replace(PRESETS["tiny"], seed=PRESETS["tiny"].seed + 1), folder / "other" / "m.onnx").read_bytes()


def _part(tmp_path, url, body, **validator):
    from pplgate.download import address_key

    (tmp_path / "model.onnx.part").write_bytes(body[: len(body) // 2])
    record = {"address_sha256": address_key(url), "length": len(body), "etag": None, "last_modified": None, **validator}
    (tmp_path / "model.onnx.part.json").write_text(json.dumps(record))


def test_a_server_that_ignores_if_range_is_caught_by_its_etag(model_server, tmp_path):
    url = model_server.url("ignores-if-range")
    _part(tmp_path, url, model_server.body, etag='"an-older-version"')
    path = download(url, tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
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


DOWNLOAD = """
import logging, resource, signal, sys
from pathlib import Path
from pplgate.errors import PplgateError
from pplgate.download import download
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


@pytest.mark.e2e
def test_no_room_left_removes_the_part(model_server, tmp_path):
    result = subprocess.run([sys.executable, "-c", DOWNLOAD, model_server.url("ok"), str(tmp_path), "1000000"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no room left to write model.onnx into" in result.stderr and "free space there" in result.stderr
    assert [n for n in listing(tmp_path) if not n.startswith(".")] == []


@pytest.mark.e2e
def test_concurrent_runs_download_once(model_server, tmp_path):
    url = model_server.url("throttled")
    procs = [subprocess.Popen([sys.executable, "-c", DOWNLOAD, url, str(tmp_path)], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(log.count("downloading") for log in logs) == 1
    assert len(model_server.requests) == 1
    assert (tmp_path / "model.onnx").read_bytes() == model_server.body


@pytest.mark.parametrize(("last", "name"), [
    ("%2e%2e", ".."), (".", "."), ("a%2Fb.onnx", "a/b.onnx"), (".hidden.onnx", ".hidden.onnx"), ("x.onnx.part", "x.onnx.part"),
    ("x.onnx.json", "x.onnx.json"), (".x.onnx.lock", ".x.onnx.lock"), ("x.onnx.lock.pid", "x.onnx.lock.pid"), ("SHA256SUMS", "SHA256SUMS"),
])
def test_a_url_whose_name_is_no_plain_file_or_one_of_pplgates_own_is_refused(model_server, tmp_path, last, name):
    """As found: ``%2e%2e`` failed with "Device or resource busy" and left a 3 MB part; ``x.onnx.part`` or ``SHA256SUMS``
    was saved over pplgate's own file."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "SHA256SUMS").write_text("kept\n")
    with pytest.raises(PplgateError, match=rf"^URL http://127.0.0.1:\d+/ok/{last} names the file {name!r}, which pplgate "
                                           r"will not save under that name \(.+\): download it yourself under another name "
                                           r"and pass that path to --model\.$"):
        download(model_server.url("ok", last), folder, progress=False)
    assert listing(folder) == ["SHA256SUMS"] and (folder / "SHA256SUMS").read_text() == "kept\n"


def test_a_resume_is_proven_by_the_answers_last_modified_where_there_is_no_etag(model_server, tmp_path):
    """As found: a server that sends only Last-Modified and ignores If-Range spliced two versions into one file."""
    from conftest import ModelServer

    url = model_server.url("lastmod-only")
    older = other_model(tmp_path)  # the version the part was cut from, the same size
    assert ModelServer.modified(older) != ModelServer.modified(model_server.body)
    _part(tmp_path, url, older, last_modified=ModelServer.modified(older))
    path = download(url, tmp_path, progress=False)
    assert path.read_bytes() == model_server.body
    assert model_server.requests[0][1] is not None and model_server.requests[-1][1] is None, "the 206 was dropped, the file fetched whole"


def test_a_206_that_does_not_start_where_the_part_ends_is_not_appended(model_server, tmp_path):
    """As found: a 206 from byte 0 was appended to the part, and the corrupt model was kept for good."""
    url = model_server.url("from-zero")
    _part(tmp_path, url, model_server.body, etag='"' + hashlib.sha256(model_server.body).hexdigest()[:16] + '"')
    path = download(url, tmp_path, progress=False)
    assert path.read_bytes() == model_server.body


@pytest.mark.parametrize(("mode", "said"), [
    ("under-length", r"not a whole ONNX model"),
    ("two-lengths", r"the server sent 2 Content-Length headers, so its size is unknown"),
])
def test_an_answer_that_is_not_the_model_is_never_kept(model_server, tmp_path, mode, said):
    """As found: a Content-Length smaller than the body, or two of them, left a corrupt model with its sidecar."""
    with pytest.raises(PplgateError, match=said):
        download(model_server.url(mode), tmp_path, progress=False)
    assert [n for n in listing(tmp_path) if not n.startswith(".") and not n.endswith(".part")] == []
    assert download(model_server.url("ok"), tmp_path, progress=False).read_bytes() == model_server.body


def test_credentials_are_not_sent_to_the_host_a_redirect_names(model_server, tmp_path):
    """As found: Basic credentials of a model URL went on to the host and port a redirect named."""
    from conftest import ModelServer

    other = ModelServer(model_server.body)
    try:
        model_server.redirect_to = other.url("ok")
        url = model_server.url("redirect").replace("http://", "http://user:s3cret-pw@")
        assert download(url, tmp_path, progress=False).read_bytes() == model_server.body
        assert model_server.authorizations[0] is not None and other.authorizations == [None]
    finally:
        other.close()


def test_a_server_that_trickles_its_headers_is_cut_off(model_server, tmp_path):
    """As found: headers a byte at a time held a download for 400 s, until killed, and left a lock's pid file."""
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"^model URL http://127\.0\.0\.1:\d+/slow-headers/model\.onnx cannot be reached "
                                                r"\(no complete answer within 0\.5 s\): pass --model with a local copy"):
        download(model_server.url("slow-headers"), tmp_path, progress=False, timeout=0.5)
    assert time.monotonic() - started < 10
    assert [n for n in listing(tmp_path) if n.endswith(".pid") or not n.startswith(".")] == []


def test_addresses_that_differ_in_their_query_are_different_files(model_server, tmp_path, caplog):
    """As found: ``model.onnx?v=2`` evaluated the file downloaded for ``?v=1``."""
    first = download(model_server.url("ok") + "?v=1", tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="pplgate"):
        again = download(model_server.url("ok") + "?v=2", tmp_path, progress=False)
    assert again == first and len(model_server.requests) == 2
    assert "v=1" not in caplog.text and "v=2" not in caplog.text  # query values are masked where printed
