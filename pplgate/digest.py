"""sha256 of model files, computed once per file version.

A golden value pins the model it was measured on, so every run needs the hash
of a file that may be gigabytes.  It is computed once and kept:

- beside a file pplgate made itself (a download hashed while it streamed, an
  fp16 conversion hashed from the bytes it wrote): ``<file>.json``;
- for any other file, in ``<cache>/hashes``, keyed by its path.

Either is trusted only while the file is the very one recorded: its inode,
size, modification time and change time, as git's index tells a changed file.
A copy that keeps the old size and modification time (``cp -p``, ``rsync
-t``, an unpacked archive) is a new inode or a new change time, which no user
can set back, so it is hashed again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pplgate.fileio import CACHE_FIX, write_json_atomic

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


def identity(path: Path) -> dict:
    """What tells this file from any other, short of reading it: inode, size, modification and change time."""
    stat = path.stat()
    return {
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
        "device": stat.st_dev,
    }


def stamp(path: Path, sha256: str) -> dict:
    """The fields that let a later run trust ``sha256`` for the file as it is now."""
    return {"sha256": sha256, **identity(path)}


def unchanged(record: dict, path: Path) -> bool:
    """Whether ``path`` is still the very file ``record`` was stamped from."""
    now = identity(path)
    return all(record.get(k) == v for k, v in now.items())


def _trusted(record: dict, path: Path) -> str | None:
    if unchanged(record, path) and isinstance(record.get("sha256"), str):
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
        write_json_atomic(cached, {"path": str(path), **stamp(path, known)}, fix=CACHE_FIX)
    return FileDigest(known, size)
