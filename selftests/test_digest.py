"""Model hashes: computed once per file version, trusted only while the file is the very one hashed."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pplgate.digest
from pplgate.digest import file_digest, sha256_of


def test_a_local_file_is_hashed_once_per_version(tmp_path, monkeypatch):
    reads = []
    original = pplgate.digest.sha256_of
    monkeypatch.setattr(pplgate.digest, "sha256_of", lambda path: reads.append(path) or original(path))
    path = tmp_path / "m.onnx"
    path.write_bytes(b"one")
    first = file_digest(path, tmp_path / "cache")
    assert file_digest(path, tmp_path / "cache") == first
    assert len(reads) == 1
    # Replaced by hand, same size: the new modification time makes it hashed again.
    path.write_bytes(b"two")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_digest(path, tmp_path / "cache").sha256 == hashlib.sha256(b"two").hexdigest()
    assert len(reads) == 2


def test_a_same_size_same_time_swap_is_hashed_again(tiny_model, tmp_path):
    """cp -p, rsync -t, an unpacked archive: the size and modification time say nothing, the inode and change time do."""
    model = tmp_path / "m.onnx"
    shutil.copyfile(tiny_model, model)
    first = file_digest(model, tmp_path / "cache").sha256
    other = tmp_path / "other.onnx"
    data = bytearray(tiny_model.read_bytes())
    data[-1] ^= 0xFF
    other.write_bytes(bytes(data))
    stat = model.stat()
    shutil.copyfile(other, model)
    subprocess.run(["touch", "-r", str(other), str(model)], check=True)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model.stat().st_size == stat.st_size and model.stat().st_mtime_ns == stat.st_mtime_ns
    assert file_digest(model, tmp_path / "cache").sha256 == sha256_of(other) != first
