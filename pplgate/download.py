"""Downloads over http(s): streamed, resumed only when provably the same file, kept only when whole.

A file streams into ``<name>.part`` under the file's lock and is renamed into
place only once it is whole: its size as announced, its sha256 as declared
(``#sha256=<hex>``, pip's spelling), and its bytes parsing as an ONNX model.
A broken download is resumed by the next run only when it is provably the
same file: the first answer's strong ETag (else Last-Modified) is kept beside
the part (``<name>.part.json``) and the rest asked for under ``If-Range``; an
answer that is not the rest of that version is dropped and the file fetched
from the start.  A server that trickles is cut off: every timeout's length
must bring ``MIN_BYTES_PER_S``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import hashlib
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pplgate.artifacts import Artifact
from pplgate.digest import CHUNK, sidecar
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import make_folder, read_json_dict, write_json_atomic
from pplgate.progress import Progress
from pplgate.redact import bare_address, split_userinfo

# Seconds without a byte, while connecting or reading, before a download is
# called broken off (and left to resume).
TIMEOUT_S = 60.0
# errno values of a write that found no room: a full disk, or a file-size limit.
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# A download must bring at least this many bytes a second, averaged over each
# timeout's length: a server that trickles (a byte a second) never trips the
# per-read timeout, and would hold a nightly run for days.
MIN_BYTES_PER_S = 1024
MODEL_DIR_FIX = "pass --model-dir with a writable folder with room for the model"
# Bumped when what a kept download is checked for changes: older downloads are fetched again.
DOWNLOADER_VERSION = 2


def declared_sha256(url: str) -> str | None:
    """A checksum declared pip-style in the URL's fragment: ``...#sha256=<hex>``."""
    fragment = urllib.parse.urlsplit(url).fragment
    value = urllib.parse.parse_qs(fragment).get("sha256", [None])[0]
    return value.lower() if value else None


# What pplgate keeps beside a download (its part, its sidecar, the locks' files) and a sources folder's list:
# a URL naming one of these would be saved over it.
OWN_SUFFIXES = (".part", ".json", ".lock", ".pid")
OWN_NAMES = ("SHA256SUMS",)


def file_name(url: str) -> str:
    """The name a URL's file is kept under: its path's last segment, decoded, refused where it is no plain file name
    or is one of pplgate's own."""
    last = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    name = urllib.parse.unquote(last)
    if not name:
        raise PplgateError(
            f"URL {bare_address(url)} names no file: pass --model with the address of the .onnx file itself."
        )
    why = None
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        why = "it is no plain file name"
    elif name.startswith("."):
        why = "pplgate keeps its own hidden files beside downloads"
    elif name.lower().endswith(OWN_SUFFIXES) or name in OWN_NAMES:
        why = "pplgate's own files beside a download end in .part, .json, .lock or .pid, and SHA256SUMS lists a folder"
    if why is not None:
        raise PplgateError(
            f"URL {bare_address(url)} names the file {name!r}, which pplgate will not save under that name ({why}): "
            "download it yourself under another name and pass that path to --model."
        )
    return name


def address_key(url: str) -> str:
    """What tells one address from another, query included (``?v=2`` is another file), fragment not."""
    return hashlib.sha256(url.split("#")[0].encode()).hexdigest()


