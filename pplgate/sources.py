"""Where a model comes from: a local path, an https URL, the Hugging Face hub, or the builder.

Every source resolves to a complete local file.  Downloads stream into a
``.part`` file under a lock and are renamed into place only once their size
(and sha256, when the source declares one) is right, so a file in ``model/``
is always whole.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath


from pplgate.digest import CHUNK, file_digest, sha256_of, sidecar, stamp, unchanged
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import locked, make_folder, user_cache_dir, write_json_atomic
from pplgate.modelfiles import check_present, external_locations
from pplgate.progress import Progress

# The vendor's file, linked from its model zoo's README.  The signed query
# string is part of the address: the bucket refuses the path without it.
VENDOR_MODEL_URL = (
    "https://topsmodel-1257133546.cos.ap-shanghai.myqcloud.com/topsmodel-1257133546/topsegc/local/model/GPT/"
    "gpt2_small-huggingface-op13-fp32-seqN-nocache.onnx?q-sign-algorithm=sha1"
    "&q-ak=AKIDYyBAwXzDD1e4GEzZUBgy2iDU5TeaIVUG&q-sign-time=1681371449;2041371449"
    "&q-key-time=1681371449;2041371449&q-header-list=&q-url-param-list="
    "&q-signature=143a3bbaf9de6b76c0b2f11b4d40a71dc5eaad75"
)
HF_ALTERNATIVE = "hf://openai-community/gpt2/onnx/decoder_model.onnx"
BUILTIN_PREFIX = "builtin:"
# The split every case reads, the vendor's, and where the data and the tokenizer come from unless told.
DEFAULT_DATASET = "Salesforce/wikitext"
DATASET_CONFIG = "wikitext-2-raw-v1"
SPLIT = "test"
DEFAULT_TOKENIZER = "openai-community/gpt2"
MODEL_DIR_FIX = "pass --model-dir with a writable folder with room for the model"
# Part of the built models' file names: a builder change must not reuse old files.
BUILDER_VERSION = "3"  # 3: LayerNorm, GELU and scaling spelled as torch exports them
# Seconds without a byte, while connecting or reading, before a download is
# called broken off (and left to resume).
TIMEOUT_S = 60.0
# errno values of a write that found no room: a full disk, or a file-size limit.
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)

log = logging.getLogger("pplgate")


def local_path(text: str) -> Path:
    """``text`` as a path, ``~`` and ``~user`` expanded; a ``~user`` of no user here is one sentence."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # pathlib's "Could not determine home directory"
        user = str(text)[1:].split("/")[0]
        raise PplgateError(f"{text} starts with ~{user}, but this machine has no user {user!r} (or no home folder for it): write the path in full.") from None


def looks_local(source: str) -> bool:
    """A path is local when it exists or is spelled as a path (./x, ../x, /x, ~/x)."""
    return source.startswith((".", "/", "~")) or local_path(source).exists()


def unreadable_model(spec: str) -> str | None:
    """Why a --model spelled as a local file cannot be read, or None (a readable file, or a URL, hf:// or builtin: source)."""
    if spec.startswith((BUILTIN_PREFIX, "https://", "http://", "hf://")):
        return None
    if spec.startswith("file://"):
        spec = urllib.request.url2pathname(urllib.parse.urlsplit(spec).path)
    path = local_path(spec)
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "a directory, not a file"
    if not path.is_file():
        return "not a regular file but a device, pipe or socket"
    if not os.access(path, os.R_OK):
        return "not readable by this user"
    return None


