"""Model hashes: computed once per file version, while streaming for downloads."""

from __future__ import annotations

import hashlib
import os

import pytest

import pplgate.digest
from pplgate.digest import file_digest
from pplgate.sources import download


@pytest.fixture
def counted_reads(monkeypatch):
    """Counts the whole-file hash reads pplgate.digest makes."""
    reads = []
    original = pplgate.digest.sha256_of

    def counting(path):
        reads.append(path)
        return original(path)

    monkeypatch.setattr(pplgate.digest, "sha256_of", counting)
    return reads


def test_download_is_hashed_while_streaming_and_reused(model_server, tmp_path, counted_reads):
    url = model_server.url("ok") + "#sha256=" + hashlib.sha256(model_server.body).hexdigest()
    path = download(url, tmp_path, progress=False)
    digest = file_digest(path, tmp_path / "cache")
    assert digest.sha256 == hashlib.sha256(model_server.body).hexdigest() and digest.bytes == len(model_server.body)
    # A second download call with a declared checksum checks it without rereading the file.
    download(url, tmp_path, progress=False)
    assert counted_reads == [] and len(model_server.requests) == 1


def test_local_file_is_hashed_once_per_version(tmp_path, counted_reads):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"one")
    first = file_digest(path, tmp_path / "cache")
    assert file_digest(path, tmp_path / "cache") == first
    assert len(counted_reads) == 1
    # Replaced by hand, same size: the new modification time makes it hashed again.
    path.write_bytes(b"two")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_digest(path, tmp_path / "cache").sha256 == hashlib.sha256(b"two").hexdigest()
    assert len(counted_reads) == 2
