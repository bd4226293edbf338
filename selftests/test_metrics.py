"""Uncertainty, cross-tool metrics, saved losses, diff, and the reference session."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pplgate.blocks import Blocks
from pplgate.cli import main
from pplgate.data import TokenStream, resolve_tokenizer_dir, tokenize
from pplgate.diff import paired_difference, render
from pplgate.errors import PplgateError
from pplgate.lossfile import load_losses
from pplgate.metric import CrossToolMetrics, count_words, perplexity_stderr


def test_stderr_is_llama_cpps_formula():
    losses = np.array([[1.0, 2.0, 4.0], [3.0, 0.5, 2.5]], dtype=np.float32)
    x = losses.ravel().astype(np.float64)
    expected = math.exp(x.mean()) * math.sqrt(((x - x.mean()) ** 2).mean() / (x.size - 1))
    assert perplexity_stderr(losses) == pytest.approx(expected, rel=1e-12)


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


def test_paired_difference_is_tighter_than_either_error():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 2.0, size=50_000)
    b = a + rng.normal(0, 0.01, size=a.size)  # the same text, a slightly different kernel
    p = paired_difference(a, b)
    assert p.difference_stderr < p.stderr_a / 20
    assert p.difference == pytest.approx(p.perplexity_a - p.perplexity_b)
    assert paired_difference(a, a).difference_stderr == 0.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset_dir, tokenizer_dir, token_cache, model_dir):
    """Two-block runs of the tiny model: fp32 and fp16, each against a cpu-fp32 reference, losses saved."""
    folder = tmp_path_factory.mktemp("runs")
    out = {}
    for precision in ("fp32", "fp16"):
        report = folder / f"{precision}.json"
        assert main(["--model", "builtin:tiny", "--model-dir", str(model_dir), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
                     "--cache-dir", str(token_cache), "--max-blocks", "2", "--precision", precision, "--reference",
                     "--save-losses", str(folder / f"{precision}.npz"), "--report-json", str(report), "--no-progress"]) == 0
        out[precision] = (json.loads(report.read_text()), folder / f"{precision}.npz")
    return out


def test_reference_against_itself_is_kl_0_and_full_agreement(runs):
    report, _ = runs["fp32"]
    assert report["reference"] == "cpu-fp32"
    assert (report["kl_mean"], report["kl_p99"], report["kl_max"]) == (0.0, 0.0, 0.0)
    assert report["top1_agreement"] == 100.0 and report["perplexity_ratio"] == 1.0


def test_fp16_against_fp32_is_small_positive_kl(runs):
    report, _ = runs["fp16"]
    assert 0 < report["kl_mean"] < 0.01
    assert report["kl_median"] <= report["kl_p99"] <= report["kl_max"]
    assert 95 < report["top1_agreement"] < 100
    assert report["perplexity_ratio"] == pytest.approx(1.0, abs=0.01)
    assert report["perplexity_stderr"] > 0 and report["bits_per_byte"] > 0 and report["word_perplexity"] > report["perplexity"]


def test_saved_losses_match_the_report(runs):
    report, path = runs["fp32"]
    saved = load_losses(path)
    assert saved.token_losses.shape == (2 * 1023,) and saved.blocks.lengths.tolist() == [1024, 1024]
    assert saved.blocks.fingerprint() == report["blocks_sha256"]
    assert math.exp(saved.token_losses.astype(np.float64).mean()) == pytest.approx(report["perplexity"], rel=1e-9)
    assert saved.meta["precision"] == "fp32"


def test_diff_of_a_run_against_itself_is_zero(runs, capsys, tokenizer_dir):
    _, path = runs["fp32"]
    assert main(["diff", str(path), str(path), "--tokenizer", tokenizer_dir]) == 0
    out = capsys.readouterr().out
    assert "mean loss difference     +0 nats (A - B)" in out
    assert "perplexity A - B         +0 ± 0 (paired)" in out


def test_diff_shows_the_paired_error_and_the_worst_tokens_in_context(runs, capsys, tokenizer_dir):
    assert main(["diff", str(runs["fp16"][1]), str(runs["fp32"][1]), "--tokenizer", tokenizer_dir, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "(paired)" in out and "A: cpu-fp16" in out and "B: cpu-fp32" in out
    worst = [line for line in out.splitlines() if "[[" in line and line.startswith("  ")]
    assert len(worst) == 3
    assert all(len(line.split("A ")[1]) > 40 for line in worst)  # losses and 20 tokens of text


def test_diff_of_different_tokens_is_refused(runs, tmp_path):
    a = load_losses(runs["fp32"][1])
    b = load_losses(runs["fp16"][1])
    other = type(b)(b.token_losses, Blocks(b.blocks.ids[::-1].copy(), b.blocks.lengths), b.meta)
    with pytest.raises(PplgateError, match="scored different tokens"):
        render(a, other, decode=str)


def test_diff_of_a_file_pplgate_did_not_write(tmp_path, capsys):
    (tmp_path / "x.npz").write_text("not numpy")
    assert main(["diff", str(tmp_path / "x.npz"), str(tmp_path / "x.npz")]) == 1
    assert "is not one pplgate wrote" in capsys.readouterr().err
