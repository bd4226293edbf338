"""Configuration and seeded weights of the built GPT-2-architecture models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GPT2Config:
    n_layer: int
    n_head: int
    n_embd: int
    # GPT-2's byte-level BPE vocabulary: the real tokenizer's ids must all be
    # valid, and the logits must be as wide as the real model's.
    vocab_size: int = 50257
    # Learned positions up to GPT-2's context, so 1024-token blocks fit.
    n_positions: int = 1024
    layer_norm_epsilon: float = 1e-5
    # Standard deviation of every weight.  The tiny preset draws wide (0.5) so
    # that per-token losses differ strongly between positions: an off-by-one in
    # the label shift then changes the perplexity by far more than rounding.
    init_std: float = 0.02
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


PRESETS = {
    # For tests: small enough to evaluate all 276 blocks in seconds.
    "tiny": GPT2Config(n_layer=2, n_head=2, n_embd=64, init_std=0.5, seed=0),
    # GPT-2 small's shape (124M parameters), for speed measurements only: its
    # perplexity is meaningless, its cost per block is the real model's.
    "gpt2-small": GPT2Config(n_layer=12, n_head=12, n_embd=768, init_std=0.02, seed=0),
}


def init_weights(config: GPT2Config) -> dict[str, np.ndarray]:
    """Seeded float32 weights named as in Hugging Face's GPT2LMHeadModel.

    Linear weights are stored [in, out] (GPT-2's Conv1D layout), so x @ w.
    """
    rng = np.random.default_rng(config.seed)
    c, v, p = config.n_embd, config.vocab_size, config.n_positions

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * config.init_std).astype(np.float32)

    weights = {
        "wte": normal(v, c),  # [V, C], also the LM head (tied)
        "wpe": normal(p, c),  # [P, C]
    }
    for i in range(config.n_layer):
        h = f"h.{i}."
        weights.update(
            {
                h + "ln_1.weight": 1.0 + normal(c),
                h + "ln_1.bias": normal(c),
                h + "attn.c_attn.weight": normal(c, 3 * c),
                h + "attn.c_attn.bias": normal(3 * c),
                h + "attn.c_proj.weight": normal(c, c),
                h + "attn.c_proj.bias": normal(c),
                h + "ln_2.weight": 1.0 + normal(c),
                h + "ln_2.bias": normal(c),
                h + "mlp.c_fc.weight": normal(c, 4 * c),
                h + "mlp.c_fc.bias": normal(4 * c),
                h + "mlp.c_proj.weight": normal(4 * c, c),
                h + "mlp.c_proj.bias": normal(c),
            }
        )
    weights.update({"ln_f.weight": 1.0 + normal(c), "ln_f.bias": normal(c)})
    return weights
