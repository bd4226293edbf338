"""Device strings, cards and where pytest-xdist workers run."""

import pytest

from pplgate.devices import DEVICES, Device, assign_card, parse_device, parse_precision
from pplgate.errors import PplgateError


@pytest.mark.parametrize(("text", "provider", "options"), [
    ("cpu", "CPUExecutionProvider", {}),
    ("gpu", "CUDAExecutionProvider", {}),
    ("gpu:1", "CUDAExecutionProvider", {"device_id": "1"}),
    ("GCU:3", "TopsInferenceExecutionProvider", {"device_id": "3"}),
    ("trt:0", "TensorrtExecutionProvider", {"device_id": "0"}),
])
def test_device_strings_map_to_providers_and_options(text, provider, options):
    device = parse_device(text)
    assert device.kind.provider == provider
    assert device.provider_options() == options
    assert device.spec == text.lower()


@pytest.mark.parametrize(("text", "message"), [
    ("tpu", "unknown device 'tpu': use one of cpu, gpu, gcu, trt, rocm, openvino, dml, optionally with a card index such as gpu:1."),
    ("gpu:x", "device 'gpu:x' has a card index that is not a whole number >= 0: write it as gpu:0, gpu:1 ..."),
    ("gcu:-1", "device 'gcu:-1' has a card index that is not a whole number >= 0: write it as gcu:0, gcu:1 ..."),
    ("cpu:0", "device 'cpu:0' has a card index, but the CPU provider has no cards: write cpu."),
])
def test_bad_device_strings_are_one_sentence(text, message):
    with pytest.raises(PplgateError) as info:
        parse_device(text)
    assert str(info.value) == message


def test_unknown_precision():
    with pytest.raises(PplgateError, match=r"unknown precision 'bf16': use one of fp32, fp16, tf32\."):
        parse_precision("bf16")


def test_xdist_workers_spread_over_the_cards():
    gcu = Device(DEVICES["gcu"])
    assert [assign_card(gcu, worker, 8).index for worker in range(8)] == list(range(8))
    assert [assign_card(gcu, worker, 2).index for worker in range(4)] == [0, 1, 0, 1]


def test_card_assignment_leaves_explicit_cards_the_cpu_and_single_runs_alone():
    assert assign_card(parse_device("gcu:5"), 2, 8).index == 5
    assert assign_card(parse_device("cpu"), 2, 8).index is None
    assert assign_card(parse_device("gpu"), None, None).index is None


def test_gcu_precision_variable_is_set_only_while_the_session_is_made(monkeypatch):
    from pplgate.runtime import _environment

    monkeypatch.setenv("ORT_TOPSINFERENCE_FP16_ENABLE", "1")
    with _environment("ORT_TOPSINFERENCE_FP16_ENABLE", "0"):
        import os

        assert os.environ["ORT_TOPSINFERENCE_FP16_ENABLE"] == "0"
    assert os.environ["ORT_TOPSINFERENCE_FP16_ENABLE"] == "1"
    monkeypatch.delenv("ORT_TOPSINFERENCE_FP16_ENABLE")
    with _environment("ORT_TOPSINFERENCE_FP16_ENABLE", "1"):
        pass
    assert "ORT_TOPSINFERENCE_FP16_ENABLE" not in os.environ


def test_auto_scoring_is_the_vendors_where_the_provider_lowers_precision():
    from pplgate.runtime import resolve_scoring

    assert resolve_scoring("auto", parse_device("gcu"), "fp16") == "host"
    assert resolve_scoring("auto", parse_device("gcu:2"), "fp32") == "graph"
    assert resolve_scoring("auto", parse_device("gpu"), "fp16") == "graph"  # a converted model: scoring stays float32
    assert resolve_scoring("graph", parse_device("gcu"), "fp16") == "graph"
