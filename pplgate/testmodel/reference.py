"""An independent float64 numpy forward pass of a built model.

It reads the weights back from the ONNX file's initializers and recomputes
GPT-2 from its definition, sharing no code with the graph builder, so a
wiring mistake in either shows up as a disagreement.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from pplgate.blocks import Blocks
from pplgate.digest import file_digest
from pplgate.errors import PplgateError
from pplgate.fileio import CACHE_FIX, write_json_atomic
from pplgate.metric import perplexity
from pplgate.testmodel.config import GPT2Config
from pplgate.testmodel.graph import CONFIG_KEY


def load_weights(path: Path) -> tuple[GPT2Config, dict[str, np.ndarray]]:
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    if CONFIG_KEY not in props:
        raise PplgateError(
            f"model {path.name} was not built by pplgate (its metadata has no {CONFIG_KEY}), so no numpy reference "
            f"can recompute it: "
            '"computed": "numpy-reference" is for builtin: models; give the entry a "perplexity" instead.'
        )
    cfg = GPT2Config(**json.loads(props[CONFIG_KEY]))
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    return cfg, weights


def _layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gain + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def logits(cfg: GPT2Config, w: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """ids [T] -> logits [T, V], float64, all positions attended."""
    t, hd = ids.shape[0], cfg.head_dim
    x = w["wte"][ids] + w["wpe"][:t]  # [T, C]
    future = np.triu(np.ones((t, t), dtype=bool), k=1)
    for i in range(cfg.n_layer):
        p = f"h.{i}."
        a = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], cfg.layer_norm_epsilon)
        qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # [T, 3C]
        q, k, v = (m.reshape(t, cfg.n_head, hd).transpose(1, 0, 2) for m in np.split(qkv, 3, axis=-1))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)  # [H, T, T]
        scores[:, future] = -1e4
        ctx = (_softmax(scores) @ v).transpose(1, 0, 2).reshape(t, cfg.n_embd)
        x = x + ctx @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], cfg.layer_norm_epsilon)
        h = _gelu(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = _layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], cfg.layer_norm_epsilon)
    return x @ w["wte"].T


def reference_token_losses(cfg: GPT2Config, w: dict[str, np.ndarray], block: np.ndarray) -> np.ndarray:
    """block [T] -> cross-entropy [T-1] of logits at 0..T-2 against ids at 1..T-1."""
    z = logits(cfg, w, block)[:-1]  # [T-1, V]
    picked = z[np.arange(len(z)), block[1:]]
    zmax = z.max(-1, keepdims=True)
    # In place: z is 400 MB for a 1024-token block, and the copies would cost more than the arithmetic.
    z -= zmax
    np.exp(z, out=z)
    return zmax[:, 0] + np.log(z.sum(-1)) - picked


def reference_perplexity(path: Path, blocks: Blocks) -> float:
    """exp(mean block loss) of the built model at ``path`` over ``blocks``, all in float64.

    About 0.5 s a block for builtin:tiny on 2 cores, mostly the [T, C] x [C, V]
    product of the LM head: hence the cache below.
    """
    cfg, w = load_weights(path)
    return perplexity(np.array([reference_token_losses(cfg, w, blocks.block(i)).mean() for i in range(len(blocks))]))


def cached_reference_perplexity(path: Path, blocks: Blocks, cache_dir: Path) -> float:
    """``reference_perplexity``, kept in ``<cache>/reference`` by model file and blocks fingerprint."""
    key = f"{file_digest(path, cache_dir).sha256[:24]}-{blocks.fingerprint()[:24]}"
    cached = Path(cache_dir) / "reference" / f"{key}.json"
    try:
        value = float(json.loads(cached.read_text())["perplexity"])
        if math.isfinite(value) and value > 0:
            return value
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or a cache entry cut short or damaged: computed again
    value = reference_perplexity(path, blocks)
    write_json_atomic(cached, {"model": path.name, "blocks": len(blocks), "perplexity": value}, fix=CACHE_FIX)
    return value
