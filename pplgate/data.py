"""wikitext-2 as GPT-2 token ids, row by row, exactly as the vendor's script tokenizes it.

Load the split with ``datasets`` and tokenize each row on its own without
special tokens; how the rows' ids become blocks is ``pplgate.blocks``.  The
ids and each row's token count (empty rows included) are cached on disk,
keyed by the dataset's files and the tokenizer's files, so a second run, under
either grouping, skips tokenizing, and skips importing ``datasets`` and
``transformers`` too (about two seconds between them).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pplgate.blocks import Blocks, group
from pplgate.digest import file_digest
from pplgate.download import NO_ROOM
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import CACHE_FIX, make_folder, write_atomic
from pplgate.hub import offline_advice, snapshot
from pplgate.method import BLOCK_SIZE, DATASET_CONFIG, DEFAULT_DATASET, SPLIT
from pplgate.metric import count_words
from pplgate.spec import local_path, looks_local

log = logging.getLogger("pplgate")

# What AutoTokenizer may read from a tokenizer folder; hashed as the cache key.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
# Bumped when the way tokens are produced changes, so old cache entries die.
CACHE_VERSION = "3"


@dataclass(frozen=True)
class TokenStream:
    """The split's rows tokenized one by one, and where they came from."""

    ids: np.ndarray  # [n_tokens] int32, the rows' ids back to back
    row_lengths: np.ndarray  # [n_rows] int32, empty rows included: the vendor's batches count them
    vocab_size: int  # the tokenizer's, checked against the model's logits
    # Each vocabulary entry's UTF-8 bytes, back to back, and where each starts
    # ([vocab_size + 1]): the text of any block without loading the tokenizer.
    vocab_bytes: np.ndarray  # [total bytes] uint8
    vocab_offsets: np.ndarray  # [vocab_size + 1] int64
    dataset: str
    tokenizer: str
    cache_hit: bool

    @property
    def rows(self) -> int:
        return len(self.row_lengths)

    def blocks(self, grouping: str = "vendor", block_size: int = BLOCK_SIZE) -> Blocks:
        return group(self.ids, self.row_lengths, grouping, block_size)

    def text_bytes(self, ids: np.ndarray, blob: bytes | None = None) -> bytes:
        """The UTF-8 bytes ``ids`` spell; ``blob``: ``vocab_bytes.tobytes()``, made once by a caller that asks often."""
        blob, offsets = blob or self.vocab_bytes.tobytes(), self.vocab_offsets
        return b"".join(blob[offsets[i] : offsets[i + 1]] for i in ids.tolist())

    def scored_bytes_and_words(self, blocks: Blocks) -> tuple[int, int]:
        """UTF-8 bytes and words (lm-evaluation-harness's count) of the scored tokens' text, block by block."""
        n_bytes = n_words = 0
        blob = self.vocab_bytes.tobytes()
        for i in range(len(blocks)):
            raw = self.text_bytes(blocks.block(i)[1:], blob)
            n_bytes += len(raw)
            n_words += count_words(raw.decode("utf-8", errors="replace"))
        return n_bytes, n_words


