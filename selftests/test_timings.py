"""Saved runs read back: pplgate's benchmarks as Timings, anything else named and set aside."""

from __future__ import annotations

import pytest

from pplgate.timings import UnreadableRun, timing_of
from saved import TOKENS, saved_run, timings


def test_a_saved_run_is_a_timing_of_its_median_round():
    (t,) = timings([saved_run(0.5)])
    assert (t.test, t.run, t.node, t.commit) == ("tiny-cpu-fp32", "0001", "node-a", "abcdef01")
    assert t.tokens_per_second == pytest.approx(TOKENS / 0.5) and t.spread == pytest.approx(0.01)
    assert t.settings == {"batch_size": 1, "intra_op_threads": 0, "provider_options": {}, "blocks": 4, "scoring": "graph"}


def test_a_benchmark_that_is_not_pplgates_is_left_alone():
    assert timing_of({"stats": {"median": 1.0}, "extra_info": {}}, "0001", "", "", "n") is None


@pytest.mark.parametrize("median", [float("nan"), 0.0, -0.5])
def test_a_run_with_no_real_time_is_never_judged(median):
    """Named as unreadable, so history and the gate set the run aside and say so."""
    bench = {"stats": {"median": median, "stddev": 0.01, "rounds": 3}, "extra_info": {"test": "t", "tokens": 4096}}
    with pytest.raises(UnreadableRun, match="t: stats.median is"):
        timing_of(bench, "0001", "", "", "node")
    with pytest.raises(UnreadableRun, match="t: extra_info.tokens is 0.0"):
        timing_of({**bench, "stats": {**bench["stats"], "median": 0.5}, "extra_info": {"test": "t", "tokens": 0}}, "0001", "", "", "node")
