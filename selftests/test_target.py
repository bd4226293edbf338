"""Devices, precisions and the Target made of them: parsed once, checked where made."""

from __future__ import annotations

import pytest

from pplgate.errors import NotApplicable, PplgateError
from pplgate.target import DEVICES, Device, Precision, Target, golden_key

GPU, CPU, GCU = Device(DEVICES["gpu"]), Device(DEVICES["cpu"]), Device(DEVICES["gcu"])


@pytest.mark.parametrize(("text", "provider", "options"), [
    ("cpu", "CPUExecutionProvider", {}),
    ("gpu", "CUDAExecutionProvider", {"use_tf32": "0"}),
    ("gpu:1", "CUDAExecutionProvider", {"device_id": "1", "use_tf32": "0"}),
    ("GCU:3", "TopsInferenceExecutionProvider", {"device_id": "3"}),
    ("trt:0", "TensorrtExecutionProvider", {"device_id": "0"}),
])
def test_device_strings_map_to_providers_and_options(text, provider, options):
    target = Target(Device.parse(text), Precision.FP32)
    assert target.provider == provider
    assert target.provider_options() == options
    assert target.device.spec == text.lower()


@pytest.mark.parametrize(("text", "message"), [
    ("tpu", "unknown device 'tpu': use one of cpu, gpu, gcu, trt, rocm, openvino, dml, optionally with a card index such as gpu:1."),
    ("gpu:x", "device 'gpu:x' has a card index that is not a whole number >= 0: write it as gpu:0, gpu:1 ..."),
    ("gcu:-1", "device 'gcu:-1' has a card index that is not a whole number >= 0: write it as gcu:0, gcu:1 ..."),
    ("cpu:0", "device 'cpu:0' has a card index, but the CPU provider has no cards: write cpu."),
])
def test_bad_device_strings_are_one_sentence(text, message):
    with pytest.raises(PplgateError) as info:
        Device.parse(text)
    assert str(info.value) == message


def test_unknown_precision():
    with pytest.raises(PplgateError, match=r"unknown precision 'bf16': use one of fp32, fp16, tf32\."):
        Precision.parse("bf16")


def test_a_target_is_parsed_once_and_named_by_its_golden_key():
    target = Target.parse("GCU:1-FP16")
    assert (target.device.spec, target.precision, target.key, target.spec) == ("gcu:1", Precision.FP16, "gcu-fp16", "gcu:1-fp16")
    assert Target(GCU, "fp16") == Target.parse("gcu-fp16")  # a precision's text is made a Precision once
    assert f"{target.precision}" == "fp16" and str(target) == "gcu:1-fp16"
    with pytest.raises(PplgateError, match=r"'cpu' is not of the form DEVICE-PRECISION: write e\.g\. cpu-fp32 or gpu:1-fp16\."):
        Target.parse("cpu")
    with pytest.raises(TypeError):
        Target("cpu", Precision.FP32)


def test_golden_keys_are_lower_case_and_have_no_card():
    assert golden_key("gpu-fp16") == Target(GPU, Precision.FP16)
    for text in ("gpu:1-fp16", "cpu-FP16"):
        with pytest.raises(PplgateError, match="is not written as a golden key"):
            golden_key(text)


def test_xdist_workers_spread_over_the_cards():
    assert [GCU.card(worker, 8).index for worker in range(8)] == list(range(8))
    assert [GCU.card(worker, 2).index for worker in range(4)] == [0, 1, 0, 1]


def test_card_assignment_leaves_explicit_cards_the_cpu_and_single_runs_alone():
    assert Device.parse("gcu:5").card(2, 8).index == 5
    assert CPU.card(2, 8).index is None
    assert GPU.card(None, None).index is None


def test_fp32_is_ieee_on_cuda_and_tf32_is_its_own_precision():
    assert Target(GPU, "fp32").precision_options() == {"use_tf32": "0"}
    assert Target(GPU, "fp16").precision_options() == {"use_tf32": "0"}
    assert Target(GPU, "tf32").precision_options() == {"use_tf32": "1"}
    assert Target(CPU, "fp32").precision_options() == {} and Target(GCU, "fp16").precision_options() == {}
    assert Target(GPU, "fp32").computed_as == "IEEE fp32, TF32 off (use_tf32=0)"
    assert Target(GPU, "tf32").computed_as == "fp32 with TF32 matmuls (use_tf32=1)"
    assert Target(CPU, "fp32").computed_as == "IEEE fp32"
    # The user's options win over the card index, the precision's over the user's.
    assert Target(Device.parse("gpu:2"), "fp32").provider_options({"device_id": "3", "arena": "x"}) == {"device_id": "3", "arena": "x", "use_tf32": "0"}


@pytest.mark.parametrize(("precision", "given", "other"), [("fp32", "1", "tf32"), ("tf32", "0", "fp32")])
def test_a_provider_option_that_changes_the_precision_is_refused(precision, given, other):
    with pytest.raises(PplgateError, match=rf"--provider-option use_tf32={given} contradicts precision {precision}, "
                                           rf"which pplgate runs with use_tf32=.: ask for precision {other} instead"):
        Target(GPU, precision).check({"use_tf32": given})
    Target(GPU, precision).check({"use_tf32": "0" if given == "1" else "1"})  # the precision's own value is fine


@pytest.mark.parametrize("given", [{"use_tf32": "1"}, {"arena_extend_strategy": "kSameAsRequested"}])
def test_the_cpu_provider_takes_no_provider_options(given):
    """As found: use_tf32=1 with fp32 on the CPU was accepted, as was any option onnxruntime ignores there."""
    name, value = next(iter(given.items()))
    with pytest.raises(PplgateError, match=rf"^--provider-option {name}={value}: CPUExecutionProvider takes no provider "
                                           r"options \(onnxruntime would ignore it\): drop it; --intra-op-threads sets its threads\.$"):
        Target(CPU, "fp32").check(given)
    Target(GCU, "fp32").check(given)  # a provider that may take them: onnxruntime says, once the session is made


@pytest.mark.parametrize("device", [CPU, GCU])
def test_tf32_off_cuda_does_not_apply(device):
    with pytest.raises(NotApplicable) as info:
        Target(device, "tf32").check()
    assert str(info.value) == (f"tf32 is CUDA's TensorFloat-32 matmul mode, which {device.kind.provider} does not have: "
                               f"{device.kind.name} computes fp32 as IEEE fp32; run tf32 on gpu.")


def test_fp16_is_a_conversion_unless_the_provider_has_its_own_mode():
    assert Target(CPU, "fp16").converts_to_fp16 and Target(GPU, "fp16").converts_to_fp16
    assert not Target(GCU, "fp16").converts_to_fp16 and Target(GCU, "fp16").lowered_by_provider
    assert not Target(GPU, "fp32").converts_to_fp16
    assert Target(CPU, "fp16").widens_fp16 and not Target(GPU, "fp16").widens_fp16
    assert Target(CPU, "fp16").computed_as.startswith("onnxruntime's fp16 conversion, most of whose operators CPUExecutionProvider computes in fp32")
