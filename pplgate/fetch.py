"""``python -m pplgate fetch DIR``: a case's model, data and tokenizer in one folder.

Run on a machine with network; copy DIR to the node; point ``--sources``
(``pplgate_sources``, ``$PPLGATE_SOURCES``) at it there.  The layout is
``pplgate.sourcefolder``'s.  Each folder is assembled beside its place and
renamed into it only when whole, with its SHA256SUMS, so an interrupted
fetch leaves the old folder or none; the model streams into ``DIR/model``
as every download does (resumable ``.part``, renamed when complete).
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from pathlib import Path, PurePosixPath

from google.protobuf.message import DecodeError

from pplgate.data import TOKENIZER_FILES
from pplgate.digest import file_digest, sidecar
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import remove_idle_locks, write_atomic
from pplgate.sourcefolder import MODEL_SUBDIR, SUMS, read_sums, repo_folder_name, verify
from pplgate.sources import BUILTIN_PREFIX, DATASET_CONFIG, SPLIT, describe, download, hub_download, looks_local

DATASET_PATTERNS = ["README.md", f"{DATASET_CONFIG}/{SPLIT}-*"]
TOKENIZER_PATTERNS = list(TOKENIZER_FILES) + ["config.json"]


def fetch(root: Path, model: str, dataset: str, tokenizer: str, cache_dir: Path, progress: bool = True) -> list[str]:
    """Writes the three sources into ``root``; returns a line per item written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        _fetch_repo(dataset, root, cache_dir, "dataset", DATASET_PATTERNS, repo_type="dataset"),
        _fetch_repo(tokenizer, root, cache_dir, "tokenizer", TOKENIZER_PATTERNS, repo_type="model"),
    ]
    if model.startswith(BUILTIN_PREFIX):
        lines.append(f"model {model}: built where it runs, nothing to fetch")
    else:
        lines.append(_fetch_model(model, root / MODEL_SUBDIR, cache_dir, progress))
    return lines


def _fetch_repo(spec: str, root: Path, cache_dir: Path, what: str, patterns: list[str], repo_type: str) -> str:
    """A hub repository's wanted files (or a local folder's) into ``root/<its name>``."""
    if looks_local(spec):
        source = Path(spec).expanduser()
        if not source.is_dir():
            raise PplgateError(f"{what} folder {spec} does not exist: pass --{what} with a hub id or a folder laid out like one.")
        name = source.resolve().name
    else:
        source = _snapshot(spec, patterns, repo_type, what)
        name = repo_folder_name(spec)
    files = {p.relative_to(source).as_posix(): p for pattern in patterns for p in sorted(source.glob(pattern)) if p.is_file()}
    if what == "dataset" and not any(rel.startswith(f"{DATASET_CONFIG}/") for rel in files):
        raise PplgateError(f"dataset {spec} has no {DATASET_CONFIG}/{SPLIT}-* files: pass --dataset with a copy of Salesforce/wikitext.")
    if what == "tokenizer" and not ({"tokenizer.json"} <= files.keys() or {"vocab.json", "merges.txt"} <= files.keys()):
        raise PplgateError(f"tokenizer {spec} has neither tokenizer.json nor vocab.json with merges.txt: pass --tokenizer with GPT-2's tokenizer.")
    target = root / name
    _replace_folder(files, target, cache_dir)
    return f"{what} {spec}: {len(files)} files, {_megabytes(files.values())} into {target}"


def _snapshot(spec: str, patterns: list[str], repo_type: str, what: str) -> Path:
    import huggingface_hub
    import huggingface_hub.utils  # its errors; huggingface_hub.errors lacks them before 0.25

    try:
        return Path(huggingface_hub.snapshot_download(spec, repo_type=repo_type, allow_patterns=patterns))
    except (OSError, huggingface_hub.utils.HfHubHTTPError) as err:
        raise SourceUnavailable(f"{what} {spec} cannot be reached ({type(err).__name__}): run fetch on a machine with network, or pass --{what} with a local copy.",
                                option=f"--{what}") from err