@contextlib.contextmanager
def _datasets_bars(shown: bool) -> Iterator[None]:
    """datasets' own bars ("Generating test split") only where pplgate's show: on a terminal, progress asked for."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not shown and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not shown and not was_disabled:
            enable_progress_bars()


def load_texts(source: str, arrow_cache: Path | None = None, progress: bool = True) -> list[str]:
    """The split's rows, through ``datasets.load_dataset`` as the vendor loads them.

    ``arrow_cache``: where datasets keeps its prepared copy.  A local folder
    needs one of its own, keyed by its files: datasets keys local folders by
    name and config alone, and would hand back another folder's rows.
    """
    import datasets  # deferred: importing datasets costs about a second

    where = {} if arrow_cache is None else {"cache_dir": str(arrow_cache)}
    try:
        with _datasets_bars(progress and sys.stderr.isatty()):
            ds = datasets.load_dataset(
                str(local_path(source)) if looks_local(source) else source, DATASET_CONFIG, split=SPLIT, **where
            )
    except ConnectionError as err:
        raise _unreachable(source) from err
    except (ValueError, FileNotFoundError) as err:
        raise PplgateError(
            f"dataset {source} has no {DATASET_CONFIG} {SPLIT} split ({err}): pass --dataset with a copy of "
            f"{DEFAULT_DATASET}."
        ) from err
    except datasets.exceptions.DatasetGenerationError as err:
        # Raised over the file reader's own error: a parquet file with no rows, or cut short.
        cause = err.__cause__ or err
        if isinstance(cause, OSError) and cause.errno in NO_ROOM:
            raise PplgateError(
                f"dataset {source} cannot be prepared: no room to write datasets' copy of it "
                f"({os.strerror(cause.errno)}): "
                "free space there, raise the file-size limit (ulimit -f), or point --cache-dir at a folder with room."
            ) from err
        raise PplgateError(
            f"dataset {source}'s files cannot be read ({type(cause).__name__}: "
            f"{str(cause).strip().splitlines()[0][:200] if str(cause).strip() else 'no detail'}): "
            f"pass --dataset with a complete copy of {DEFAULT_DATASET}."
        ) from err
    except PermissionError as err:
        raise PplgateError(
            f"dataset {source} cannot be prepared: {err.filename or 'a folder it needs'} is not writable "
            f"({err.strerror}): "
            "point --cache-dir (in the gate --gate-cache-dir, or $PPLGATE_CACHE) and $HF_HOME at writable folders."
        ) from err
    except OSError as err:
        raise PplgateError(
            f"dataset {source} cannot be prepared "
            f"({err.strerror or err}{', ' + str(err.filename) if err.filename else ''}): "
            "check that the cache folders (--cache-dir, $HF_HOME) are writable folders with room."
        ) from err
    if "text" not in ds.column_names:
        raise PplgateError(
            f"dataset {source} has no 'text' column (it has {ds.column_names}): pass --dataset with a copy of "
            f"{DEFAULT_DATASET}."
        )
    texts = list(ds["text"])
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        count = sum(not isinstance(t, str) for t in texts)
        raise PplgateError(
            f"dataset {source}'s text column holds {count} values that are not text (the first, row {bad}, is "
            f"{texts[bad]!r}): "
            f'pass --dataset with a copy of {DEFAULT_DATASET}, whose rows are all strings (empty rows are "").'
        )
    return texts


def _unreachable(source: str) -> SourceUnavailable:
    return SourceUnavailable(
        f"dataset {source} cannot be reached: {offline_advice('--dataset', f'a local copy of {DEFAULT_DATASET}')}.",
        option="--dataset",
    )


def dataset_key(source: str, cache_dir: Path) -> str:
    """What identifies the data without loading it.

    A local folder: its files' names and contents (sha256, computed once per
    file version: a copy that keeps the old size and time, ``cp -p``, is new
    content all the same).  A hub id: the commit of the repository (from the
    hub, or the local cache offline).
    """
    if looks_local(source):
        folder = local_path(source)
        if not folder.is_dir():
            raise PplgateError(
                f"dataset folder {source} does not exist: pass --dataset with a folder laid out like the hub "
                f"repository {DEFAULT_DATASET}, or its hub id."
            )
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        return "|".join(f"{p.relative_to(folder).as_posix()}:{file_digest(p, cache_dir).sha256}" for p in files)
    folder = snapshot(
        source,
        ["README.md"],
        "dataset",
        "dataset",
        offline_advice("--dataset", f"a local copy of {DEFAULT_DATASET}"),
        "--dataset",
        name_error=False,
    )
    return f"{source}@{folder.name}"  # the snapshot folder is named by its commit


def resolve_tokenizer_dir(source: str) -> Path:
    """A local folder holding the tokenizer's files: the source itself, or the hub's cache."""
    if looks_local(source):
        folder = local_path(source)
        if not folder.is_dir():
            raise PplgateError(
                f"tokenizer folder {source} does not exist: pass --tokenizer with a folder holding GPT-2's vocab.json "
                f"and merges.txt (or tokenizer.json), or a hub id."
            )
        if not (
            (folder / "tokenizer.json").is_file()
            or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
        ):
            raise PplgateError(
                f"tokenizer folder {source} holds neither tokenizer.json nor vocab.json with merges.txt: copy the "
                f"tokenizer's files there, or pass --tokenizer with a hub id."
            )
        return folder
    return snapshot(
        source,
        list(TOKENIZER_FILES) + ["config.json"],
        "model",
        "tokenizer",
        offline_advice("--tokenizer", "a local folder of its files"),
        "--tokenizer",
    )


def tokenizer_key(folder: Path) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, character -> byte (the inverse of its bytes_to_unicode)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def vocabulary_bytes(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each vocabulary entry's bytes, back to back, and the offsets [V + 1].

    GPT-2's byte-level BPE spells each byte as one character, so a token's
    bytes are exact, even where a block boundary cuts a multi-byte character.
    A character outside that alphabet (an added token) counts as its UTF-8.
    """
    decoder = _byte_decoder()
    pieces = [bytes(decoder[c] for c in t) if all(c in decoder for c in t) else t.encode() for t in tokens]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    return np.frombuffer(b"".join(pieces), dtype=np.uint8), offsets