def resolve_model(spec: str, model_dir: Path, progress: bool = True, timeout: float = TIMEOUT_S, cache_dir: Path | None = None) -> Path:
    """A complete local ONNX file for ``spec``, its external-data files beside it; downloads or builds it if needed."""
    if not spec.strip():
        raise PplgateError("--model is empty: pass the path of an ONNX file, an https URL, hf://<repo>/<file> or builtin:tiny.")
    if spec.startswith("file://"):
        # A local file written as a URL: the path it names.
        spec = urllib.request.url2pathname(urllib.parse.urlsplit(spec).path)
    if spec.startswith(BUILTIN_PREFIX):
        return build_builtin(spec[len(BUILTIN_PREFIX):], Path(model_dir))
    cache_dir = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    if spec.startswith(("https://", "http://")):
        path = download(spec, Path(model_dir), progress=progress, timeout=timeout)
        # Weights kept outside the graph come from beside it, as fetch takes them.
        for location in external_locations(path, cache_dir):
            download(beside(spec, location), path.parent / PurePosixPath(location).parent, progress=progress, timeout=timeout)
        return path
    if spec.startswith("hf://"):
        path = hub_download(spec)
        for location in external_locations(path, cache_dir):
            hub_download(beside(spec, location))  # into the same snapshot folder, beside the model
        return path
    path = local_path(spec)
    if not path.exists():
        raise SourceUnavailable(f"model file {spec} does not exist: pass --model with the path of an ONNX file, an https URL or hf://<repo>/<file>.", option="--model")
    if path.is_dir():
        raise PplgateError(f"model path {spec} is a directory, not a file: pass --model with the path of the .onnx file inside it.")
    if not path.is_file():
        raise PplgateError(f"model path {spec} is not a regular file but a device, pipe or socket: pass --model with the path of an .onnx file.")
    check_present(path, external_locations(path, cache_dir), "copy the model's folder whole, its weights files with it")
    return path


def beside(spec: str, name: str) -> str:
    """The source of file ``name`` next to the model ``spec``: the same folder, repository folder or URL folder (its query kept, for signed links)."""
    if spec.startswith(("https://", "http://", "hf://")):
        parts = urllib.parse.urlsplit(spec)
        return urllib.parse.urlunsplit(parts._replace(path=str(PurePosixPath(parts.path).parent / name), fragment=""))
    return str(local_path(spec).parent / name)


def build_builtin(name: str, model_dir: Path) -> Path:
    from pplgate.testmodel import PRESETS, write_model

    if name not in PRESETS:
        raise PplgateError(f"there is no built model named {name!r}: use one of {', '.join(BUILTIN_PREFIX + n for n in PRESETS)}.")
    cfg = PRESETS[name]
    key = hashlib.sha256(f"{BUILDER_VERSION}|{dataclasses.asdict(cfg)}".encode()).hexdigest()[:10]
    path = model_dir / f"builtin-{name}-{key}.onnx"
    make_folder(model_dir, MODEL_DIR_FIX)
    meta = sidecar(path)
    if path.is_file() and _record(meta).get("built") == BUILTIN_PREFIX + name and unchanged(_record(meta), path):
        return path  # built whole before (written, then recorded): read without the lock, so a read-only checkout runs
    with locked(path):
        if path.is_file() and not unchanged(_record(meta), path):
            # Written whole by an earlier run and changed since (truncated, copied over): built again.
            log.info("%s is not the file built for %s (changed since): building it again", path, BUILTIN_PREFIX + name)
        elif path.is_file():
            return path
        log.info("building %s into %s", BUILTIN_PREFIX + name, path)
        write_model(cfg, path)
        write_json_atomic(meta, {"built": BUILTIN_PREFIX + name, **stamp(path, sha256_of(path))}, fix=MODEL_DIR_FIX)
    return path


def _record(meta: Path) -> dict:
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def declared_sha256(url: str) -> str | None:
    """A checksum declared pip-style in the URL's fragment: ``...#sha256=<hex>``."""
    fragment = urllib.parse.urlsplit(url).fragment
    value = urllib.parse.parse_qs(fragment).get("sha256", [None])[0]
    return value.lower() if value else None


def file_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name:
        raise PplgateError(f"URL {url} names no file: pass --model with the address of the .onnx file itself.")
    return name