def _replace_folder(files: dict[str, Path], target: Path, cache_dir: Path) -> None:
    """Copies ``files`` (relative name -> source) into a staged folder with its SHA256SUMS, then swaps it in."""
    stage = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    _refuse_foreign_files(target)
    shutil.rmtree(stage, ignore_errors=True)
    try:
        for rel, source in files.items():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, stage / rel)
        _write_sums(stage, list(files), cache_dir)
        verify(stage, cache_dir)  # read back: what a run will check
        if target.exists():
            target.rename(old)
        stage.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old.exists() and not target.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _refuse_foreign_files(target: Path) -> None:
    """A folder is replaced whole only when fetch wrote all of it: files it did not write are never deleted."""
    if not target.exists():
        return
    if not target.is_dir():
        raise PplgateError(f"{target} is a file, where fetch writes a folder: move it away, or fetch into another folder.")
    written = set(read_sums(target / SUMS)) | {SUMS} if (target / SUMS).is_file() else set()
    foreign = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if not p.is_dir() and p.relative_to(target).as_posix() not in written)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PplgateError(f"{target} holds files fetch did not write ({shown}), which replacing the folder would delete: "
                           "move them out, or fetch into another folder.")


def _fetch_model(spec: str, folder: Path, cache_dir: Path, progress: bool) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch_model_files(spec, folder, cache_dir, progress)
    finally:
        remove_idle_locks(folder)  # the folder is copied to nodes: no download's lock goes with it, whole or broken off


def _fetch_model_files(spec: str, folder: Path, cache_dir: Path, progress: bool) -> str:
    path = _fetch_file(spec, folder, progress)
    # A model over protobuf's 2 GB keeps its weights in files beside it: they come from beside its source.
    extra = [_fetch_file(_beside(spec, name), folder, progress) for name in external_files(path)]
    # Every model the folder holds: fetching a second case's model keeps the first's lines.
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and _is_model_file(p.name))
    _write_sums(folder, names, cache_dir)
    for written in [path, *extra]:
        verify(folder, cache_dir, only=written.name)
    weights = f" and its weights in {', '.join(p.name for p in extra)}" if extra else ""
    return f"model {describe(spec)}: {_megabytes([path, *extra])} into {path}{weights}"


def _fetch_file(spec: str, folder: Path, progress: bool) -> Path:
    """One file of a model (a URL, hf://<repo>/<file> or a path) into ``folder``, whole or not at all."""
    if spec.startswith(("https://", "http://")):
        return download(spec, folder, progress=progress)  # resumable, hashed while it streams
    source = hub_download(spec) if spec.startswith("hf://") else Path(spec).expanduser()
    if not source.is_file():
        raise PplgateError(f"model file {spec} does not exist: pass --model with the path of an ONNX file, an https URL or hf://<repo>/<file>.")
    path = folder / source.name  # a hub file keeps its name in the hub's cache too
    with open(source, "rb") as src:
        write_atomic(path, lambda out: shutil.copyfileobj(src, out))
    return path


def _beside(spec: str, name: str) -> str:
    """The source of file ``name`` next to the model ``spec``: the same folder, repository folder or URL folder."""
    if spec.startswith(("https://", "http://", "hf://")):
        parts = urllib.parse.urlsplit(spec)
        return urllib.parse.urlunsplit(parts._replace(path=str(PurePosixPath(parts.path).parent / name), fragment=""))
    return str(Path(spec).expanduser().parent / name)


def external_files(model: Path) -> list[str]:
    """The files an ONNX model keeps tensors in (external data), by their names beside it; the graph only is read."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except (DecodeError, ValueError, RuntimeError) as err:
        # Not a model (an error page saved under the model's name, a truncated copy): not kept in the folder.
        model.unlink()
        sidecar(model).unlink(missing_ok=True)
        raise PplgateError(f"{model.name} is not a readable ONNX model ({type(err).__name__}), so it was removed from {model.parent}: check the --model source and fetch again.") from err
    return sorted({ExternalDataInfo(t).location for t in _tensors(graph) if uses_external_data(t)})


def _tensors(graph):
    """Every initializer and constant of ``graph`` and of its subgraphs (the branches of a merged decoder's If)."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def _is_model_file(name: str) -> bool:
    return not name.startswith(".") and name != SUMS and not name.endswith((".json", ".part"))


def _write_sums(folder: Path, names: list[str], cache_dir: Path) -> None:
    text = "".join(f"{file_digest(folder / name, cache_dir).sha256}  {name}\n" for name in sorted(names))
    write_atomic(folder / SUMS, lambda f: f.write(text.encode()))


def _megabytes(paths) -> str:
    return f"{sum(Path(p).stat().st_size for p in paths) / 1e6:,.1f} MB"
