"""The vendor's grouping against the datasets library itself, and on the shared copy."""

from __future__ import annotations

import numpy as np
import pytest

from pplgate.blocks import Blocks, group
from pplgate.errors import PplgateError

BLOCK = 1024


def run_clm_group(examples: dict) -> dict:
    """Hugging Face run_clm's group_texts, as the vendor's data preparation applies it."""
    concatenated = {k: sum(examples[k], []) for k in examples}
    total_length = len(concatenated["input_ids"])
    if total_length >= BLOCK:
        total_length = (total_length // BLOCK) * BLOCK
    return {k: [t[i : i + BLOCK] for i in range(0, total_length, BLOCK)] for k, t in concatenated.items()}


def datasets_blocks(rows: list[list[int]]) -> list[list[int]]:
    """The blocks datasets.map(batched=True) gives: tokenized rows in, grouped per 1,000-row batch."""
    import datasets

    ds = datasets.Dataset.from_dict({"text": [str(i) for i in range(len(rows))]})
    ds = ds.map(lambda b: {"input_ids": [rows[int(t)] for t in b["text"]]}, batched=True, remove_columns=["text"])
    return ds.map(run_clm_group, batched=True)["input_ids"]


def pplgate_blocks(rows: list[list[int]], grouping: str = "vendor") -> list[list[int]]:
    ids = np.array([i for r in rows for i in r], dtype=np.int32)
    blocks = group(ids, np.array([len(r) for r in rows]), grouping)
    return [blocks.block(i).tolist() for i in range(len(blocks))]


def synthetic_rows(n: int, seed: int, empty_every: int = 3, mean_length: int = 40) -> list[list[int]]:
    """Rows of random ids, every ``empty_every``-th row empty, like the split's blank lines."""
    rng = np.random.default_rng(seed)
    return [[] if i % empty_every == 0 else rng.integers(0, 50257, rng.integers(1, 2 * mean_length)).tolist() for i in range(n)]


@pytest.mark.parametrize("rows", [
    pytest.param(synthetic_rows(2500, 0), id="2500-rows"),
    # Empty rows on both sides of each batch edge (999/1000, 1999/2000).
    pytest.param([[] if i in (998, 999, 1000, 1001, 1999, 2000) else [i % 50000 + 1] * 3 for i in range(2100)], id="empty-rows-at-batch-edges"),
    # The last batch (rows 2000-2099) holds 100 ids: one short block.
    pytest.param(synthetic_rows(2000, 1) + [[7]] * 100, id="short-last-batch"),
    # The middle batch holds no ids at all: no block from it.
    pytest.param(synthetic_rows(1000, 2) + [[]] * 1000 + synthetic_rows(1000, 3), id="batch-without-ids"),
])
def test_blocks_equal_datasets_map_batched(rows):
    expected = datasets_blocks(rows)
    assert pplgate_blocks(rows) == expected
    assert len(expected) > 0


def test_short_block_gets_a_batch_of_its_own():
    rows = synthetic_rows(2000, 1) + [[7]] * 100
    ids = np.array([i for r in rows for i in r], dtype=np.int32)
    blocks = group(ids, np.array([len(r) for r in rows]), "vendor")
    assert blocks.lengths[-1] == 100 and (blocks.lengths[:-1] == BLOCK).all()
    batches = blocks.batches(4)
    assert batches[-1] == slice(len(blocks) - 1, len(blocks))
    assert all(b.stop - b.start <= 4 for b in batches)
    assert blocks.scored_tokens == int((blocks.lengths - 1).sum())


def test_contiguous_grouping_drops_one_remainder():
    rows = synthetic_rows(2500, 0)
    flat = [i for r in rows for i in r]
    got = pplgate_blocks(rows, "contiguous")
    assert len(got) == len(flat) // BLOCK
    assert sum(got, []) == flat[: len(got) * BLOCK]


def test_a_batch_of_one_token_is_refused():
    with pytest.raises(PplgateError, match="rows 0-0 hold a single token"):
        group(np.array([5], dtype=np.int32), np.array([1]), "vendor")


def test_fingerprint_tells_blocks_apart():
    a = Blocks.from_matrix(np.arange(8).reshape(2, 4))
    assert a.fingerprint() == Blocks.from_matrix(np.arange(8).reshape(2, 4)).fingerprint()
    assert a.fingerprint() != Blocks.from_matrix(np.arange(8).reshape(4, 2)).fingerprint()  # same ids, other cuts
    assert a.fingerprint() != a.head(1).fingerprint()


def test_shared_copy_block_counts(tokens):
    vendor, contiguous = tokens.blocks("vendor"), tokens.blocks("contiguous")
    assert (tokens.rows, len(tokens.ids)) == (2891, 283_287)
    assert (len(vendor), vendor.scored_tokens) == (274, 280_302)
    assert (len(contiguous), contiguous.scored_tokens) == (276, 282_348)
    # The vendor's first batch starts the stream as the contiguous cut does.
    np.testing.assert_array_equal(vendor.block(0), contiguous.block(0))