def download(url: str, folder: Path, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """``url`` into ``folder`` under its own name; a ``.part`` left by a broken run is resumed when it is the same
    file.
    """
    final = Path(folder) / file_name(url)
    want_sha = declared_sha256(url)
    artifact = Artifact(
        final,
        bare_address(url),
        {"address_sha256": address_key(url), "declared_sha256": want_sha, "downloader": DOWNLOADER_VERSION},
        verb="downloading",
        fix=MODEL_DIR_FIX,
    )
    if artifact.current():
        return final  # downloaded whole before, and untouched since
    make_folder(Path(folder), MODEL_DIR_FIX)

    def make() -> str:
        part = final.with_name(final.name + ".part")
        got_sha, sized = _fetch(url, part, progress, timeout)
        sent = not_a_model(part)
        if sent is not None:
            _discard(part)
            raise PplgateError(
                f"{bare_address(url)} sent {sent}, not an ONNX model, so nothing was kept: check the address "
                "(a signed link that expired or a login page answers this way), or pass --model with a local copy."
            )
        if not whole_model(part):
            size = part.stat().st_size
            _discard(part)
            announced = "" if sized else " without announcing its size"
            raise PplgateError(
                f"{bare_address(url)} sent {size:,} bytes{announced}, and they are not a whole ONNX model, "
                "so nothing was kept: run again, or pass --model with a local copy."
            )
        if want_sha is not None and got_sha != want_sha:
            _discard(part)
            raise PplgateError(
                f"download of {final.name} has sha256 {got_sha}, not the declared {want_sha}: the file was removed; "
                "check the URL's #sha256= value and run again."
            )
        part.replace(final)
        return got_sha

    return artifact.ensure(make)


def not_a_model(path: Path) -> str | None:
    """What a file plainly is when it is no ONNX model (an HTML page, JSON, text), else None.

    An ONNX file is protobuf: binary from its first bytes.  A server's error
    or login page saved under the model's name is text.
    """
    with open(path, "rb") as f:
        head = f.read(512)
    start = head.lstrip()[:64].lower()
    if start.startswith((b"<!doctype html", b"<html")) or b"<html" in head.lower():
        return "an HTML page"
    if start.startswith((b"<?xml", b"<")):
        return "an XML document"
    if start.startswith((b"{", b"[")):
        return "JSON"
    if not head:
        return "nothing (an empty file)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text" if all(c.isprintable() or c.isspace() for c in text) else None


def whole_model(path: Path) -> bool:
    """Whether ``path`` parses as an ONNX graph: proof that the body ended where it should.

    The graph is one length-prefixed field, so a cut inside it fails to parse;
    a cut after it loses the opset imports, which exporters write last and
    every model has.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError):
        return False
    return model.HasField("graph") and len(model.opset_import) > 0


def _credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its user info, and the Basic authorization header that carries it instead."""
    address, userinfo = split_userinfo(url)
    if userinfo is None:
        return url, {}
    if "@" not in urllib.parse.urlsplit(url).netloc:
        raise PplgateError(
            f"the address {bare_address(url)} holds a password with an unencoded '/' (read as its path): "
            "write it as %2F in the URL."
        )
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
    return address, {"Authorization": f"Basic {token}"}


class _KeepCredentialsHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never carries the Authorization of one host to another: a redirect that changes the
    scheme, the host or the port loses it (as curl and requests do)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            before, after = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(new.full_url)
            if (before.scheme, before.hostname, before.port) != (after.scheme, after.hostname, after.port):
                new.remove_header("Authorization")
        return new


class _HeadersBy:
    """A connection whose answer's status line and headers must all arrive within ``timeout`` seconds.

    The socket's timeout bounds each read, and a server that trickles its
    headers a byte at a time never trips it: past the deadline the socket is
    shut, and the read in progress ends.
    """

    header_timeout: float = TIMEOUT_S

    def getresponse(self):
        sock = self.sock  # type: ignore[attr-defined]
        fired = threading.Event()

        def shut() -> None:
            fired.set()
            _shut(sock)

        timer = threading.Timer(self.header_timeout, shut)
        timer.daemon = True
        timer.start()
        try:
            response = super().getresponse()  # type: ignore[misc]
        except (OSError, http.client.HTTPException) as err:
            if fired.is_set():
                raise HeadersTooSlow(f"no complete answer within {self.header_timeout:g} s") from err
            raise
        finally:
            timer.cancel()
        if fired.is_set():
            # The shut socket reads as the end of the headers: what was parsed is no whole answer.
            response.close()
            raise HeadersTooSlow(f"no complete answer within {self.header_timeout:g} s")
        return response


def _shut(sock) -> None:
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: wakes a read blocked in TLS too


class HeadersTooSlow(ConnectionError):
    pass


class _HTTPConnection(_HeadersBy, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_HeadersBy, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, timeout: float):
        super().__init__()
        self.header_timeout = timeout

    def http_open(self, req):
        connection = type("Connection", (_HTTPConnection,), {"header_timeout": self.header_timeout})
        return self.do_open(connection, req)  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, timeout: float):
        super().__init__()
        self.header_timeout = timeout

    def https_open(self, req):
        connection = type("Connection", (_HTTPSConnection,), {"header_timeout": self.header_timeout})
        kwargs = {"context": self._context}  # type: ignore[attr-defined]
        if hasattr(self, "_check_hostname"):  # Python before 3.12
            kwargs["check_hostname"] = self._check_hostname
        return self.do_open(connection, req, **kwargs)  # type: ignore[arg-type]


