"""Perplexity, its uncertainty, and the cross-tool metrics, against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pplgate.data import TokenStream, resolve_tokenizer_dir, tokenize
from pplgate.metric import CrossToolMetrics, count_words, perplexity, perplexity_stderr


def test_stderr_is_llama_cpps_formula():
    losses = np.array([[1.0, 2.0, 4.0], [3.0, 0.5, 2.5]], dtype=np.float32)
    x = losses.ravel().astype(np.float64)
    expected = math.exp(x.mean()) * math.sqrt(((x - x.mean()) ** 2).mean() / (x.size - 1))
    assert perplexity_stderr(losses) == pytest.approx(expected, rel=1e-12)


def test_perplexity_overflow_is_inf_as_the_vendor_reports():
    assert perplexity(np.array([800.0])) == math.inf
    assert perplexity(np.array([1.0, 3.0])) == pytest.approx(math.exp(2.0))


def test_word_and_byte_counts_of_a_hand_made_text(tokenizer_dir):
    # 600 rows of " hello world": ids alternate " hello", " world" (6 bytes each).
    ids, rows, vocab, vb, vo = tokenize([" hello world"] * 600, resolve_tokenizer_dir(tokenizer_dir))
    assert len(ids) == 1200 and vocab == 50257 and rows.tolist() == [2] * 600
    tokens = TokenStream(ids, rows, vocab, vb, vo, "hand-made", tokenizer_dir, cache_hit=False)
    # Scored tokens 1..1023 of the one block: 512 " world" and 511 " hello".
    # re.split(r"\s+") of " world hello ... world" gives an empty first word, as lm-eval counts.
    assert tokens.scored_bytes_and_words(tokens.blocks()) == (1023 * 6, 1024)
    assert count_words(" a b\n\nc") == 4


def test_bits_per_byte_and_word_perplexity_definitions():
    m = CrossToolMetrics(total_nll=1023 * 2.0, words=1024, bytes=6138)
    assert m.bits_per_byte == pytest.approx(1023 * 2.0 / 6138 / math.log(2))
    assert m.word_perplexity == pytest.approx(math.exp(1023 * 2.0 / 1024))
