"""A run against a reference session on the same blocks: how far apart are the distributions?

Per token, the KL divergence of the next-token distributions, KL(reference ||
run), and whether both put the same token first; as llama.cpp's perplexity
tool does with --kl-divergence.  Both sessions hand their logits to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pplgate.blocks import Blocks
from pplgate.metric import perplexity
from pplgate.runtime import LMSession


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """[..., V] float32 -> log-probabilities, float32."""
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


def compare_with_reference(run: LMSession, reference: LMSession, blocks: Blocks, batch_size: int) -> ReferenceComparison:
    """Both sessions must fetch logits (host scoring)."""
    n = blocks.scored_tokens
    kl = np.empty(n, dtype=np.float64)
    agree = np.empty(n, dtype=bool)
    losses = np.empty(n, dtype=np.float32)
    losses_ref = np.empty(n, dtype=np.float32)
    offsets = blocks.scored_starts
    for batch in blocks.batches(batch_size):
        ids = blocks.matrix(batch.start, batch.stop)  # [b, T]
        at = slice(int(offsets[batch.start]), int(offsets[batch.start]) + ids.shape[0] * (ids.shape[1] - 1))
        z = run.forward(ids)[:, :-1].astype(np.float32)  # [b, T-1, V]: the scored positions
        z_ref = reference.forward(ids)[:, :-1].astype(np.float32)
        lp, lp_ref = _log_softmax(z), _log_softmax(z_ref)
        kl[at] = (np.exp(lp_ref) * (lp_ref - lp)).sum(axis=-1, dtype=np.float64).ravel()
        agree[at] = (z.argmax(axis=-1) == z_ref.argmax(axis=-1)).ravel()
        losses[at] = -np.take_along_axis(lp, ids[:, 1:, None], axis=-1).ravel()
        losses_ref[at] = -np.take_along_axis(lp_ref, ids[:, 1:, None], axis=-1).ravel()
    return ReferenceComparison(
        reference=f"{reference.device.spec}-{reference.precision}",
        kl=kl,
        top1_agree=agree,
        perplexity=perplexity(blocks.block_means(losses)),
        perplexity_reference=perplexity(blocks.block_means(losses_ref)),
    )