def _open(url: str, offset: int, timeout: float, validator: str | None = None):
    address, headers = _credentials(url.split("#")[0])
    if offset:
        headers["Range"] = f"bytes={offset}-"
        # The rest of the same file, or the whole of the new one: never the rest of another file.
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(address, headers=headers)
    opener = urllib.request.build_opener(_KeepCredentialsHome(), _HTTPHandler(timeout), _HTTPSHandler(timeout))
    try:
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the part is already as long as the file, or longer: start over
            return None
        raise PplgateError(
            f"download of {bare_address(url)} failed: the server answered HTTP {err.code} {err.reason}; "
            "check the URL (signed links expire) or pass --model with a local copy."
        ) from err
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise SourceUnavailable(
            f"model URL {bare_address(url)} cannot be reached ({reason}): pass --model with a local copy of the file.",
            option="--model",
        ) from err


def _validator(headers) -> dict:
    """What identifies the version of the file a server sends: a strong ETag, else Last-Modified (If-Range takes
    either).
    """
    etag = headers.get("ETag")
    return {"etag": etag if etag and not etag.startswith("W/") else None, "last_modified": headers.get("Last-Modified")}


def _resumable(url: str, part: Path) -> tuple[int, str | None]:
    """The offset to resume ``part`` from and the validator it was started under; (0, None) when it cannot be proven
    the same file.
    """
    record = read_json_dict(sidecar(part))
    validator = record.get("etag") or record.get("last_modified")
    if part.is_file() and record.get("address_sha256") == address_key(url) and isinstance(validator, str):
        return part.stat().st_size, validator
    return 0, None


def _same_file(response, record: dict, offset: int) -> bool:
    """Whether a 206 answer is the rest of the file the part was started on (a server may ignore If-Range)."""
    now = _validator(response.headers)
    for name in ("etag", "last_modified"):
        if record.get(name) and now[name] != record[name]:
            return False
    content_range = (response.headers.get("Content-Range") or "").strip()
    unit, _, spec = content_range.partition(" ")
    span, _, total = spec.partition("/")
    start = span.partition("-")[0]
    if unit != "bytes" or not start.isdigit() or int(start) != offset:
        return False  # the rest must start where the part ends
    return not (record.get("length") is not None and total.isdigit() and int(total) != record["length"])


