"""Cutting the tokenized rows into the blocks that are fed, the vendor's way or contiguously.

The vendor's data preparation (Hugging Face's run_clm ``group_texts``) runs
through ``datasets.Dataset.map(batched=True)``, whose batches are 1,000 rows.
Concatenation, cutting and dropping the remainder all happen inside each
batch, so each batch drops its own remainder, and a batch with fewer ids than
one block becomes one short block.  Empty rows count in those batches, so the
blocks depend on where the empty rows are, not only on the token stream.

    "vendor"      per 1,000-row batch: blocks of ``block_size``, the batch's
                  remainder dropped; a batch with fewer ids is one short block
    "contiguous"  the whole split concatenated, one remainder dropped
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pplgate.errors import PplgateError
from pplgate.method import BLOCK_SIZE, ROWS_PER_BATCH, Method


@dataclass(frozen=True)
class Blocks:
    """The blocks fed to the model, in order, back to back.

    Blocks are ragged in general (a short block from a small batch), so they
    are kept flat with their lengths; runs of equal length are batched.
    """

    ids: np.ndarray  # [sum(lengths)] int64
    lengths: np.ndarray  # [n_blocks] int64

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def starts(self) -> np.ndarray:
        """[n_blocks] offset of each block in ``ids``."""
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def scored_starts(self) -> np.ndarray:
        """[n_blocks] offset of each block's first scored token in a flat loss array."""
        return np.concatenate([[0], np.cumsum(self.lengths - 1)[:-1]]).astype(np.int64)

    def block_means(self, token_values: np.ndarray) -> np.ndarray:
        """[scored tokens] -> [n_blocks] float64: each block's mean over its scored tokens."""
        return np.add.reduceat(np.asarray(token_values, dtype=np.float64), self.scored_starts) / (self.lengths - 1)

    @property
    def scored_tokens(self) -> int:
        return int((self.lengths - 1).sum())

    def head(self, n: int | None) -> Blocks:
        """The first ``n`` blocks (all of them for None)."""
        if n is None or n >= len(self):
            return self
        return Blocks(self.ids[: int(self.lengths[:n].sum())], self.lengths[:n])

    def block(self, i: int) -> np.ndarray:
        """[length] int64: block ``i``."""
        start = int(self.starts[i])
        return self.ids[start : start + int(self.lengths[i])]

    def matrix(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """[stop - start, T] int64: blocks start..stop-1, which must share one length T."""
        stop = len(self) if stop is None else stop
        lengths = self.lengths[start:stop]
        if len(lengths) and (lengths != lengths[0]).any():
            raise ValueError(f"blocks {start}..{stop - 1} differ in length")
        offset = int(self.lengths[:start].sum())
        return self.ids[offset : offset + int(lengths.sum())].reshape(len(lengths), -1)

    def batches(self, batch_size: int) -> list[slice]:
        """Consecutive batches of at most ``batch_size`` blocks of one length.

        A block of another length than its neighbours (a short block) is
        scored in a batch of its own, as the vendor's arithmetic weighs it.
        """
        out, start = [], 0
        for i in range(1, len(self) + 1):
            if i == len(self) or i - start == batch_size or self.lengths[i] != self.lengths[start]:
                out.append(slice(start, i))
                start = i
        return out

    def fingerprint(self) -> str:
        """sha256 of the lengths and the ids fed: equal only for the very same blocks."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.lengths, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(self.ids, dtype="<i8").tobytes())
        return h.hexdigest()

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Blocks:
        """[n, T] -> n blocks of T."""
        n, t = matrix.shape
        return cls(np.ascontiguousarray(matrix, dtype=np.int64).reshape(-1), np.full(n, t, dtype=np.int64))


def _cut(ids: np.ndarray, block_size: int, keep_short: bool) -> list[np.ndarray]:
    """Consecutive blocks of ``ids``, remainder dropped; all of it as one block if shorter and ``keep_short``."""
    n = len(ids)
    if n >= block_size:
        return [ids[i : i + block_size] for i in range(0, n - n % block_size, block_size)]
    return [ids] if keep_short and n > 0 else []


def group(
    ids: np.ndarray,
    row_lengths: np.ndarray,
    grouping: str,
    block_size: int = BLOCK_SIZE,
    rows_per_batch: int = ROWS_PER_BATCH,
) -> Blocks:
    """The rows' ids (concatenated, ``row_lengths`` each) cut into blocks by ``grouping``."""
    Method(grouping, block_size)  # refuses what cannot be cut
    if grouping == "contiguous":
        pieces = _cut(ids, block_size, keep_short=False)
    else:
        ends = np.concatenate([[0], np.cumsum(row_lengths, dtype=np.int64)])
        pieces = []
        for first in range(0, len(row_lengths), rows_per_batch):
            last = min(first + rows_per_batch, len(row_lengths))
            batch = ids[ends[first] : ends[last]]
            if len(batch) == 1:
                # The vendor would score a block of nothing and report NaN.
                raise PplgateError(
                    f"rows {first}-{last - 1} hold a single token, a block with nothing to score: "
                    "pass --dataset with the full wikitext-2-raw-v1 test split, or --grouping contiguous."
                )
            pieces += _cut(batch, block_size, keep_short=True)
    if not pieces:
        return Blocks(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return Blocks(np.concatenate(pieces).astype(np.int64), np.array([len(p) for p in pieces], dtype=np.int64))
