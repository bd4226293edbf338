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
from pathlib import Path, PurePosixPath

from pplgate.data import TOKENIZER_FILES
from pplgate.digest import file_digest, sidecar
from pplgate.download import address_key, download
from pplgate.errors import PplgateError
from pplgate.fileio import read_json_dict, remove_idle_locks, write_atomic, write_json_atomic
from pplgate.hub import hub_download, snapshot
from pplgate.method import DATASET_CONFIG, SPLIT
from pplgate.modelfiles import check_locations, read_facts
from pplgate.models import beside
from pplgate.redact import bare_address
from pplgate.sourcefolder import MODEL_SUBDIR, SUMS, model_file_name, read_sums, repo_folder_name, verify
from pplgate.spec import is_builtin, is_hub, is_remote, is_url, local_path, looks_local

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
    if is_builtin(model):
        lines.append(f"model {model}: built where it runs, nothing to fetch")
    else:
        lines.append(fetch_model(model, root / MODEL_SUBDIR, cache_dir, progress))
    return lines


def _fetch_repo(spec: str, root: Path, cache_dir: Path, what: str, patterns: list[str], repo_type: str) -> str:
    """A hub repository's wanted files (or a local folder's) into ``root/<its name>``."""
    if looks_local(spec):
        source = local_path(spec)
        if not source.is_dir():
            raise PplgateError(
                f"{what} folder {spec} does not exist: pass --{what} with a hub id or a folder laid out like one."
            )
        name = source.resolve().name
    else:
        source = snapshot(
            spec,
            patterns,
            repo_type,
            what,
            f"run fetch on a machine with network, or pass --{what} with a local copy",
            f"--{what}",
        )
        name = repo_folder_name(spec)
    files = {
        p.relative_to(source).as_posix(): p for pattern in patterns for p in sorted(source.glob(pattern)) if p.is_file()
    }
    if what == "dataset" and not any(rel.startswith(f"{DATASET_CONFIG}/") for rel in files):
        raise PplgateError(
            f"dataset {spec} has no {DATASET_CONFIG}/{SPLIT}-* files: pass --dataset with a copy of "
            f"Salesforce/wikitext."
        )
    if what == "tokenizer" and not ({"tokenizer.json"} <= files.keys() or {"vocab.json", "merges.txt"} <= files.keys()):
        raise PplgateError(
            f"tokenizer {spec} has neither tokenizer.json nor vocab.json with merges.txt: pass --tokenizer with "
            f"GPT-2's tokenizer."
        )
    target = root / name
    _replace_folder(files, target, cache_dir)
    return f"{what} {spec}: {len(files)} files, {_megabytes(files.values())} into {target}"


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
        raise PplgateError(
            f"{target} is a file, where fetch writes a folder: move it away, or fetch into another folder."
        )
    written = set(read_sums(target / SUMS)) | {SUMS} if (target / SUMS).is_file() else set()
    foreign = sorted(
        p.relative_to(target).as_posix()
        for p in target.rglob("*")
        if not p.is_dir() and p.relative_to(target).as_posix() not in written
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PplgateError(
            f"{target} holds files fetch did not write ({shown}), which replacing the folder would delete: "
            "move them out, or fetch into another folder."
        )


def fetch_model(spec: str, folder: Path, cache_dir: Path, progress: bool = True) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _fetch_model_files(spec, folder, cache_dir, progress)
    finally:
        remove_idle_locks(folder)  # the folder is copied to nodes: no download's lock goes with it, whole or broken off


def _fetch_model_files(spec: str, folder: Path, cache_dir: Path, progress: bool) -> str:
    _refuse_another(folder / _file_name(spec), spec)
    path = _fetch_file(spec, folder, progress)
    # A model over protobuf's 2 GB keeps its weights in files beside it: they come from beside its source,
    # and only from there (a location that leaves the folder is refused before any of it is read).
    locations = _locations(path, local_path(spec) if looks_local(spec) else path)
    for loc in locations:
        _refuse_another(folder / loc, beside(spec, loc))
    extra = [_fetch_file(beside(spec, loc), folder / PurePosixPath(loc).parent, progress) for loc in locations]
    # Every model the folder holds: fetching a second case's model keeps the first's lines.
    listed = read_sums(folder / SUMS) if (folder / SUMS).is_file() else {}
    names = {p.name for p in folder.iterdir() if p.is_file() and _is_model_file(p.name)}
    names |= {name for name in listed if (folder / name).is_file()} | set(locations)
    _write_sums(folder, sorted(names), cache_dir)
    for name in [path.name, *locations]:
        verify(folder, cache_dir, only=name)
    weights = f" and its weights in {', '.join(locations)}" if locations else ""
    return f"model {bare_address(spec)}: {_megabytes([path, *extra])} into {path}{weights}"


def _fetch_file(spec: str, folder: Path, progress: bool) -> Path:
    """One file of a model (a URL, hf://<repo>/<file> or a path) into ``folder``, whole or not at all."""
    if is_url(spec):
        return download(spec, folder, progress=progress)  # resumable, hashed while it streams
    source = hub_download(spec) if is_hub(spec) else local_path(spec)
    if not source.is_file():
        raise PplgateError(
            f"model file {spec} does not exist: pass --model with the path of an ONNX file, an https URL or "
            f"hf://<repo>/<file>."
        )
    path = folder / source.name  # a hub file keeps its name in the hub's cache too
    with open(source, "rb") as src:
        write_atomic(path, lambda out: shutil.copyfileobj(src, out))
    # Where it came from, as a download records it: the next fetch tells another case's file of the same name.
    write_json_atomic(sidecar(path), {"made_from": bare_address(spec), "address_sha256": address_key(spec)})
    return path


def _file_name(spec: str) -> str:
    return model_file_name(spec) if is_remote(spec) else local_path(spec).name


def _refuse_another(path: Path, spec: str) -> None:
    """A file of another source under the same name is never replaced: hub exports share their names
    (decoder_model.onnx, model.onnx_data), and a case would then verify and measure another case's model."""
    if not path.exists():
        return
    record = read_json_dict(sidecar(path))
    if record.get("address_sha256") == address_key(spec):
        return  # the same source fetched again: brought up to date
    came = f"from {record['made_from']}" if isinstance(record.get("made_from"), str) else "of unknown origin"
    raise PplgateError(
        f"{path} holds a file {came}, which fetching {bare_address(spec)} would replace (the folder keeps models by "
        f"file name): "
        "fetch this case into another folder, or remove that file if no case needs it."
    )


def _locations(path: Path, source: Path) -> list[str]:
    """The external-data files of the model fetched into ``path``, checked to stay in ``source``'s folder; a model that
    fails is not kept.
    """
    try:
        locations = read_facts(path).locations
    except PplgateError as err:
        # Not a model (an error page saved under the model's name, a truncated copy): not kept in the folder.
        _remove(path)
        raise PplgateError(
            f"{path.name} is not a readable ONNX model ({type(err.__cause__).__name__}), so it was removed from "
            f"{path.parent}: "
            "check the --model source and fetch again."
        ) from err
    try:
        check_locations(source, locations)
    except PplgateError:
        _remove(path)  # a model whose weights cannot be taken with it is not kept either
        raise
    return locations


def _remove(path: Path) -> None:
    path.unlink()
    sidecar(path).unlink(missing_ok=True)


def _is_model_file(name: str) -> bool:
    return not name.startswith(".") and name != SUMS and not name.endswith((".json", ".part"))


def _write_sums(folder: Path, names: list[str], cache_dir: Path) -> None:
    text = "".join(f"{file_digest(folder / name, cache_dir).sha256}  {name}\n" for name in sorted(names))
    write_atomic(folder / SUMS, lambda f: f.write(text.encode()))


def _megabytes(paths) -> str:
    return f"{sum(Path(p).stat().st_size for p in paths) / 1e6:,.1f} MB"
