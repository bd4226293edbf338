"""wikitext-2 as GPT-2 token blocks, exactly as the vendor's script prepares them.

Load the split with ``datasets``, tokenize each row on its own without special
tokens, concatenate the ids in order, cut consecutive blocks of 1024 and drop
the remainder.  The token stream is cached on disk, keyed by the dataset's
files and the tokenizer's files, so a second run skips tokenizing, and skips
importing ``datasets`` and ``transformers`` too (about two seconds between them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import write_atomic
from pplgate.metric import count_words

DEFAULT_DATASET = "Salesforce/wikitext"
DATASET_CONFIG = "wikitext-2-raw-v1"
SPLIT = "test"
DEFAULT_TOKENIZER = "openai-community/gpt2"
BLOCK_SIZE = 1024
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
CACHE_VERSION = "2"


@dataclass(frozen=True)
class TokenStream:
    """The whole split as one id sequence, and where it came from."""

    ids: np.ndarray  # [n_tokens] int32
    vocab_size: int  # the tokenizer's, checked against the model's logits
    # Per block of BLOCK_SIZE, for the scored tokens 1..1023 only: their UTF-8
    # bytes and the words of their text, for bits per byte and word perplexity.
    block_bytes: np.ndarray  # [n_blocks] int64
    block_words: np.ndarray  # [n_blocks] int64
    dataset: str
    tokenizer: str
    cache_hit: bool

    def blocks(self, block_size: int = BLOCK_SIZE) -> np.ndarray:
        """[n_blocks, block_size] int64; the remainder is dropped, as the vendor does."""
        n = len(self.ids) // block_size
        return self.ids[: n * block_size].reshape(n, block_size).astype(np.int64)


def looks_local(source: str) -> bool:
    """A path is local when it exists or is spelled as a path (./x, ../x, /x, ~/x)."""
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~"))


def load_texts(source: str, arrow_cache: Path | None = None) -> list[str]:
    """The split's rows, through ``datasets.load_dataset`` as the vendor loads them.

    ``arrow_cache``: where datasets keeps its prepared copy.  A local folder
    needs one of its own, keyed by its files: datasets keys local folders by
    name and config alone, and would hand back another folder's rows.
    """
    import datasets  # deferred: importing datasets costs about a second

    where = {} if arrow_cache is None else {"cache_dir": str(arrow_cache)}
    try:
        ds = datasets.load_dataset(str(Path(source).expanduser()) if looks_local(source) else source, DATASET_CONFIG, split=SPLIT, **where)
    except ConnectionError as err:
        raise _unreachable(source) from err
    except (ValueError, FileNotFoundError) as err:
        raise PplgateError(f"dataset {source} has no {DATASET_CONFIG} {SPLIT} split ({err}): pass --dataset with a copy of {DEFAULT_DATASET}.") from err
    if "text" not in ds.column_names:
        raise PplgateError(f"dataset {source} has no 'text' column (it has {ds.column_names}): pass --dataset with a copy of {DEFAULT_DATASET}.")
    return list(ds["text"])


def _unreachable(source: str) -> SourceUnavailable:
    return SourceUnavailable(
        f"dataset {source} cannot be reached: pass --dataset with a local copy of {DEFAULT_DATASET}, "
        "or set HF_HUB_OFFLINE=1 to use the Hugging Face cache.",
        option="--dataset",
    )


def dataset_key(source: str) -> str:
    """What identifies the data without loading it.

    A local folder: its files' names, sizes and modification times.  A hub id:
    the commit of the repository (from the hub, or the local cache offline).
    """
    if looks_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise PplgateError(f"dataset folder {source} does not exist: pass --dataset with a folder laid out like the hub repository {DEFAULT_DATASET}, or its hub id.")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        return "|".join(f"{p.relative_to(folder).as_posix()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    import huggingface_hub

    try:
        snapshot = huggingface_hub.snapshot_download(source, repo_type="dataset", allow_patterns=["README.md"])
    except (OSError, huggingface_hub.errors.HfHubHTTPError) as err:
        raise _unreachable(source) from err
    return f"{source}@{Path(snapshot).name}"  # the snapshot folder is named by its commit


def resolve_tokenizer_dir(source: str) -> Path:
    """A local folder holding the tokenizer's files: the source itself, or the hub's cache."""
    if looks_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise PplgateError(f"tokenizer folder {source} does not exist: pass --tokenizer with a folder holding GPT-2's vocab.json and merges.txt (or tokenizer.json), or a hub id.")
        if not ((folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
            raise PplgateError(f"tokenizer folder {source} holds neither tokenizer.json nor vocab.json with merges.txt: copy the tokenizer's files there, or pass --tokenizer with a hub id.")
        return folder
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(source, allow_patterns=list(TOKENIZER_FILES) + ["config.json"]))
    except (OSError, huggingface_hub.errors.HfHubHTTPError) as err:
        raise SourceUnavailable(
            f"tokenizer {source} cannot be reached ({type(err).__name__}): pass --tokenizer with a local folder of its files, "
            "or set HF_HUB_OFFLINE=1 to use the Hugging Face cache.",
            option="--tokenizer",
        ) from err


def tokenizer_key(folder: Path) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def tokenize(texts: list[str], folder: Path) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:
        raise PplgateError(f"tokenizer in {folder} cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0]}): pass --tokenizer with a complete copy of GPT-2's tokenizer files.") from err
    # One call over all rows tokenizes each row on its own, like the vendor's
    # per-row map; special tokens would add ids the vendor never fed.
    per_row = tok(texts, add_special_tokens=False)["input_ids"]
    ids = np.asarray([i for row in per_row for i in row], dtype=np.int32)
    n_blocks = len(ids) // BLOCK_SIZE
    scored = ids[: n_blocks * BLOCK_SIZE].reshape(n_blocks, BLOCK_SIZE)[:, 1:]
    # GPT-2's byte-level BPE spells each byte as one character of its vocabulary,
    # so a token's bytes are its vocabulary string's length: exact, even where a
    # block boundary cuts a multi-byte character that decode() would replace.
    token_bytes = np.array([len(t) for t in tok.convert_ids_to_tokens(list(range(len(tok))))], dtype=np.int64)
    block_bytes = token_bytes[scored].sum(axis=1)
    block_words = np.array([count_words(tok.decode(row.tolist())) for row in scored], dtype=np.int64)
    return ids, len(tok), block_bytes, block_words


def load_tokens(dataset: str, tokenizer: str, cache_dir: Path) -> TokenStream:
    folder = resolve_tokenizer_dir(tokenizer)
    data_key = dataset_key(dataset)
    key = hashlib.sha256(f"{CACHE_VERSION}|{data_key}|{tokenizer_key(folder)}".encode()).hexdigest()[:24]
    path = Path(cache_dir) / "tokens" / f"{DATASET_CONFIG}-{SPLIT}-{key}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return TokenStream(cached["ids"], int(cached["vocab_size"]), cached["block_bytes"], cached["block_words"], dataset, tokenizer, cache_hit=True)
    arrow_cache = Path(cache_dir) / "datasets" / hashlib.sha256(data_key.encode()).hexdigest()[:24] if looks_local(dataset) else None
    ids, vocab_size, block_bytes, block_words = tokenize(load_texts(dataset, arrow_cache), folder)
    write_atomic(path, lambda f: np.savez(f, ids=ids, vocab_size=vocab_size, block_bytes=block_bytes, block_words=block_words))
    return TokenStream(ids, vocab_size, block_bytes, block_words, dataset, tokenizer, cache_hit=False)
