"""The evaluation loop: batching, short blocks, non-finite losses, counts and timings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pplgate.blocks import Blocks
from pplgate.errors import PplgateError
from pplgate.evaluate import evaluate
from pplgate.runtime import open_session
from pplgate.target import Target

CPU_FP32 = Target.parse("cpu-fp32")
LENGTH = 256  # tokens a block: the loop's arithmetic is the same at any length, and four times cheaper


@pytest.fixture(scope="module")
def graph_session(tiny_model):
    return open_session(tiny_model, CPU_FP32, "graph")


@pytest.fixture(scope="module")
def short_blocks(block_matrix):
    """Ten blocks of LENGTH: batch sizes 3 and 4 then end on a partial batch."""
    return Blocks.from_matrix(block_matrix[:10, :LENGTH])


@pytest.fixture(scope="module")
def batch1(graph_session, short_blocks):
    return evaluate(graph_session, short_blocks, 1, progress=False)


@pytest.mark.parametrize("batch_size", [3, 4])
def test_batch_size_does_not_change_the_perplexity(graph_session, short_blocks, batch1, batch_size):
    other = evaluate(graph_session, short_blocks, batch_size, progress=False)
    assert other.blocks == 10
    assert other.perplexity == pytest.approx(batch1.perplexity, rel=1e-6)


def test_counts_and_timings_of_an_evaluation(batch1):
    assert batch1.token_losses.shape == (10 * (LENGTH - 1),)
    assert batch1.scored_tokens == 10 * (LENGTH - 1)
    assert batch1.eval_seconds > 0
    assert batch1.tokens_per_second == pytest.approx(10 * LENGTH / batch1.eval_seconds)
    assert batch1.perplexity == pytest.approx(math.exp(batch1.token_losses.astype(np.float64).mean()), rel=1e-9)


class _NaNAt:
    """A session whose block ``bad`` yields NaN losses."""

    target = CPU_FP32

    def __init__(self, bad: int):
        self.bad, self.seen = bad, 0

    def token_losses(self, ids):
        out = np.ones((ids.shape[0], ids.shape[1] - 1), dtype=np.float32)
        for row in range(ids.shape[0]):
            if self.seen + row == self.bad + 1:  # +1: the warm-up batch came first
                out[row, 5] = np.nan
        self.seen += ids.shape[0]
        return out


def test_nan_losses_fail_with_the_block_index(blocks):
    with pytest.raises(PplgateError, match=r"block 3 has 1 NaN or infinite token losses on cpu-fp32"):
        evaluate(_NaNAt(3), blocks.head(6), 1, progress=False)


@pytest.fixture(scope="module")
def with_short_block(short_blocks, blocks):
    """Six whole blocks, then a short one of 100 ids, as a small last batch of rows gives."""
    head = short_blocks.head(6)
    return Blocks(np.concatenate([head.ids, blocks.block(7)[:100]]), np.append(head.lengths, 100))


def test_batch_sizes_1_to_5_give_the_same_perplexity(graph_session, with_short_block):
    runs = [evaluate(graph_session, with_short_block, b, progress=False) for b in range(1, 6)]
    for run in runs:
        assert run.scored_tokens == 6 * (LENGTH - 1) + 99
        assert run.perplexity == pytest.approx(runs[0].perplexity, rel=1e-6)


def test_a_short_block_weighs_as_one_block(graph_session, with_short_block):
    # The vendor scores the short block in a batch of its own: its mean loss counts once, like any block's.
    ev = evaluate(graph_session, with_short_block, 4, progress=False)
    whole = graph_session.token_losses(with_short_block.matrix(0, 6)).astype(np.float64).mean(axis=1)
    short = graph_session.token_losses(with_short_block.block(6)[None, :]).astype(np.float64).mean()
    assert ev.perplexity == pytest.approx(math.exp(np.append(whole, short).mean()), rel=1e-6)
    assert ev.perplexity != pytest.approx(math.exp(ev.token_losses.astype(np.float64).mean()), rel=1e-6)