def download(url: str, model_dir: Path, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """Streams ``url`` into ``model_dir``; resumes a ``.part`` left by a broken run."""
    want_sha = declared_sha256(url)
    final = model_dir / file_name(url)
    meta = sidecar(final)  # where the file came from, and its hash, computed while it streamed
    record = _record(meta)
    if (final.is_file() and record.get("url") == describe(url) and unchanged(record, final)
            and (want_sha is None or record.get("sha256") == want_sha)):
        return final  # downloaded whole before, and untouched since: read without the lock, so a read-only folder serves
    make_folder(model_dir, MODEL_DIR_FIX)
    with locked(final):
        if final.is_file():
            kept = not_a_model(final)
            if kept is not None:
                # Saved by an earlier run before downloads were checked: never a model.
                log.info("%s in %s is %s, not an ONNX model: removed, downloading it again", final.name, model_dir, kept)
                final.unlink()
                meta.unlink(missing_ok=True)
            elif not _still_downloaded(final, meta):
                log.info("%s in %s is not the file downloaded (changed since): downloading it again", final.name, model_dir)
                final.unlink()
            elif _record(meta).get("url", describe(url)) != describe(url):
                # Files are kept by name: another address's file of that name is not this model.
                log.info("%s in %s was downloaded from %s, not %s: downloading it again", final.name, model_dir, _record(meta)["url"], describe(url))
                final.unlink()
            elif want_sha is None or file_digest(final, model_dir / ".hashes").sha256 == want_sha:
                return final
            else:
                final.unlink()  # a file that no longer matches its source is not the model
        part = final.with_name(final.name + ".part")
        log.info("downloading %s into %s", describe(url), model_dir)
        got_sha, sized = _fetch(url, part, progress, timeout)
        part_size = part.stat().st_size
        sent = not_a_model(part)
        if sent is not None:
            _discard(part)
            raise PplgateError(f"{describe(url)} sent {sent}, not an ONNX model, so nothing was kept: check the address "
                               "(a signed link that expired or a login page answers this way), or pass --model with a local copy.")
        if not sized and not _whole_model(part):
            _discard(part)
            raise PplgateError(f"{describe(url)} sent {part_size:,} bytes without announcing its size, and they are not a whole ONNX model, "
                               "so nothing was kept: run again, or pass --model with a local copy.")
        if want_sha is not None and got_sha != want_sha:
            _discard(part)
            raise PplgateError(f"download of {final.name} has sha256 {got_sha}, not the declared {want_sha}: the file was removed; check the URL's #sha256= value and run again.")
        part.replace(final)
        write_json_atomic(meta, {"url": describe(url), **stamp(final, got_sha)})
    return final


def _still_downloaded(final: Path, meta: Path) -> bool:
    """Whether ``final`` holds the bytes downloaded: the same file, or one whose content still hashes as the download did."""
    record = _record(meta)
    if not record or unchanged(record, final):
        return True  # no record: a file put there by hand is taken as it is, and hashed for the report
    return sha256_of(final) == record.get("sha256")


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


def _credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its user info, and the Basic authorization header that carries it instead."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


def _open(url: str, offset: int, timeout: float, validator: str | None = None):
    address, headers = _credentials(url.split("#")[0])
    if offset:
        headers["Range"] = f"bytes={offset}-"
        # The rest of the same file, or the whole of the new one: never the rest of another file.
        if validator:
            headers["If-Range"] = validator
    request = urllib.request.Request(address, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the part is already as long as the file, or longer: start over
            return None
        raise PplgateError(f"download of {describe(url)} failed: the server answered HTTP {err.code} {err.reason}; check the URL (signed links expire) or pass --model with a local copy.") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise SourceUnavailable(f"model URL {describe(url)} cannot be reached ({reason}): pass --model with a local copy of the file.", option="--model") from err


def _validator(headers) -> dict:
    """What identifies the version of the file a server sends: a strong ETag, else Last-Modified (If-Range takes either)."""
    etag = headers.get("ETag")
    return {"etag": etag if etag and not etag.startswith("W/") else None, "last_modified": headers.get("Last-Modified")}


def _resumable(url: str, part: Path) -> tuple[int, str | None]:
    """The offset to resume ``part`` from and the validator it was started under; (0, None) when it cannot be proven the same file."""
    record = _record(sidecar(part))
    validator = record.get("etag") or record.get("last_modified")
    if part.is_file() and record.get("url") == describe(url) and isinstance(validator, str):
        return part.stat().st_size, validator
    return 0, None


def _same_file(response, record: dict) -> bool:
    """Whether a 206 answer is the rest of the file the part was started on (a server may ignore If-Range)."""
    now = _validator(response.headers)
    if record.get("etag") and now["etag"] and now["etag"] != record["etag"]:
        return False
    total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
    return not (record.get("length") is not None and total.isdigit() and int(total) != record["length"])


def _content_length(url: str, response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None:
        return None
    if not length.strip().isdigit():
        raise PplgateError(f"download of {describe(url)} failed: the server sent Content-Length {length.strip()[:40]!r}, which is not a size; "
                           "check the address, or pass --model with a local copy.")
    return offset + int(length)


def _whole_model(path: Path) -> bool:
    """Whether ``path`` parses as an ONNX graph: the only proof a body sent without Content-Length ended where it should."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError):
        return False
    # The graph is one length-prefixed field, so a cut inside it fails to parse; a cut after it loses
    # the opset imports, which exporters write last and every model has.
    return model.HasField("graph") and len(model.opset_import) > 0


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> tuple[str, bool]:
    """Fills ``part`` with the whole body; returns its sha256, and whether the server announced its size (so that whole is proven)."""
    offset, validator = _resumable(url, part)
    response = _open(url, offset, timeout, validator) if offset else None
    if response is not None and response.status != 206:
        offset = 0  # the whole body: the file changed (If-Range), or the server takes no ranges
    elif response is not None and not _same_file(response, _record(sidecar(part))):
        response.close()  # the rest of another version, from a server that ignores If-Range: start over
        response = None
    if response is None:
        offset = 0
        response = _open(url, 0, timeout)
    with response:
        expected = _content_length(url, response, offset)
        if not offset:
            # How a later run proves a .part is this file's beginning before resuming it.
            write_json_atomic(sidecar(part), {"url": describe(url), "length": expected, **_validator(response.headers)})
        h = hashlib.sha256()
        if offset:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        done = offset
        try:
            started = time.monotonic()
            window = Window(time.monotonic(), done)
            with open(part, "ab" if offset else "wb") as out, Progress(expected, final_name(part), "MB", enabled=progress, scale=1e6) as bar:
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
                raise PplgateError(f"no room left to write {final_name(part)} into {part.parent} ({os.strerror(err.errno)}): free space there, or pass --model-dir with a folder that has {_size(expected)}.") from err
            # A dropped connection or a stalled server: keep the part so the next run resumes it.
            raise PplgateError(f"download of {describe(url)} broke off after {done:,} bytes{_of(expected)} ({err}): run again to resume it.") from err
        except http.client.HTTPException as err:
            raise PplgateError(f"download of {describe(url)} broke off after {done:,} bytes{_of(expected)} ({type(err).__name__}): run again to resume it.") from err
    if expected is not None and done != expected:
        if done > expected:
            _discard(part)
            raise PplgateError(f"download of {describe(url)} sent {done:,} bytes, more than the {expected:,} it announced, so nothing was kept: run again.")
        raise PplgateError(f"download of {describe(url)} broke off after {done:,} bytes of {expected:,}: run again to resume it.")
    sidecar(part).unlink(missing_ok=True)
    return h.hexdigest(), expected is not None


def _of(expected: int | None) -> str:
    return f" of {expected:,}" if expected is not None else ""


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    sidecar(part).unlink(missing_ok=True)


# A download must bring at least this many bytes a second, averaged over each
# timeout's length: a server that trickles (a byte a second) never trips the
# per-read timeout, and would hold a nightly run for days.
MIN_BYTES_PER_S = 1024


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
            raise PplgateError(f"download of {describe(url)} made no real progress: {done - self.at:,} bytes in the last {now - self.since:.1f} s "
                               f"({rate:,.0f} bytes/s, under {MIN_BYTES_PER_S:,}); the {done:,} bytes so far are kept: run again to resume, or pass --model with a local copy.")
        return Window(now, done)


def final_name(part: Path) -> str:
    """The name a ``.part`` download takes once whole."""
    return part.name[: -len(".part")]


def _size(n: int | None) -> str:
    return "room for the model" if n is None else f"{n / 1e6:.0f} MB free"


def hub_address(spec: str) -> tuple[str, str, dict[str, str]]:
    """``hf://<owner>/<repo>/<path in repo>[?revision=R&token=T]`` -> (repo, path, hf_hub_download's keywords)."""
    parts = urllib.parse.urlsplit(spec)
    names = [parts.netloc, *parts.path.split("/")[1:]]
    if len(names) < 3 or not all(names):
        raise PplgateError(f"model {describe(spec)} is not of the form hf://<owner>/<repo>/<path in repo>: for example {HF_ALTERNATIVE}.")
    params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - {"revision", "token"})
    if unknown or parts.fragment:
        raise PplgateError(f"model {describe(spec)} has {'parameter ' + repr(unknown[0]) if unknown else 'a fragment'}, which an hf:// address does not take: "
                           "only ?revision=<commit, branch or tag> and ?token=<hub token> (or $HF_TOKEN) are read.")
    return "/".join(names[:2]), "/".join(names[2:]), params


def hub_download(spec: str) -> Path:
    """``hf://<owner>/<repo>/<path in repo>`` through huggingface_hub and its cache."""
    import huggingface_hub
    from huggingface_hub import utils as hf_errors  # where 0.24 (the floor) and 2.x both have them

    repo, filename, params = hub_address(spec)
    shown = describe(spec)
    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename, **params))
    except hf_errors.HFValidationError as err:
        raise PplgateError(f"model {shown} names no valid hub repository ({mask(str(err).splitlines()[0])}): write hf://<owner>/<repo>/<path in repo>, for example {HF_ALTERNATIVE}.") from None
    except hf_errors.LocalEntryNotFoundError as err:
        from pplgate.data import offline_advice

        raise SourceUnavailable(f"model {shown} cannot be reached: {offline_advice('--model', 'a local copy')}.", option="--model") from err
    except (hf_errors.RepositoryNotFoundError, hf_errors.EntryNotFoundError, hf_errors.RevisionNotFoundError) as err:
        raise PplgateError(f"model {shown} does not exist on the hub ({type(err).__name__}): check the repository and file name.") from err
    except hf_errors.HfHubHTTPError as err:
        raise SourceUnavailable(f"model {shown} could not be downloaded ({mask(str(err))}): pass --model with a local copy.", option="--model") from err


