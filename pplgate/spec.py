"""What a source string names: a local path, an address (https, http, hf://, file://), or a built model.

One place for the question, so that every module answers it alike: a scheme
is case-insensitive (``HTTP://`` is an address, never a local path), and a
local path is one that exists or is spelled as one (``./x``, ``../x``,
``/x``, ``~/x``).
"""

from __future__ import annotations

import re
import urllib.parse
import urllib.request
from pathlib import Path

from pplgate.errors import PplgateError

BUILTIN_PREFIX = "builtin:"
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def scheme(spec: str) -> str | None:
    """The address's scheme in lower case (``https``, ``hf``, ``file``), or None for anything else."""
    match = _SCHEME.match(spec)
    return match.group(1).lower() if match else None


def is_url(spec: str) -> bool:
    """An http or https address."""
    return scheme(spec) in ("http", "https")


def is_hub(spec: str) -> bool:
    return scheme(spec) == "hf"


def is_remote(spec: str) -> bool:
    """Fetched from elsewhere: an http(s) address or a hub file."""
    return is_url(spec) or is_hub(spec)


def is_builtin(spec: str) -> bool:
    return spec.startswith(BUILTIN_PREFIX)


def local_path(text: str | Path) -> Path:
    """``text`` as a path, ``~`` and ``~user`` expanded, ``file://`` read as the path it names; a ``~user`` of no user
    here is one sentence.
    """
    text = str(text)
    if scheme(text) == "file":
        text = urllib.request.url2pathname(urllib.parse.urlsplit(text).path)
    try:
        return Path(text).expanduser()
    except RuntimeError:  # pathlib's "Could not determine home directory"
        user = text[1:].split("/")[0]
        raise PplgateError(
            f"{text} starts with ~{user}, but this machine has no user {user!r} (or no home folder for it): write the "
            f"path in full."
        ) from None


def looks_local(source: str) -> bool:
    """A path is local when it exists or is spelled as a path (./x, ../x, /x, ~/x, file://x)."""
    if scheme(source) == "file":
        return True
    if scheme(source) is not None:
        return False
    return source.startswith((".", "/", "~")) or local_path(source).exists()


def unreadable(spec: str) -> str | None:
    """Why a source spelled as a local file cannot be read, or None (a readable file, an address or a built model)."""
    if is_builtin(spec) or (scheme(spec) not in (None, "file")):
        return None
    path = local_path(spec)
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "a directory, not a file"
    if not path.is_file():
        return "not a regular file but a device, pipe or socket"
    import os

    if not os.access(path, os.R_OK):
        return "not readable by this user"
    return None