def _content_length(url: str, response, offset: int) -> int | None:
    values = response.headers.get_all("Content-Length") or []
    if not values:
        return None
    if len(values) > 1:
        raise PplgateError(
            f"download of {bare_address(url)} failed: the server sent {len(values)} Content-Length headers, so its "
            f"size is unknown; "
            "check the address, or pass --model with a local copy."
        )
    length = values[0]
    if not length.strip().isdigit():
        raise PplgateError(
            f"download of {bare_address(url)} failed: the server sent Content-Length {length.strip()[:40]!r}, which "
            f"is not a size; "
            "check the address, or pass --model with a local copy."
        )
    return offset + int(length)


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> tuple[str, bool]:
    """Fills ``part`` with the whole body; returns its sha256, and whether the server announced its size."""
    offset, validator = _resumable(url, part)
    response = _open(url, offset, timeout, validator) if offset else None
    if response is not None and response.status != 206:
        offset = 0  # the whole body: the file changed (If-Range), or the server takes no ranges
    elif response is not None and not _same_file(response, read_json_dict(sidecar(part)), offset):
        response.close()  # the rest of another version, or from elsewhere than the part's end: start over
        response = None
    if response is None:
        offset = 0
        response = _open(url, 0, timeout)
    with response:
        expected = _content_length(url, response, offset)
        if not offset:
            # How a later run proves a .part is this file's beginning before resuming it.
            write_json_atomic(
                sidecar(part), {"address_sha256": address_key(url), "length": expected, **_validator(response.headers)}
            )
        h = hashlib.sha256()
        if offset:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        done = offset
        name = part.name[: -len(".part")]
        try:
            started = time.monotonic()
            window = Window(time.monotonic(), done)
            with open(part, "ab" if offset else "wb") as out, Progress(
                expected, name, "MB", enabled=progress, scale=1e6
            ) as bar:
                bar.update(offset)
                # read1: what has arrived, so a trickle is measured as it comes rather than hidden in a long read.
                while chunk := response.read1(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk), f"{(done - offset) / 1e6 / max(time.monotonic() - started, 1e-9):,.1f} MB/s")
                    window = window.check(time.monotonic(), done, timeout, url)
        except OSError as err:
            if err.errno in NO_ROOM:
                _discard(part)
                room = "room for the model" if expected is None else f"{expected / 1e6:.0f} MB free"
                raise PplgateError(
                    f"no room left to write {name} into {part.parent} ({os.strerror(err.errno)}): free space there, "
                    f"or pass --model-dir with a folder that has {room}."
                ) from err
            # A dropped connection or a stalled server: keep the part so the next run resumes it.
            raise PplgateError(
                f"download of {bare_address(url)} broke off after {done:,} bytes{_of(expected)} ({err}): run again to "
                f"resume it."
            ) from err
        except http.client.HTTPException as err:
            raise PplgateError(
                f"download of {bare_address(url)} broke off after {done:,} bytes{_of(expected)} "
                f"({type(err).__name__}): "
                "run again to resume it."
            ) from err
    if expected is not None and done != expected:
        if done > expected:
            _discard(part)
            raise PplgateError(
                f"download of {bare_address(url)} sent {done:,} bytes, more than the {expected:,} it announced, so "
                f"nothing was kept: run again."
            )
        raise PplgateError(
            f"download of {bare_address(url)} broke off after {done:,} bytes of {expected:,}: run again to resume it."
        )
    sidecar(part).unlink(missing_ok=True)
    return h.hexdigest(), expected is not None


def _of(expected: int | None) -> str:
    return f" of {expected:,}" if expected is not None else ""


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    sidecar(part).unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class Window:
    """Bytes counted since ``since``: a download's progress over the last timeout's length."""

    since: float
    at: int  # bytes done when the window opened

    def check(self, now: float, done: int, length_s: float, url: str) -> Window:
        if now - self.since < length_s:
            return self
        rate = (done - self.at) / (now - self.since)
        if rate < MIN_BYTES_PER_S:
            raise PplgateError(
                f"download of {bare_address(url)} made no real progress: {done - self.at:,} bytes in the last "
                f"{now - self.since:.1f} s "
                f"({rate:,.0f} bytes/s, under {MIN_BYTES_PER_S:,}); the {done:,} bytes so far are kept: "
                "run again to resume, or pass --model with a local copy."
            )
        return Window(now, done)