def describe(spec: str) -> str:
    """The spec as shown in reports: an address (https, http, hf, any scheme) without its user info, query string and fragment."""
    if "://" in spec:
        parts = urllib.parse.urlsplit(spec)
        if parts.query or parts.fragment or "@" in parts.netloc:
            return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()
    return spec


# Query parameters (and fragment keys) known to carry nothing secret: their
# values are shown.  Every other value, and every bare query or fragment, is
# masked: a signed link's names vary by vendor (q-ak, X-Amz-Signature, sig,
# code, jwt, Authorization, ...) and a new one must not leak.
HARMLESS_PARAMS = frozenset({"sha256", "revision", "download", "raw", "ref", "format", "version"})
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")


def _mask_params(text: str) -> str:
    """``a=1&token=x`` -> ``a=***&token=***`` unless a name is harmless (compared decoded: ``%73ha256`` is sha256)."""
    def one(item: str) -> str:
        name, sep, value = item.partition("=")
        if not item:
            return item
        if not sep:
            return "***"
        shown = urllib.parse.unquote_plus(name).strip().lower() in HARMLESS_PARAMS
        return item if shown or not value else f"{name}=***"

    return "".join(one(piece) if i % 2 == 0 else piece for i, piece in enumerate(re.split(r"([&;])", text)))


def _mask_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query=_mask_params(parts.query), fragment=_mask_params(parts.fragment)).geturl()


def mask(text: str) -> str:
    """``text`` with every address's user info, query values and fragment replaced by *** (harmless parameters kept)."""
    return _URL.sub(lambda m: _mask_url(m.group(0)), text)


# Control characters (C0, DEL, C1): a file name may hold a newline or a terminal escape,
# which printed raw could forge a line ("... passed") or rewrite the screen.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]|\n(?!$)")


def shown(text: str) -> str:
    """``text`` as printed and kept in reports: addresses masked, control characters written as escapes (a newline as \\n)."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], mask(text))


def describe_words(words: list[str]) -> list[str]:
    """A command's words with their secrets masked (a suggested command is printed and kept in logs)."""
    return [mask(w) for w in words]
