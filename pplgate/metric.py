"""Per-token cross-entropy on the host, and perplexity from it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

# exp() of a mean loss above this overflows a float64; the vendor's torch.exp
# then returns inf, and so does pplgate.
_MAX_EXP_ARG = math.log(np.finfo(np.float64).max)


def host_token_losses(logits: np.ndarray, ids: np.ndarray, dtype=np.float32) -> np.ndarray:
    """The vendor's scoring: logits [B, T, V], ids [B, T] -> losses [B, T-1] in ``dtype``.

    Logits at positions 0..T-2 are scored against the ids at 1..T-1.
    """
    z = np.asarray(logits[:, :-1, :], dtype=dtype)  # [B, T-1, V]
    zmax = z.max(axis=-1, keepdims=True)  # [B, T-1, 1]
    picked = np.take_along_axis(z, ids[:, 1:, None], axis=-1)[..., 0]  # [B, T-1]
    shifted = z - zmax  # a new array: the caller's logits stay as they were
    np.exp(shifted, out=shifted)
    return zmax[..., 0] + np.log(shifted.sum(axis=-1)) - picked


def perplexity(block_losses: np.ndarray) -> float:
    """exp of the mean block loss; inf where that overflows, as the vendor's torch.exp gives."""
    mean = float(np.mean(block_losses, dtype=np.float64))
    return math.inf if mean > _MAX_EXP_ARG else math.exp(mean)


def perplexity_stderr(token_losses: np.ndarray) -> float:
    """The ± of the perplexity, as llama.cpp's perplexity tool computes it.

    The standard error of the mean token loss, sqrt(var / (N - 1)), carried to
    the perplexity by its derivative: exp(mean) * that.
    """
    x = np.asarray(token_losses, dtype=np.float64).ravel()
    if x.size < 2:
        return math.nan
    mean = x.mean()
    var = (x * x).mean() - mean * mean
    return perplexity(np.array([mean])) * math.sqrt(max(var, 0.0) / (x.size - 1))


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them for wikitext: ``len(re.split(r"\\s+", text))``."""
    return len(re.split(r"\s+", text))


@dataclass(frozen=True)
class CrossToolMetrics:
    """Perplexity per word and bits per UTF-8 byte of the scored text (lm-evaluation-harness's definitions).

    Token perplexity depends on the tokenizer; these do not, so they compare
    with other tools' tables.
    """

    total_nll: float  # nats, summed over the scored tokens
    words: int
    bytes: int

    @property
    def word_perplexity(self) -> float:
        return math.inf if self.total_nll / self.words > _MAX_EXP_ARG else math.exp(self.total_nll / self.words)

    @property
    def bits_per_byte(self) -> float:
        return self.total_nll / self.bytes / math.log(2)
