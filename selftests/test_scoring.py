"""The scoring graph: exact against float64, on plain and on masked vocabularies."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

from pplgate.metric import host_token_losses, perplexity
from pplgate.runtime import open_session
from pplgate.scoring import LABELS, LOGITS, TOKEN_LOSSES, chunk_count, labels_of, scoring_model
from pplgate.target import Target


def test_the_vocabulary_is_cut_near_32_chunks():
    assert chunk_count(50257) == 29 and chunk_count(50304) == 32
    assert chunk_count(None) is None and chunk_count(50261) is None  # a prime: one pass


def test_graph_scoring_equals_float64_host_scoring(tiny_model, block_matrix):
    host = open_session(tiny_model, Target.parse("cpu-fp32"), "host")
    graph = open_session(tiny_model, Target.parse("cpu-fp32"), "graph")
    ids = block_matrix[:2]
    logits = host.forward(ids)
    # In float64 a few positions at a time: the whole of it would be 1.6 GB.
    exact = np.concatenate([host_token_losses(logits[:, r : r + 129], ids[:, r : r + 129], dtype=np.float64)
                            for r in range(0, ids.shape[1] - 1, 128)], axis=1)
    assert perplexity(graph.token_losses(ids).mean(axis=1)) == pytest.approx(perplexity(exact.mean(axis=1)), rel=1e-6)
    assert perplexity(host.token_losses(ids).mean(axis=1)) == pytest.approx(perplexity(exact.mean(axis=1)), rel=1e-6)


@pytest.mark.parametrize("mask", [-1e9, float(np.finfo(np.float32).min), -math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_graph_scoring_equals_host_scoring_on_masked_logits(mask, dtype):
    """A masked vocabulary (padded, banned tokens) at every chunk's first index: the scorer's chunks must not cancel there."""
    vocab = 50257
    step = vocab // chunk_count(vocab)
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((2, 65, vocab)) * 3).astype(dtype)
    with np.errstate(over="ignore"):  # -1e9 is -inf in float16
        logits[..., ::step] = mask  # 0, 1733, 3466, ...
    ids = rng.integers(1, step, (2, 65))  # targets whose logits are finite
    scorer = ort.InferenceSession(scoring_model(vocab, dtype).SerializeToString(), providers=["CPUExecutionProvider"])
    in_graph = scorer.run([TOKEN_LOSSES], {LOGITS: logits, LABELS: labels_of(ids)})[0][:, :-1]
    exact = host_token_losses(logits, ids, dtype=np.float64)
    assert np.isfinite(in_graph).all()
    assert perplexity(in_graph.mean(axis=1)) == pytest.approx(perplexity(exact.mean(axis=1)), rel=1e-6)
    np.testing.assert_allclose(in_graph, exact, rtol=1e-5)
