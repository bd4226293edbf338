"""Progress lines a log can follow: every tenth of the work, or every 30 s of it."""

from __future__ import annotations

import logging

import pytest

import pplgate.progress
from pplgate.progress import Progress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(pplgate.progress.time, "monotonic", clock)
    return clock


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pplgate"]


def test_a_line_every_tenth_of_the_work(clock, caplog):
    caplog.set_level(logging.INFO, logger="pplgate")
    with Progress(100, "cpu-fp32", "blocks") as bar:  # stderr is captured here: not a terminal
        for _ in range(100):
            clock.now += 0.1
            bar.update(1, "9 tokens/s")
    got = lines(caplog)
    assert [line.split(", ")[0] for line in got] == [f"cpu-fp32: {n}/100 blocks" for n in range(10, 101, 10)]
    assert got[0] == "cpu-fp32: 10/100 blocks, 9 tokens/s, ETA 0:00:09"
    assert got[-1] == "cpu-fp32: 100/100 blocks, 9 tokens/s"


def test_a_line_every_30_seconds_of_slow_work(clock, caplog):
    caplog.set_level(logging.INFO, logger="pplgate")
    bar = Progress(1000, "gcu-fp16", "blocks")
    for _ in range(20):  # 2% of the work, 20 s a block: time, not count, brings the lines
        clock.now += 20
        bar.update(1)
    assert [line.split(", ")[0] for line in lines(caplog)] == [f"gcu-fp16: {n}/1,000 blocks" for n in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20)]


def test_disabled_progress_says_nothing(clock, caplog):
    caplog.set_level(logging.INFO, logger="pplgate")
    with Progress(3, "cpu-fp32", "blocks", enabled=False) as bar:
        bar.update(3)
    assert lines(caplog) == []


def test_bytes_are_shown_in_megabytes(clock, caplog):
    caplog.set_level(logging.INFO, logger="pplgate")
    bar = Progress(499_000_000, "gpt2.onnx", "MB", scale=1e6)
    clock.now += 31
    bar.update(120_000_000, "3.9 MB/s")
    assert lines(caplog) == ["gpt2.onnx: 120.0/499.0 MB, 3.9 MB/s, ETA 0:01:38"]


def test_a_run_logs_its_progress_when_output_is_not_a_terminal(base_args, cli, caplog):
    caplog.set_level(logging.INFO, logger="pplgate")
    ran = cli(*[a for a in base_args if a != "--no-progress"], "--max-blocks", "6", "--batchsize", "2")
    assert ran.code == 0, ran.err
    got = [line for line in lines(caplog) if line.startswith("cpu-fp32: ")]
    assert [line.split(", ")[0] for line in got] == ["cpu-fp32: 2/6 blocks", "cpu-fp32: 4/6 blocks", "cpu-fp32: 6/6 blocks"]
    assert all(" tokens/s, perplexity so far " in line for line in got)
    assert "ETA " in got[0] and "ETA" not in got[-1]
    assert "\r" not in ran.err  # no bar redrawn into the log
    assert ran.report["perplexity"] == pytest.approx(float(got[-1].rsplit("perplexity so far ", 1)[1]), rel=1e-5)
