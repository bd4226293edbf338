"""Where a model comes from: a local path, an https URL, the Hugging Face hub, or the builder.

Every source resolves to a complete local file with its external-data files
beside it: a download lands whole or not at all (``pplgate.download``), a
hub file comes through huggingface_hub's cache (``pplgate.hub``), a built
model is made once per builder version (``pplgate.testmodel``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.parse
from pathlib import Path, PurePosixPath

from pplgate.artifacts import Artifact
from pplgate.digest import sha256_of
from pplgate.download import MODEL_DIR_FIX, TIMEOUT_S, download
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import make_folder, user_cache_dir
from pplgate.hub import hub_download
from pplgate.modelfiles import check_present, external_locations
from pplgate.spec import BUILTIN_PREFIX, is_builtin, is_hub, is_remote, is_url, local_path

# Part of the built models' file names: a builder change must not reuse old files.
BUILDER_VERSION = "3"  # 3: LayerNorm, GELU and scaling spelled as torch exports them


def resolve_model(
    spec: str, model_dir: Path, progress: bool = True, timeout: float = TIMEOUT_S, cache_dir: Path | None = None
) -> Path:
    """A complete local ONNX file for ``spec``, its external-data files beside it; downloads or builds it if needed."""
    if not spec.strip():
        raise PplgateError(
            "--model is empty: pass the path of an ONNX file, an https URL, hf://<repo>/<file> or builtin:tiny."
        )
    if is_builtin(spec):
        return build_builtin(spec[len(BUILTIN_PREFIX) :], Path(model_dir))
    cache_dir = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    if is_url(spec):
        path = download(spec, Path(model_dir), progress=progress, timeout=timeout)
        # Weights kept outside the graph come from beside it, as fetch takes them.
        for location in external_locations(path, cache_dir):
            download(
                beside(spec, location), path.parent / PurePosixPath(location).parent, progress=progress, timeout=timeout
            )
        return path
    if is_hub(spec):
        path = hub_download(spec)
        for location in external_locations(path, cache_dir):
            hub_download(beside(spec, location))  # into the same snapshot folder, beside the model
        return path
    path = local_path(spec)
    if not path.exists():
        raise SourceUnavailable(
            f"model file {spec} does not exist: pass --model with the path of an ONNX file, an https URL or "
            f"hf://<repo>/<file>.",
            option="--model",
        )
    if path.is_dir():
        raise PplgateError(
            f"model path {spec} is a directory, not a file: pass --model with the path of the .onnx file inside it."
        )
    if not path.is_file():
        raise PplgateError(
            f"model path {spec} is not a regular file but a device, pipe or socket: pass --model with the path of an "
            f".onnx file."
        )
    check_present(path, external_locations(path, cache_dir), "copy the model's folder whole, its weights files with it")
    return path


def beside(spec: str, name: str) -> str:
    """The source of file ``name`` next to the model ``spec``: the same folder, repository folder or URL folder (its
    query kept, for signed links).
    """
    if is_remote(spec):
        parts = urllib.parse.urlsplit(spec)
        return urllib.parse.urlunsplit(parts._replace(path=str(PurePosixPath(parts.path).parent / name), fragment=""))
    return str(local_path(spec).parent / name)


def build_builtin(name: str, model_dir: Path) -> Path:
    from pplgate.testmodel import PRESETS, write_model

    if name not in PRESETS:
        raise PplgateError(
            f"there is no built model named {name!r}: use one of {', '.join(BUILTIN_PREFIX + n for n in PRESETS)}."
        )
    cfg = PRESETS[name]
    key = hashlib.sha256(f"{BUILDER_VERSION}|{dataclasses.asdict(cfg)}".encode()).hexdigest()[:10]
    path = Path(model_dir) / f"builtin-{name}-{key}.onnx"
    artifact = Artifact(path, BUILTIN_PREFIX + name, verb="building", fix=MODEL_DIR_FIX)
    if artifact.current():
        return path  # read without the lock, so a read-only checkout runs
    make_folder(Path(model_dir), MODEL_DIR_FIX)

    def make() -> str:
        write_model(cfg, path)
        return sha256_of(path)

    return artifact.ensure(make)
