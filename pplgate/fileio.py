"""Files shared by processes: written so that no reader sees half of one, made under a lock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger("pplgate")

# How long a lock is waited for in silence; then the wait is said, with the holder.
QUIET_WAIT_S = 5.0


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls ``write`` on a temporary file beside ``path``, then renames it over.

    An interruption (Ctrl-C, a full disk) leaves the old file, or none, and no
    temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 honours the umask, as open() would; mkstemp's 0o600 does not.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, data: object) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return write_atomic(path, lambda f: f.write(text.encode()))


def user_cache_dir() -> Path:
    """``$PPLGATE_CACHE``, else ``$XDG_CACHE_HOME/pplgate``, else ``~/.cache/pplgate``."""
    if os.environ.get("PPLGATE_CACHE"):
        return Path(os.environ["PPLGATE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pplgate"


def default_model_dir() -> Path:
    """Where models are downloaded, built and converted when no option says.

    The ``model/`` folder of the checkout pplgate runs from (its README marks
    it), so the CLI started from any folder and the gate share one copy of
    each model; ``<cache>/models`` where pplgate is installed without one.
    """
    checkout = Path(__file__).resolve().parents[1] / "model"
    return checkout if (checkout / "README.md").is_file() else user_cache_dir() / "models"


def lock_path(path: Path) -> str:
    """A hidden lock file beside ``path``: held while ``path`` is being made."""
    return str(path.with_name(f".{path.name}.lock"))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Holds the lock of ``path`` (another process making it waits); a long wait names the holder.

    The holder's pid is kept in a file of its own beside the lock: filelock
    truncates the lock file itself on every attempt to take it.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path(path))
    holder = Path(lock_path(path) + ".pid")
    try:
        lock.acquire(timeout=QUIET_WAIT_S)
    except Timeout:
        try:
            pid = holder.read_text().strip() or "unknown"
        except OSError:
            pid = "unknown"
        log.info("waiting for %s, which process %s is making (lock %s)", path, pid, lock.lock_file)
        lock.acquire()
    try:
        with contextlib.suppress(OSError):
            holder.write_text(str(os.getpid()))
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()
