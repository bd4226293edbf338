"""Saved per-token losses (--save-losses) and ``python -m pplgate diff`` of two of them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pplgate.blocks import Blocks
from pplgate.diff import paired_difference, render
from pplgate.errors import PplgateError
from pplgate.lossfile import load_losses


def test_the_paired_difference_is_tighter_than_either_error():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 2.0, size=50_000)
    b = a + rng.normal(0, 0.01, size=a.size)  # the same text, a slightly different kernel
    p = paired_difference(a, b)
    assert p.difference_stderr < p.stderr_a / 20
    assert p.difference == pytest.approx(p.perplexity_a - p.perplexity_b)
    assert paired_difference(a, a).difference_stderr == 0.0


def test_an_infinite_perplexity_is_said_without_a_warning(saved_runs, recwarn):
    """As found: runs whose perplexity is infinite printed numpy's RuntimeWarning, then ``+nan ± nan``."""
    a = load_losses(saved_runs["fp32"][1])
    broken = type(a)(np.full_like(a.token_losses, 800.0), a.blocks, a.meta)
    text = render(broken, a, decode=str)
    assert "perplexity A             inf (its mean loss, 800 nats, is beyond float64's exp)" in text
    assert "perplexity A - B         none: a perplexity is infinite; the mean loss difference above compares them" in text
    assert "nan" not in text and not recwarn.list


def test_saved_losses_match_the_report(saved_runs):
    report, path = saved_runs["fp32"]
    saved = load_losses(path)
    assert saved.token_losses.shape == (2 * 511,) and saved.blocks.lengths.tolist() == [512, 512]
    assert saved.blocks.fingerprint() == report["blocks_sha256"]
    assert math.exp(saved.token_losses.astype(np.float64).mean()) == pytest.approx(report["perplexity"], rel=1e-9)
    assert saved.meta["precision"] == "fp32"


def test_diff_of_a_run_against_itself_is_zero(saved_runs, cli, tokenizer_dir):
    _, path = saved_runs["fp32"]
    out = cli("diff", path, path, "--tokenizer", tokenizer_dir).out
    assert "mean loss difference     +0 nats (A - B)" in out
    assert "perplexity A - B         +0 ± 0 (paired)" in out


def test_diff_shows_the_paired_error_and_the_worst_tokens_in_context(saved_runs, cli, tokenizer_dir):
    ran = cli("diff", saved_runs["fp16"][1], saved_runs["fp32"][1], "--tokenizer", tokenizer_dir, "--top", "3")
    assert ran.code == 0
    assert "(paired)" in ran.out and "A: cpu-fp16" in ran.out and "B: cpu-fp32" in ran.out
    worst = [line for line in ran.out.splitlines() if "[[" in line and line.startswith("  ")]
    assert len(worst) == 3
    assert all(len(line.split("A ")[1]) > 40 for line in worst)  # losses and 20 tokens of text


def test_diff_of_different_tokens_is_refused(saved_runs):
    a = load_losses(saved_runs["fp32"][1])
    b = load_losses(saved_runs["fp16"][1])
    other = type(b)(b.token_losses, Blocks(b.blocks.ids[::-1].copy(), b.blocks.lengths), b.meta)
    with pytest.raises(PplgateError, match="scored different tokens"):
        render(a, other, decode=str)


def test_diff_of_a_file_pplgate_did_not_write(tmp_path, cli):
    (tmp_path / "x.npz").write_text("not numpy")
    assert "is not one pplgate wrote" in cli("diff", tmp_path / "x.npz", tmp_path / "x.npz").error


def test_losses_whose_report_is_not_an_object(tmp_path, cli):
    path = tmp_path / "l.npz"
    np.savez_compressed(path, token_losses=np.zeros(3, np.float32), ids=np.arange(4, dtype=np.int32), lengths=np.array([4]), meta=np.array(json.dumps([1, 2])))
    assert cli("diff", path, path).error == f"pplgate: error: losses file {path} holds a report that is list, not a JSON object: write it again with --save-losses."
