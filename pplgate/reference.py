"""A run against a reference session on the same blocks: how far apart are the distributions?

Per token, the KL divergence of the next-token distributions, KL(reference ||
run), and whether both put the same token first; as llama.cpp's perplexity
tool does with --kl-divergence.  Each side's model hands its logits to the
host; they are compared ROWS positions at a time, as the scorer does, so the
memory beyond the two logits arrays is a few rows of the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pplgate.blocks import Blocks
from pplgate.metric import perplexity
from pplgate.runtime import SCORED_ROWS, LMSession

# Positions compared at a time: each temporary is this many rows of the vocabulary.
ROWS = SCORED_ROWS


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """[rows, V] float32 -> log-probabilities, float32."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class ReferenceComparison:
    reference: str  # DEVICE-PRECISION
    kl: np.ndarray  # [scored tokens] per-token KL(reference || run), nats
    top1_agree: np.ndarray  # [scored tokens] bool
    perplexity: float  # the run's, from its logits
    perplexity_reference: float

    def summary(self) -> dict:
        kl = self.kl.ravel()
        return {
            "reference": self.reference,
            "kl_mean": float(kl.mean()),
            "kl_median": float(np.median(kl)),
            "kl_p99": float(np.percentile(kl, 99)),
            "kl_max": float(kl.max()),
            "top1_agreement": float(100.0 * self.top1_agree.mean()),
            "perplexity_ratio": self.perplexity / self.perplexity_reference,
        }


def compare_with_reference(
    run: LMSession, reference: LMSession, blocks: Blocks, batch_size: int
) -> ReferenceComparison:
    """Both sessions' bare models on the same batches; any scoring of ``run`` will do, its logits are fetched."""
    n = blocks.scored_tokens
    kl = np.empty(n, dtype=np.float64)
    agree = np.empty(n, dtype=bool)
    losses = np.empty(n, dtype=np.float32)
    losses_ref = np.empty(n, dtype=np.float32)
    offsets = blocks.scored_starts
    for batch in blocks.batches(batch_size):
        ids = blocks.matrix(batch.start, batch.stop)  # [b, T]
        z_all = run.forward(ids)  # [b, T, V]
        z_ref_all = reference.forward(ids)
        scored = ids.shape[1] - 1  # positions 0..T-2 predict 1..T-1
        for i in range(ids.shape[0]):
            first = int(offsets[batch.start + i])
            for r in range(0, scored, ROWS):
                at = slice(r, min(r + ROWS, scored))
                # The entries scored: a padded vocabulary's padding is no token.
                z = z_all[i, at, : run.vocab].astype(np.float32, copy=False)  # [rows, V]
                z_ref = z_ref_all[i, at, : run.vocab].astype(np.float32, copy=False)
                lp, lp_ref = _log_softmax(z), _log_softmax(z_ref)
                out = slice(first + at.start, first + at.stop)
                kl[out] = (np.exp(lp_ref) * (lp_ref - lp)).sum(axis=-1, dtype=np.float64)
                agree[out] = z.argmax(axis=-1) == z_ref.argmax(axis=-1)
                picked = ids[i, at.start + 1 : at.stop + 1, None]  # [rows, 1]: the next ids
                losses[out] = -np.take_along_axis(lp, picked, axis=-1)[:, 0]
                losses_ref[out] = -np.take_along_axis(lp_ref, picked, axis=-1)[:, 0]
        # Let this batch's logits go before the next batch's are made.
        del z_all, z_ref_all
    return ReferenceComparison(
        reference=reference.target.spec,
        kl=kl,
        top1_agree=agree,
        perplexity=perplexity(blocks.block_means(losses)),
        perplexity_reference=perplexity(blocks.block_means(losses_ref)),
    )
