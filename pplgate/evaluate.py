"""The evaluation loop: blocks in, per-token losses and timings out."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from pplgate.blocks import Blocks
from pplgate.errors import PplgateError
from pplgate.metric import perplexity, perplexity_stderr
from pplgate.progress import Progress
from pplgate.runtime import ORT_RUN_ERRORS, LMSession


@dataclass(frozen=True)
class Evaluation:
    token_losses: np.ndarray  # [scored tokens] float32, block by block (see Blocks.scored_starts)
    layout: Blocks  # the blocks scored
    eval_seconds: float  # the loop only: feeding, running, scoring, bookkeeping
    batch_size: int
    warmup_batches: int
    # The bare model's session.run over the same batches, when asked for.
    forward_seconds: float | None = None

    @property
    def blocks(self) -> int:
        return len(self.layout)

    @property
    def scored_tokens(self) -> int:
        return self.token_losses.size

    @property
    def block_losses(self) -> np.ndarray:
        """[n_blocks] float64: each block's mean cross-entropy, as the vendor computes it."""
        return self.layout.block_means(self.token_losses)

    @property
    def perplexity(self) -> float:
        return perplexity(self.block_losses)

    @property
    def perplexity_stderr(self) -> float:
        return perplexity_stderr(self.token_losses)

    @property
    def tokens_per_second(self) -> float:
        # Tokens fed, not scored: what the hardware processed.
        fed = self.layout.ids.size
        return fed / self.eval_seconds if self.eval_seconds > 0 else math.inf


def _score(session: LMSession, ids: np.ndarray, first_block: int) -> np.ndarray:
    try:
        return session.token_losses(ids)
    except ORT_RUN_ERRORS as err:
        raise PplgateError(
            f"onnxruntime failed on block {first_block} on {session.target.spec} "
            f"({str(err).strip().splitlines()[0]}): check the model and the tokenizer with --device cpu --precision "
            f"fp32."
        ) from err


def _timed_forward(baseline: LMSession, ids: np.ndarray) -> float:
    start = time.perf_counter()
    baseline.forward_in_place(ids)
    return time.perf_counter() - start


def evaluate(
    session: LMSession,
    blocks: Blocks,
    batch_size: int,
    warmup: int = 1,
    progress: bool = True,
    baseline: LMSession | None = None,
) -> Evaluation:
    """Scores every block; refuses NaN or infinite losses.

    ``warmup`` batches run untimed first: a session's first runs grow its
    memory arena and cost several times a steady run.  With a ``baseline``
    (a host-scoring session of the same model) each batch also runs through
    the bare model just before it is scored, timed apart, so forward_seconds
    and eval_seconds see the same machine state: on a shared machine speed
    drifts by 10% or more within seconds, too much to compare two loops run
    one after the other.
    """
    if batch_size < 1:
        raise PplgateError(f"batch size {batch_size} is below 1: pass --batch-size 1 or more.")
    plan = [(batch, blocks.matrix(batch.start, batch.stop)) for batch in blocks.batches(batch_size)]
    losses = np.empty(blocks.scored_tokens, dtype=np.float32)
    offsets = blocks.scored_starts
    for batch, ids in plan[:warmup]:
        _score(session, ids, batch.start)
        if baseline is not None:
            baseline.forward_in_place(ids)
    eval_seconds = forward_seconds = 0.0
    block_loss_sum = 0.0  # of the blocks done: the running perplexity a log shows
    with Progress(len(blocks), session.target.spec, "blocks", enabled=progress) as bar:
        for i, (batch, ids) in enumerate(plan):
            # The bare run goes first on even batches and second on odd ones,
            # so neither side always inherits the other's warm caches.
            if baseline is not None and i % 2 == 0:
                forward_seconds += _timed_forward(baseline, ids)
            start = time.perf_counter()
            scored = _score(session, ids, batch.start)  # [b, T-1]
            at = int(offsets[batch.start])
            losses[at : at + scored.size] = scored.reshape(-1)
            eval_seconds += time.perf_counter() - start
            block_loss_sum += float(scored.mean(axis=1, dtype=np.float64).sum())
            fed = int(blocks.lengths[: batch.stop].sum())
            bar.update(
                batch.stop - batch.start,
                f"{fed / eval_seconds:,.0f} tokens/s, perplexity so far "
                f"{math.exp(min(block_loss_sum / batch.stop, 700)):.6g}",
            )
            if baseline is not None and i % 2 == 1:
                forward_seconds += _timed_forward(baseline, ids)
    bad = ~np.isfinite(losses)
    if bad.any():
        block = int(np.searchsorted(offsets, int(np.argmax(bad)), side="right") - 1)
        at, n = int(offsets[block]), int(blocks.lengths[block]) - 1
        raise PplgateError(
            f"block {block} has {int(bad[at : at + n].sum())} NaN or infinite token losses on {session.target.spec}: "
            "the model's output is broken there; compare with --device cpu --precision fp32."
        )
    return Evaluation(
        losses, blocks, eval_seconds, batch_size, warmup, forward_seconds if baseline is not None else None
    )
