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
from pathlib import Path


from pplgate.digest import CHUNK, file_digest, sha256_of, sidecar, stamp, unchanged
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import locked, make_folder, write_json_atomic
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


def looks_local(source: str) -> bool:
    """A path is local when it exists or is spelled as a path (./x, ../x, /x, ~/x)."""
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~"))


def unreadable_model(spec: str) -> str | None:
    """Why a --model spelled as a local file cannot be read, or None (a readable file, or a URL, hf:// or builtin: source)."""
    if spec.startswith((BUILTIN_PREFIX, "https://", "http://", "hf://")):
        return None
    if spec.startswith("file://"):
        spec = urllib.request.url2pathname(urllib.parse.urlsplit(spec).path)
    path = Path(spec).expanduser()
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a file"
    if not os.access(path, os.R_OK):
        return "not readable by this user"
    return None


def resolve_model(spec: str, model_dir: Path, progress: bool = True, timeout: float = TIMEOUT_S) -> Path:
    """A complete local ONNX file for ``spec``; downloads or builds it if needed."""
    if not spec.strip():
        raise PplgateError("--model is empty: pass the path of an ONNX file, an https URL, hf://<repo>/<file> or builtin:tiny.")
    if spec.startswith("file://"):
        # A local file written as a URL: the path it names.
        spec = urllib.request.url2pathname(urllib.parse.urlsplit(spec).path)
    if spec.startswith(BUILTIN_PREFIX):
        return build_builtin(spec[len(BUILTIN_PREFIX):], Path(model_dir))
    if spec.startswith(("https://", "http://")):
        return download(spec, Path(model_dir), progress=progress, timeout=timeout)
    if spec.startswith("hf://"):
        return hub_download(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceUnavailable(f"model file {spec} does not exist: pass --model with the path of an ONNX file, an https URL or hf://<repo>/<file>.", option="--model")
    if not path.is_file():
        raise PplgateError(f"model path {spec} is a directory, not a file: pass --model with the path of the .onnx file inside it.")
    return path


def build_builtin(name: str, model_dir: Path) -> Path:
    from pplgate.testmodel import PRESETS, write_model

    if name not in PRESETS:
        raise PplgateError(f"there is no built model named {name!r}: use one of {', '.join(BUILTIN_PREFIX + n for n in PRESETS)}.")
    cfg = PRESETS[name]
    key = hashlib.sha256(f"{BUILDER_VERSION}|{dataclasses.asdict(cfg)}".encode()).hexdigest()[:10]
    path = model_dir / f"builtin-{name}-{key}.onnx"
    make_folder(model_dir, MODEL_DIR_FIX)
    meta = sidecar(path)
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
        got_sha = _fetch(url, part, progress, timeout)
        sent = not_a_model(part)
        if sent is not None:
            part.unlink(missing_ok=True)
            raise PplgateError(f"{describe(url)} sent {sent}, not an ONNX model, so nothing was kept: check the address "
                               "(a signed link that expired or a login page answers this way), or pass --model with a local copy.")
        if want_sha is not None and got_sha != want_sha:
            part.unlink(missing_ok=True)
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


def _open(url: str, offset: int, timeout: float):
    address, headers = _credentials(url.split("#")[0])
    if offset:
        headers["Range"] = f"bytes={offset}-"
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


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> str:
    """Fills ``part`` with the whole body and returns its sha256."""
    offset = part.stat().st_size if part.is_file() else 0
    response = _open(url, offset, timeout)
    if response is None or (offset and response.status != 206):
        offset = 0  # no resume: the server sent the whole body, or refused the range
        response = response or _open(url, 0, timeout)
    with response:
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        h = hashlib.sha256()
        if offset:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        done = offset
        try:
            started = time.monotonic()
            with open(part, "ab" if offset else "wb") as out, Progress(expected, final_name(part), "MB", enabled=progress, scale=1e6) as bar:
                bar.update(offset)
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk), f"{(done - offset) / 1e6 / max(time.monotonic() - started, 1e-9):,.1f} MB/s")
        except OSError as err:
            if err.errno in NO_ROOM:
                part.unlink(missing_ok=True)
                raise PplgateError(f"no room left to write {final_name(part)} into {part.parent} ({os.strerror(err.errno)}): free space there, or pass --model-dir with a folder that has {_size(expected)}.") from err
            # A dropped connection or a stalled server: keep the part so the next run resumes it.
            raise PplgateError(f"download of {describe(url)} broke off after {done} bytes ({err}): run again to resume it.") from err
        except http.client.HTTPException as err:
            raise PplgateError(f"download of {describe(url)} broke off after {done} bytes ({type(err).__name__}): run again to resume it.") from err
    if expected is not None and done != expected:
        if done > expected:
            part.unlink(missing_ok=True)
        raise PplgateError(f"download of {describe(url)} broke off after {done} bytes of {expected}: run again to resume it.")
    return h.hexdigest()


def final_name(part: Path) -> str:
    """The name a ``.part`` download takes once whole."""
    return part.name[: -len(".part")]


def _size(n: int | None) -> str:
    return "room for the model" if n is None else f"{n / 1e6:.0f} MB free"


def hub_download(spec: str) -> Path:
    """``hf://<owner>/<repo>/<path in repo>`` through huggingface_hub and its cache."""
    import huggingface_hub
    from huggingface_hub import utils as hf_errors  # where 0.24 (the floor) and 2.x both have them

    parts = spec[len("hf://"):].split("/")
    if len(parts) < 3 or not all(parts):
        raise PplgateError(f"model {spec} is not of the form hf://<owner>/<repo>/<path in repo>: for example {HF_ALTERNATIVE}.")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename))
    except hf_errors.HFValidationError as err:
        raise PplgateError(f"model {spec} names no valid hub repository ({str(err).splitlines()[0]}): write hf://<owner>/<repo>/<path in repo>, for example {HF_ALTERNATIVE}.") from None
    except hf_errors.LocalEntryNotFoundError as err:
        from pplgate.data import offline_advice

        raise SourceUnavailable(f"model {spec} cannot be reached: {offline_advice('--model', 'a local copy')}.", option="--model") from err
    except (hf_errors.RepositoryNotFoundError, hf_errors.EntryNotFoundError, hf_errors.RevisionNotFoundError) as err:
        raise PplgateError(f"model {spec} does not exist on the hub ({type(err).__name__}): check the repository and file name.") from err
    except hf_errors.HfHubHTTPError as err:
        raise SourceUnavailable(f"model {spec} could not be downloaded ({err}): pass --model with a local copy.", option="--model") from err


def describe(spec: str) -> str:
    """The spec as shown in reports: a URL without its user info and its signed query string."""
    if spec.startswith(("https://", "http://")):
        parts = urllib.parse.urlsplit(spec)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()
    return spec


# Query parameters that carry a credential: their values are never shown.
SECRET_PARAMS = re.compile(r"(token|key|secret|signature|sig|password|passwd|credential|auth|q-ak|q-signature|x-amz-[a-z-]*)$", re.IGNORECASE)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")


def _mask_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{k}=***" if SECRET_PARAMS.search(k) else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return parts._replace(netloc=netloc, query=query).geturl()


def mask(text: str) -> str:
    """``text`` with every URL's user info and secret-looking query values replaced by ***."""
    return _URL.sub(lambda m: _mask_url(m.group(0)), text)


def describe_words(words: list[str]) -> list[str]:
    """A command's words with their secrets masked (a suggested command is printed and kept in logs)."""
    return [mask(w) for w in words]
