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

from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pplgate.digest import file_digest
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import default_model_dir, user_cache_dir
from pplgate.sources import BUILTIN_PREFIX, DEFAULT_DATASET, DEFAULT_TOKENIZER, VENDOR_MODEL_URL, describe, file_name, looks_local

SUMS = "SHA256SUMS"
MODEL_SUBDIR = "model"


def model_file_name(spec: str) -> str:
    """The file a remote model is kept under in ``DIR/model``: its URL's or hub path's last name."""
    if spec.startswith("hf://"):
        return PurePosixPath(spec[len("hf://"):]).name
    return file_name(spec)


def repo_folder_name(spec: str) -> str:
    """The folder a hub repository is kept in: ``owner/name`` -> ``name``."""
    return spec.rstrip("/").split("/")[-1]


def read_sums(sums: Path) -> dict[str, str]:
    """``SHA256SUMS`` (sha256sum's format) -> {relative path: sha256}."""
    listed = {}
    for number, line in enumerate(sums.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        name = name.strip()
        if not sep or len(digest) != 64 or not name:
            raise PplgateError(f"{sums} line {number} is not '<sha256>  <file>': write the folder again with 'python -m pplgate fetch {sums.parent.parent}'.")
        listed[name[1:] if name.startswith("*") else name] = digest.lower()
    return listed


def verify(folder: Path, cache_dir: Path, only: str | None = None) -> None:
    """Checks the files ``folder/SHA256SUMS`` lists (or just ``only``) against it; one sentence for the first that differs."""
    sums = folder / SUMS
    refetch = f"write it again with 'python -m pplgate fetch {folder.parent}' on a machine with network"
    if not sums.is_file():
        raise PplgateError(f"{folder} has no {SUMS}, so its files cannot be checked: {refetch}.")
    listed = read_sums(sums)
    if only is not None:
        if only not in listed:
            raise PplgateError(f"{folder / only} is not listed in {sums}: {refetch}, or add its line (sha256sum {only} >> {SUMS}).")
        listed = {only: listed[only]}
    for name, want in listed.items():
        path = folder / name
        if not path.is_file():
            raise PplgateError(f"{path}, listed in {sums}, is missing: {refetch}.")
        got = file_digest(path, cache_dir).sha256
        if got != want:
            raise PplgateError(f"{path} does not match its checksum in {sums} (sha256 {got}, listed {want}): the copy is damaged or was changed; {refetch}.")


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
        if spec.startswith(BUILTIN_PREFIX) or not spec.startswith(("https://", "http://", "hf://")):
            return spec
        name = model_file_name(spec)
        folder = self.root / MODEL_SUBDIR
        if not (folder / name).is_file():
            raise self._missing("model", spec, folder / name, "--model")
        # The file and those named after it: its weights, where they are kept beside it (x.onnx.data, x.onnx_data).
        for listed in read_sums(folder / SUMS) if (folder / SUMS).is_file() else [name]:
            if listed == name or listed.startswith(name):
                verify(folder, self.cache_dir, only=listed)
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
            f"{what} {describe(spec)} is not in the sources folder {self.root} (no {where}): write it there with "
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
        return replace(self, model=f.model(self.model), dataset=f.dataset(self.dataset), tokenizer=f.tokenizer(self.tokenizer), folder=None)
