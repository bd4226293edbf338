"""Writing files so that no reader ever sees half of one."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO


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
