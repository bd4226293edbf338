"""A run against a reference session on the same blocks: how far apart are the distributions?

Per token, the KL divergence of the next-token distributions, KL(reference ||
run), and whether both put the same token first; as llama.cpp's perplexity
tool does with --kl-divergence.  Both sessions hand their logits to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pplgate.evaluate import batches
from pplgate.metric import perplexity
from pplgate.runtime import LMSession


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """[..., V] float32 -> log-probabilities, float32."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class ReferenceComparison:
    reference: str  # DEVICE-PRECISION
    kl: np.ndarray  # [n_blocks, T-1] per-token KL(reference || run), nats
    top1_agree: np.ndarray  # [n_blocks, T-1] bool
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


def compare_with_reference(run: LMSession, reference: LMSession, blocks: np.ndarray, batch_size: int) -> ReferenceComparison:
    """Both sessions must fetch logits (host scoring)."""
    n, length = blocks.shape
    kl = np.empty((n, length - 1), dtype=np.float64)
    agree = np.empty((n, length - 1), dtype=bool)
    losses = np.empty((n, length - 1), dtype=np.float32)
    losses_ref = np.empty((n, length - 1), dtype=np.float32)
    for batch in batches(n, batch_size):
        ids = blocks[batch]
        z = run.forward(ids)[:, :-1].astype(np.float32)  # [b, T-1, V]: the scored positions
        z_ref = reference.forward(ids)[:, :-1].astype(np.float32)
        lp, lp_ref = _log_softmax(z), _log_softmax(z_ref)
        kl[batch] = (np.exp(lp_ref) * (lp_ref - lp)).sum(axis=-1, dtype=np.float64)
        agree[batch] = z.argmax(axis=-1) == z_ref.argmax(axis=-1)
        losses[batch] = -np.take_along_axis(lp, ids[:, 1:, None], axis=-1)[..., 0]
        losses_ref[batch] = -np.take_along_axis(lp_ref, ids[:, 1:, None], axis=-1)[..., 0]
    return ReferenceComparison(
        reference=f"{reference.device.spec}-{reference.precision}",
        kl=kl,
        top1_agree=agree,
        perplexity=perplexity(losses.mean(axis=1, dtype=np.float64)),
        perplexity_reference=perplexity(losses_ref.mean(axis=1, dtype=np.float64)),
    )
