"""A run against a reference session on the same blocks: KL, top-1 agreement, perplexity ratio."""

from __future__ import annotations

import pytest


def test_reference_against_itself_is_kl_0_and_full_agreement(saved_runs):
    report, _ = saved_runs["fp32"]
    assert report["reference"] == "cpu-fp32"
    assert (report["kl_mean"], report["kl_p99"], report["kl_max"]) == (0.0, 0.0, 0.0)
    assert report["top1_agreement"] == 100.0 and report["perplexity_ratio"] == 1.0


def test_fp16_against_fp32_is_small_positive_kl(saved_runs):
    report, _ = saved_runs["fp16"]
    assert 0 < report["kl_mean"] < 0.01
    assert report["kl_median"] <= report["kl_p99"] <= report["kl_max"]
    assert 95 < report["top1_agreement"] < 100
    assert report["perplexity_ratio"] == pytest.approx(1.0, abs=0.01)
    assert report["perplexity_stderr"] > 0 and report["bits_per_byte"] > 0 and report["word_perplexity"] > report["perplexity"]
