"""sha256 of model files, computed once per file version.

A golden value pins the model it was measured on, so every run needs the hash
of a file that may be gigabytes.  It is computed once and kept:

- beside a file pplgate made itself (a download hashed while it streamed, an
  fp16 conversion hashed from the bytes it wrote): ``<file>.json`` holds
  ``sha256``, ``bytes`` and ``mtime_ns``;
- for any other file, in ``<cache>/hashes``, keyed by its path.

Either is trusted only while the file's size and modification time are those
recorded, so a file replaced by hand is hashed again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pplgate.fileio import write_json_atomic

CHUNK = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    sha256: str
    bytes: int


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    """``<file>.json``: what pplgate knows about a file it made."""
    return path.with_name(path.name + ".json")


def stamp(path: Path, sha256: str) -> dict:
    """The fields that let a later run trust ``sha256`` for the file as it is now."""
    stat = path.stat()
    return {"sha256": sha256, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _trusted(record: dict, path: Path) -> str | None:
    stat = path.stat()
    if record.get("bytes") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns and isinstance(record.get("sha256"), str):
        return record["sha256"]
    return None


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_digest(path: Path, cache_dir: Path) -> FileDigest:
    path = Path(path).resolve()
    size = path.stat().st_size
    known = _trusted(_read(sidecar(path)), path)
    if known is not None:
        return FileDigest(known, size)
    cached = Path(cache_dir) / "hashes" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.json"
    known = _trusted(_read(cached), path)
    if known is None:
        known = sha256_of(path)
        write_json_atomic(cached, {"path": str(path), **stamp(path, known)})
    return FileDigest(known, size)
