"""Option values, parsed by small functions: a bad one is a usage error naming the option."""

from __future__ import annotations

import argparse

import pytest

from pplgate.argtypes import block_size, device_list, key_value, percent, precision_list, relative_error, thread_count
from pplgate.target import Precision


@pytest.mark.parametrize(("parse", "text", "message"), [
    (percent, "ten", "'ten' is not a percentage such as 10 or 7.5%"),
    (percent, "150", "150% is not between 0 and 100"),
    (relative_error, "nan", "nan is not a relative error above 0: write e.g. 1e-4"),
    (relative_error, "0", "0 is not a relative error above 0: write e.g. 1e-4"),
    (relative_error, "-1", "-1 is not a relative error above 0: write e.g. 1e-4"),
    (relative_error, "inf", "inf is not a relative error above 0: write e.g. 1e-4"),
    (key_value, "novalue", "'novalue' is not of the form key=value"),
    (block_size, "1", "block size 1 is below 2: a block needs a token to predict from and one to score."),
    (device_list, "cpu CPU", "'cpu cpu' names the device cpu twice: name each once"),
    (precision_list, "fp32 fp8", "unknown precision 'fp8': use one of fp32, fp16, tf32."),
])
def test_a_bad_value_is_one_sentence(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert str(info.value) == message


def test_lists_and_percentages():
    assert [d.spec for d in device_list("cpu, GCU:1")] == ["cpu", "gcu:1"]
    assert precision_list("FP32 fp16") == (Precision.FP32, Precision.FP16)
    assert device_list("") == ()
    assert percent("7.5%") == pytest.approx(0.075)


def test_more_threads_than_cpus_is_refused():
    import os

    with pytest.raises(argparse.ArgumentTypeError, match=rf"2000 threads is more than this machine's {os.cpu_count()} CPUs"):
        thread_count("2000")