class _NoModelsAdvice(logging.Filter):
    """Drops transformers' import-time advice that PyTorch is absent: pplgate uses its tokenizers only, never its
    models.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Models won't be available" not in record.getMessage()


def import_transformers():
    # The advice is logged while transformers is first imported, by its "transformers" logger.
    logger = logging.getLogger("transformers")
    if not any(isinstance(f, _NoModelsAdvice) for f in logger.filters):
        logger.addFilter(_NoModelsAdvice())
    import transformers

    return transformers


def load_tokenizer(source: str | Path):
    """The transformers tokenizer of a hub id or local folder; one that cannot be loaded is one sentence."""
    transformers = import_transformers()

    folder = resolve_tokenizer_dir(source) if not isinstance(source, Path) else source
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:
        raise PplgateError(
            f"tokenizer in {folder} cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0]}): pass "
            f"--tokenizer with a complete copy of GPT-2's tokenizer files."
        ) from err


def tokenize(texts: list[str], folder: Path) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """rows -> (ids, row lengths, vocabulary size, vocabulary bytes, their offsets)."""
    tok = load_tokenizer(Path(folder))
    # One call over all rows tokenizes each row on its own, like the vendor's
    # per-row map; special tokens would add ids the vendor never fed.
    per_row = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    ids = np.asarray([i for row in per_row for i in row], dtype=np.int32)
    row_lengths = np.asarray([len(row) for row in per_row], dtype=np.int32)
    vocab_bytes, vocab_offsets = vocabulary_bytes(tok.convert_ids_to_tokens(list(range(len(tok)))))
    return ids, row_lengths, len(tok), vocab_bytes, vocab_offsets


def load_tokens(dataset: str, tokenizer: str, cache_dir: Path, progress: bool = True) -> TokenStream:
    folder = resolve_tokenizer_dir(tokenizer)
    data_key = dataset_key(dataset, Path(cache_dir))
    key = hashlib.sha256(f"{CACHE_VERSION}|{data_key}|{tokenizer_key(folder)}".encode()).hexdigest()[:24]
    path = Path(cache_dir) / "tokens" / f"{DATASET_CONFIG}-{SPLIT}-{key}.npz"
    fields = ("ids", "row_lengths", "vocab_size", "vocab_bytes", "vocab_offsets")
    if path.is_file():
        try:
            with np.load(path) as cached:
                ids, rows, vocab, vb, vo = (cached[f] for f in fields)
            if int(rows.sum()) == len(ids):
                return TokenStream(ids, rows, int(vocab), vb, vo, dataset, tokenizer, cache_hit=True)
            why = "its rows do not add up to its ids"
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"
        log.info("token cache %s cannot be used (%s): tokenizing again", path, why)
    # The cache folder before the dataset: a --cache-dir that cannot be written is named as such, not blamed on the
    # data.
    make_folder(Path(cache_dir) / "tokens", CACHE_FIX)
    arrow_cache = (
        Path(cache_dir) / "datasets" / hashlib.sha256(data_key.encode()).hexdigest()[:24]
        if looks_local(dataset)
        else None
    )
    made = tokenize(load_texts(dataset, arrow_cache, progress), folder)
    arrays: dict[str, Any] = dict(zip(fields, made))
    write_atomic(path, lambda f: np.savez(f, **arrays), fix=CACHE_FIX)
    ids, rows, vocab, vb, vo = made
    return TokenStream(ids, rows, vocab, vb, vo, dataset, tokenizer, cache_hit=False)
