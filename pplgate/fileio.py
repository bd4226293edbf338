"""Files shared by processes: written so that no reader sees half of one, made under a lock."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from pplgate.errors import PplgateError

log = logging.getLogger("pplgate")

# How long a lock is waited for in silence; then the wait is said, with the holder.
QUIET_WAIT_S = 5.0


# What to do when a cache cannot be written: the sentence's second half.
CACHE_FIX = "point --cache-dir (in the gate --gate-cache-dir, or $PPLGATE_CACHE) at a writable folder with room"
DEFAULT_FIX = "choose a path in a writable folder with room"


class WriteFailed(PplgateError):
    """A file that could not be written (a folder that is a file or read-only, a full disk); nothing half-written is
    left.
    """


def write_atomic(path: Path, write: Callable[[IO[bytes]], object], fix: str = DEFAULT_FIX) -> Path:
    """Calls ``write`` on a temporary file beside ``path``, then renames it over.

    An interruption (Ctrl-C, a full disk) leaves the old file, or none, and no
    temporary file behind; one left by a killed process is removed here by
    the next writer of the same file.  A file that cannot be written is a
    ``WriteFailed`` naming it and saying ``fix``.  A symbolic link is written
    through: its target gets the new content, and the link stays a link.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file() and not path.is_dir():
        # A rename would replace a device or a pipe with a file: refused, the device or pipe kept.
        raise WriteFailed(
            f"cannot write {path} (it is not a regular file but a device, pipe or socket, which a file would "
            f"replace): {fix}."
        )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    make_folder(path.parent, fix)
    try:
        remove_leftovers(path.parent, f".{path.name}.")
        # os.open with 0o666 honours the umask, as open() would; mkstemp's 0o600 does not.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        # A folder in the file's place says so plainly: open() would say "Is a directory" of the temporary file.
        raise WriteFailed(
            f"cannot write {path} ({_why(err) if not path.is_dir() else 'it is a folder'}): {fix}."
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise WriteFailed(
            f"cannot write {path} ({_why(err) if not path.is_dir() else 'it is a folder'}): {fix}."
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_folder(folder: Path, fix: str = DEFAULT_FIX) -> Path:
    """``folder`` made if missing; a file in its place or a read-only parent is one sentence."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteFailed(f"cannot make the folder {folder} ({_why(err)}): {fix}.") from None
    return Path(folder)


def _why(err: OSError) -> str:
    return err.strerror or type(err).__name__


def write_json_atomic(path: Path, data: object, fix: str = DEFAULT_FIX) -> Path:
    # Non-ASCII text as it was written (a golden file's prose), not as \uXXXX.
    text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    return write_atomic(path, lambda f: f.write(text.encode()), fix)


def read_json_dict(path: Path) -> dict:
    """A JSON object kept beside a file or in a cache; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


# What pplgate's own temporary names end in after their prefix: the writer's pid, then
# write_atomic's 8 hex digits and ".tmp" (a file), or tempfile's 8 characters (a folder).
_LEFTOVER_FILE = re.compile(r"(\d+)\.[0-9a-f]{8}\.tmp")
_LEFTOVER_FOLDER = re.compile(r"(\d+)\.[a-z0-9_]{8}")


def remove_leftovers(folder: Path, prefix: str) -> None:
    """Removes the temporary files ``<prefix><pid>.<hex>.tmp`` and folders ``<prefix><pid>.<random>`` in ``folder``
    whose process is dead.

    Only names of pplgate's own patterns: a killed writer's are known by its
    pid; a live writer's, and anything else that happens to share the
    prefix, are left alone.
    """
    import shutil

    for item in Path(folder).glob(glob_escape(prefix) + "*"):
        rest = item.name[len(prefix) :]
        match = (_LEFTOVER_FOLDER if item.is_dir() and not item.is_symlink() else _LEFTOVER_FILE).fullmatch(rest)
        if match is None:
            continue
        pid = match.group(1)
        if int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()


def user_cache_dir(ignore_env: bool = False) -> Path:
    """``$PPLGATE_CACHE``, else ``$XDG_CACHE_HOME/pplgate``, else ``~/.cache/pplgate``."""
    if os.environ.get("PPLGATE_CACHE") and not ignore_env:
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
        make_folder(Path(path).parent)
        try:
            lock.acquire(timeout=QUIET_WAIT_S)
        except Timeout:
            try:
                pid = holder.read_text().strip() or "unknown"
            except OSError:
                pid = "unknown"
            log.info("waiting for %s, which process %s is making (lock %s)", path, pid, lock.lock_file)
            lock.acquire()
    except OSError as err:
        raise WriteFailed(f"cannot lock {path} to make it ({_why(err)}): {DEFAULT_FIX}.") from None
    try:
        with contextlib.suppress(OSError):
            holder.write_text(str(os.getpid()))
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()


def remove_idle_locks(folder: Path) -> None:
    """Removes the lock files in ``folder`` that no process holds: for a folder copied elsewhere, as fetch's is.

    Each is taken without waiting and unlinked while held, so a lock in use
    stays.  Only for folders one process writes at a time: a process that
    opened a lock file just before it went would hold a lock nobody else sees.
    """
    from filelock import FileLock, Timeout

    for lock_file in Path(folder).glob(".*.lock"):
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            continue
        try:
            for leftover in (lock_file, Path(str(lock_file) + ".pid")):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        finally:
            lock.release()


def glob_escape(text: str) -> str:
    """``text`` as a glob pattern matching itself (glob.escape, for a name rather than a path)."""
    import glob

    return glob.escape(text)
