"""Small parsers for option values, shared by the CLI and the pytest plugin.

Each raises argparse.ArgumentTypeError, which argparse and pytest's option
parser both report as a usage error naming the option.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pplgate.errors import PplgateError
from pplgate.method import Method
from pplgate.target import Device, Precision, Target


def _int_at_least(text: str, minimum: int) -> int:
    value = _whole(text)
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def block_size(text: str) -> int:
    """Tokens per block, as Method takes them."""
    return checked(lambda v: Method(block_size=v).block_size)(_whole(text))


def max_blocks(text: str) -> int:
    """The first N blocks only, as Method takes them."""
    return checked(lambda v: Method(max_blocks=v).max_blocks)(_whole(text))


def thread_count(text: str) -> int:
    """0 (onnxruntime's choice) up to this machine's CPUs: more threads than CPUs only wait for each other."""
    import os

    value = _int_at_least(text, 0)
    cpus = os.cpu_count() or 1
    if value > cpus:
        raise argparse.ArgumentTypeError(
            f"{value} threads is more than this machine's {cpus} CPUs: pass at most {cpus}, or 0 for onnxruntime's "
            f"choice"
        )
    return value


def percent(text: str) -> float:
    """'10', '10%' or '7.5' -> a fraction (0.1, 0.075), between 0 and 100 percent."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage such as 10 or 7.5%") from None
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError(f"{value:g}% is not between 0 and 100")
    return value / 100


def relative_error(text: str) -> float:
    """'1e-4' -> 0.0001: a relative error, finite and above 0 (NaN, inf, 0 and negatives compare nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number such as 1e-4") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} is not a relative error above 0: write e.g. 1e-4")
    return value


def output_file(text: str) -> Path:
    """A file to write: an empty value (an unset variable, $GITHUB_STEP_SUMMARY outside GitHub Actions) is refused by
    name.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "the value is empty (an unset variable such as $GITHUB_STEP_SUMMARY outside GitHub Actions?): pass a file "
            "path, "
            "or leave the option out"
        )
    return Path(text)


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form key=value")
    return key, value


def checked(parse):
    """Wraps a pplgate parser so that its sentence becomes a usage error."""

    def convert(text: str):
        try:
            return parse(text)
        except PplgateError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


device = checked(Device.parse)
precision = checked(Precision.parse)
target = checked(Target.parse)


def device_list(text: str) -> tuple[Device, ...]:
    """'cpu GCU:1' or 'cpu,gcu:1' -> (cpu, gcu:1): each checked."""
    devices = tuple(device(name) for name in text.replace(",", " ").split())
    _once([d.spec for d in devices], "device")
    return devices


def precision_list(text: str) -> tuple[Precision, ...]:
    """'fp32 FP16' -> (fp32, fp16): each checked."""
    precisions = tuple(precision(name) for name in text.replace(",", " ").split())
    _once([p.value for p in precisions], "precision")
    return precisions


def _once(names: list[str], what: str) -> None:
    """A list that names one twice would run, count and report its tests twice: refused."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{' '.join(names)!r} names the {what} {twice[0]} twice: name each once")
