"""One folder that holds a case's model, data and tokenizer, for nodes without network.

``python -m pplgate fetch DIR`` writes it on a connected machine;
``--sources DIR`` (``pplgate_sources`` in pytest.ini, ``$PPLGATE_SOURCES``)
makes every run read from it.  Its layout is the one ``../shared/data`` has:

    DIR/wikitext/   the dataset repository as the hub lays it out (README.md,
                    wikitext-2-raw-v1/test-*.parquet), and its SHA256SUMS
    DIR/gpt2/       the tokenizer's files, and their SHA256SUMS
    DIR/model/      ONNX files under their own names, and their SHA256SUMS

A remote source is found there under its last name: the hub id
``Salesforce/wikitext`` in ``DIR/wikitext``, ``openai-community/gpt2`` in
``DIR/gpt2``, a model URL or ``hf://`` file in ``DIR/model/<file name>``.
Local paths and built models are used as they are.  Every file a run reads
from the folder is checked against its SHA256SUMS first: a copy that went
wrong on its way to the node is named, never evaluated.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pplgate.digest import file_digest
from pplgate.download import file_name
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import default_model_dir, user_cache_dir
from pplgate.method import DATASET_CONFIG, DEFAULT_DATASET, DEFAULT_TOKENIZER, SPLIT, VENDOR_MODEL_URL
from pplgate.modelfiles import external_locations, leaves_folder
from pplgate.redact import bare_address
from pplgate.spec import is_hub, is_remote, looks_local

SUMS = "SHA256SUMS"
# A repository's card: documentation, which mirrors may leave out of their SHA256SUMS (see _check_card).
CARD = "README.md"
MODEL_SUBDIR = "model"


def model_file_name(spec: str) -> str:
    """The file a remote model is kept under in ``DIR/model``: its URL's or hub path's last name."""
    if is_hub(spec):
        return PurePosixPath(urllib.parse.urlsplit(spec).path).name
    return file_name(spec)


def repo_folder_name(spec: str) -> str:
    """The folder a hub repository is kept in: ``owner/name`` -> ``name``."""
    return spec.rstrip("/").split("/")[-1]


def read_sums(sums: Path) -> dict[str, str]:
    """``SHA256SUMS`` (sha256sum's format) -> {relative path: sha256}; a name that leaves the folder is refused."""
    refetch = f"write the folder again with 'python -m pplgate fetch {sums.parent.parent}'"
    try:
        text = sums.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise PplgateError(f"{sums} is not UTF-8 text (byte {err.start}): {refetch}.") from None
    listed: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        name = name.strip()
        if not sep or len(digest) != 64 or not name:
            raise PplgateError(f"{sums} line {number} is not '<sha256>  <file>': {refetch}.")
        name = name[1:] if name.startswith("*") else name
        if leaves_folder(name):
            raise PplgateError(
                f"{sums} line {number} names {name!r}, which is outside {sums.parent}: nothing was read; {refetch}."
            )
        key = PurePosixPath(name).as_posix()
        if key in listed:
            raise PplgateError(
                f"{sums} lists {key} twice (lines {lines[key]} and {number}), so either hash could be "
                f"the one checked: {refetch}."
            )
        listed[key] = digest.lower()
        lines[key] = number
    return listed


def verify(folder: Path, cache_dir: Path, only: str | None = None) -> None:
    """Checks ``folder`` against its ``SHA256SUMS``: every file it holds listed and matching (or just ``only``); one
    sentence for the first that is not.
    """
    sums = folder / SUMS
    refetch = f"write it again with 'python -m pplgate fetch {folder.parent}' on a machine with network"
    if not sums.is_file():
        raise PplgateError(f"{folder} has no {SUMS}, so its files cannot be checked: {refetch}.")
    listed = read_sums(sums)
    if not listed:
        raise PplgateError(f"{sums} lists no file, so nothing in {folder} can be checked: {refetch}.")
    if only is not None:
        if only not in listed:
            raise PplgateError(
                f"{folder / only} is not listed in {sums}: {refetch}, or add its line (sha256sum {only} >> {SUMS})."
            )
        listed = {only: listed[only]}
    else:
        _refuse_unlisted(folder, listed, refetch)
    inside = folder.resolve()
    for name, want in listed.items():
        path = folder / name
        if not path.is_file():
            raise PplgateError(f"{path}, listed in {sums}, is missing: {refetch}.")
        if inside not in path.resolve().parents:
            raise PplgateError(
                f"{path}, listed in {sums}, is a link to {path.resolve()}, outside {folder}: nothing was read; "
                f"{refetch}."
            )
        got = file_digest(path, cache_dir).sha256
        if got != want:
            raise PplgateError(
                f"{path} does not match its checksum in {sums} (sha256 {got}, listed {want}): the copy is damaged or "
                f"was changed; {refetch}."
            )


def _refuse_unlisted(folder: Path, listed: dict[str, str], refetch: str) -> None:
    """A file the folder holds but SHA256SUMS does not list would be read unchecked (an extra parquet shard is more
    rows).
    """
    held = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
    unlisted = [name for name in held if name not in listed and name not in (SUMS, CARD)]
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise PplgateError(
            f"{folder} holds {shown}, which {folder / SUMS} does not list, so a run would read it unchecked: "
            f"remove it, or {refetch}."
        )
    if CARD in held:
        _check_card(folder / CARD, listed, refetch)


def _check_card(card: Path, listed: dict[str, str], refetch: str) -> None:
    """A dataset card, listed or not, may make ``datasets`` read only files the folder lists, each once.

    Hub mirrors often list their data files but not README.md (../shared/data
    does).  datasets reads the card's ``configs`` to find the data files, so
    the card is parsed as datasets parses it (huggingface_hub's DatasetCard: a
    header after a byte-order mark or a blank line is a header all the same),
    and what its patterns name for the split is checked: inside the folder,
    listed, and no file twice (twice is every row twice).
    """
    import yaml  # a dependency of huggingface_hub
    from huggingface_hub import DatasetCard

    said = f"{card}," if CARD in listed else f"{card}, which {card.parent / SUMS} does not list,"
    try:
        # As this huggingface_hub reads it, and as a newer one would: older ones miss a header after a byte-order
        # mark, which a newer datasets then follows.  Both readings are checked.
        header = _header(card)
        # No header (a tokenizer's card): nothing for datasets to follow, and no warning from huggingface_hub.
        readings = [DatasetCard.load(card).data.to_dict(), header] if header else []
    except (ValueError, yaml.YAMLError) as err:
        raise PplgateError(f"{card}'s header is not YAML ({str(err).splitlines()[0]}): {refetch}.") from None
    raw = [meta.get("configs") for meta in readings]
    configs = [c for value in raw if isinstance(value, list) for c in value]
    outside = [p for p in _strings(raw) if leaves_folder(p) or "://" in p]
    if outside:
        raise PplgateError(
            f"{said} points datasets at {outside[0]!r}, outside {card.parent}: nothing was read; {refetch}."
        )
    for config in configs:
        if not isinstance(config, dict) or config.get("config_name") != DATASET_CONFIG:
            continue
        other = sorted(set(config) - {"config_name", "data_files", "default"})
        if other:
            raise PplgateError(
                f"{said} sets {other[0]!r} for {DATASET_CONFIG}, which changes what datasets reads: "
                f"nothing was read; {refetch}."
            )
        read: list[str] = []
        for pattern in _split_patterns(config.get("data_files"), SPLIT):
            read += sorted(p.relative_to(card.parent).as_posix() for p in card.parent.glob(pattern) if p.is_file())
        twice = sorted({name for name in read if read.count(name) > 1})
        if twice:
            raise PplgateError(
                f"{said} makes datasets read {twice[0]} twice for the {SPLIT} split, so every row of "
                f"it would count twice: "
                f"nothing was read; {refetch}."
            )
        unchecked = [name for name in read if name not in listed]
        if unchecked:
            raise PplgateError(
                f"{said} makes datasets read {unchecked[0]}, which is not listed either: nothing was read; {refetch}."
            )


def _header(card: Path) -> dict:
    """The card's YAML header, found after a byte-order mark and blank lines too; {} where there is none."""
    import yaml

    text = card.read_text(encoding="utf-8-sig", errors="replace").lstrip()
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
    if end is None:
        return {}
    meta = yaml.safe_load("\n".join(lines[1:end]))
    return meta if isinstance(meta, dict) else {}


def _split_patterns(data_files, split: str) -> list[str]:
    """The file patterns a config's ``data_files`` gives ``split``, in every spelling datasets takes."""

    def patterns(value) -> list[str]:
        return (
            [value]
            if isinstance(value, str)
            else [v for v in value if isinstance(v, str)]
            if isinstance(value, list)
            else []
        )

    if isinstance(data_files, dict):
        return patterns(data_files.get(split))
    if isinstance(data_files, list) and all(isinstance(v, dict) for v in data_files):
        return [p for entry in data_files if entry.get("split") == split for p in patterns(entry.get("path"))]
    return patterns(data_files) if split == "train" else []


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@dataclass(frozen=True)
class SourceFolder:
    """Where remote sources are looked up instead of the network."""

    root: Path
    cache_dir: Path  # keeps the files' hashes, so a check costs a stat once a file is hashed

    def dataset(self, spec: str) -> str:
        return self._folder(spec, "dataset", "--dataset")

    def tokenizer(self, spec: str) -> str:
        return self._folder(spec, "tokenizer", "--tokenizer")

    def model(self, spec: str) -> str:
        if not is_remote(spec):
            return spec
        name = model_file_name(spec)
        folder = self.root / MODEL_SUBDIR
        if not (folder / name).is_file():
            raise self._missing("model", spec, folder / name, "--model")
        # The folder holds every case's models: what this one reads is its file and each file its tensors name.
        verify(folder, self.cache_dir, only=name)
        for location in external_locations(folder / name, self.cache_dir):
            verify(folder, self.cache_dir, only=PurePosixPath(location).as_posix())
        return str(folder / name)

    def _folder(self, spec: str, what: str, option: str) -> str:
        if looks_local(spec):
            return spec
        folder = self.root / repo_folder_name(spec)
        if not folder.is_dir():
            raise self._missing(what, spec, folder, option)
        verify(folder, self.cache_dir)
        return str(folder)

    def _missing(self, what: str, spec: str, where: Path, option: str) -> SourceUnavailable:
        return SourceUnavailable(
            f"{what} {bare_address(spec)} is not in the sources folder {self.root} (no {where}): write it there with "
            f"'python -m pplgate fetch {self.root}' on a machine with network, or pass {option} with a local copy.",
            option=option,
        )


@dataclass(frozen=True)
class Sources:
    """What a run evaluates, on what, and where made and downloaded files go."""

    model: str = VENDOR_MODEL_URL
    dataset: str = DEFAULT_DATASET
    tokenizer: str = DEFAULT_TOKENIZER
    # Downloaded, built and converted models: one folder for the CLI and the
    # gate, whatever the working directory.
    model_dir: Path = field(default_factory=default_model_dir)
    # Tokenized data and file hashes; read from the environment when a Sources is made, not at import.
    cache_dir: Path = field(default_factory=user_cache_dir)
    # A folder written by 'python -m pplgate fetch' (--sources): remote sources are read from it.
    folder: Path | None = None

    def resolved(self) -> Sources:
        """Each remote source replaced by its checked copy in ``folder``; as it is without one."""
        if self.folder is None:
            return self
        f = SourceFolder(Path(self.folder), self.cache_dir)
        return replace(
            self,
            model=f.model(self.model),
            dataset=f.dataset(self.dataset),
            tokenizer=f.tokenizer(self.tokenizer),
            folder=None,
        )
