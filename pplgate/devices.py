"""Device names, the execution providers behind them, and precisions.

One table: adding a device is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass

from pplgate.errors import NotApplicable, PplgateError

# fp32 is IEEE fp32 on every device; tf32 is CUDA's TensorFloat-32 matmuls
# (fp32 data, 10-bit mantissa products), a mode of its own, never fp32's.
PRECISIONS = ("fp32", "fp16", "tf32")


@dataclass(frozen=True)
class DeviceKind:
    name: str
    provider: str
    # The pip distribution (or vendor build) that carries the provider, named
    # in the message when this onnxruntime lacks it.
    package: str
    # Providers that switch to fp16 themselves through an environment variable
    # (the vendor's GCU build); None means fp16 is a converted model.
    fp16_env: str | None = None
    # Where onnxruntime's I/O binding places inputs for this provider, so they
    # are copied to the device once and the logits never come back.
    memory: str = "cpu"
    # The provider option that switches TF32 matmuls, for providers that have
    # them; it is set for every session, so that fp32 is never TF32 by default
    # (the CUDA provider's default is use_tf32=1).
    tf32_option: str | None = None
    # The provider computes most fp16 operators in fp32 (the CPU provider):
    # its fp16 results say nothing of a device that computes in fp16.
    widens_fp16: bool = False


DEVICES: dict[str, DeviceKind] = {
    kind.name: kind
    for kind in (
        DeviceKind("cpu", "CPUExecutionProvider", "onnxruntime", widens_fp16=True),
        DeviceKind("gpu", "CUDAExecutionProvider", "onnxruntime-gpu", memory="cuda", tf32_option="use_tf32"),
        DeviceKind("gcu", "TopsInferenceExecutionProvider", "Enflame's onnxruntime build (TopsInference)", fp16_env="ORT_TOPSINFERENCE_FP16_ENABLE"),
        DeviceKind("trt", "TensorrtExecutionProvider", "onnxruntime-gpu with TensorRT", memory="cuda"),
        DeviceKind("rocm", "ROCMExecutionProvider", "onnxruntime-rocm"),
        DeviceKind("openvino", "OpenVINOExecutionProvider", "onnxruntime-openvino"),
        DeviceKind("dml", "DmlExecutionProvider", "onnxruntime-directml"),
    )
}


@dataclass(frozen=True)
class Device:
    kind: DeviceKind
    # A card on a node with several: the provider's device_id.  None: the
    # provider's default card.
    index: int | None = None

    @property
    def spec(self) -> str:
        return self.kind.name if self.index is None else f"{self.kind.name}:{self.index}"

    def provider_options(self) -> dict[str, str]:
        return {} if self.index is None else {"device_id": str(self.index)}


def parse_device(text: str) -> Device:
    """``cpu``, ``gpu``, ``gcu:3`` ... -> Device; anything else is refused with the known names."""
    name, _, index = text.strip().lower().partition(":")
    if name not in DEVICES:
        raise PplgateError(f"unknown device {text!r}: use one of {', '.join(DEVICES)}, optionally with a card index such as gpu:1.")
    if not index:
        return Device(DEVICES[name])
    if not index.isdigit():
        raise PplgateError(f"device {text!r} has a card index that is not a whole number >= 0: write it as {name}:0, {name}:1 ...")
    if name == "cpu":
        raise PplgateError(f"device {text!r} has a card index, but the CPU provider has no cards: write cpu.")
    return Device(DEVICES[name], int(index))


def assign_card(device: Device, worker: int | None, cards: int | None) -> Device:
    """The card a pytest-xdist worker uses for a device given without an index.

    Worker n of a node with ``cards`` cards takes card n mod cards, so
    ``pytest -n 8 -k gcu`` on an 8-card node puts one worker on each card.  An
    explicit index (gcu:3), the CPU, and runs without workers are left alone.
    """
    if device.index is not None or device.kind.name == "cpu" or worker is None or not cards:
        return device
    return Device(device.kind, worker % cards)


def parse_precision(text: str) -> str:
    value = text.strip().lower()
    if value not in PRECISIONS:
        raise PplgateError(f"unknown precision {text!r}: use one of {', '.join(PRECISIONS)}.")
    return value


def check_precision(device: Device, precision: str) -> None:
    """tf32 exists only where the provider has a TF32 switch: elsewhere the target does not apply (a skip, never a failure)."""
    if precision == "tf32" and device.kind.tf32_option is None:
        raise NotApplicable(f"tf32 is CUDA's TensorFloat-32 matmul mode, which {device.kind.provider} does not have: "
                            f"{device.kind.name} computes fp32 as IEEE fp32; run tf32 on gpu.")


def precision_provider_options(device: Device, precision: str) -> dict[str, str]:
    """The provider options a precision sets: TF32 on for tf32 alone, off for fp32 (and fp16's fp32 parts)."""
    if device.kind.tf32_option is None:
        return {}
    return {device.kind.tf32_option: "1" if precision == "tf32" else "0"}


def refuse_precision_options(device: Device, precision: str, provider_options: dict[str, str]) -> None:
    """A provider option that would make a precision another one: refused, pointing at the precision that is meant."""
    option = device.kind.tf32_option
    if option is None or option not in provider_options:
        return
    wanted = precision_provider_options(device, precision)[option]
    if str(provider_options[option]).strip() != wanted:
        other = "tf32" if wanted == "0" else "fp32"
        raise PplgateError(f"--provider-option {option}={provider_options[option]} contradicts precision {precision}, "
                           f"which pplgate runs with {option}={wanted}: ask for precision {other} instead (fp32 means IEEE fp32, tf32 is its own precision).")


def computed_as(device: Device, precision: str) -> str:
    """What computes a precision on a device, in words: reports and summaries say it beside the number."""
    if precision == "fp16" and device.kind.fp16_env is not None:
        return f"the provider's own fp16 mixed precision ({device.kind.fp16_env}=1) on the fp32 model"
    if precision == "fp16" and device.kind.widens_fp16:
        return (f"onnxruntime's fp16 conversion, most of whose operators {device.kind.provider} computes in fp32: "
                "no evidence for a device that computes in fp16")
    if precision == "fp16":
        return "onnxruntime's fp16 conversion of the model, computed by the provider in fp16"
    if precision == "tf32":
        return f"fp32 with TF32 matmuls ({device.kind.tf32_option}=1)"
    tf32 = f", TF32 off ({device.kind.tf32_option}=0)" if device.kind.tf32_option else ""
    return f"IEEE fp32{tf32}"


def parse_target(text: str) -> tuple[Device, str]:
    """``DEVICE-PRECISION`` (cpu-fp32, gpu:1-fp16) -> (Device, precision)."""
    device, sep, precision = text.strip().rpartition("-")
    if not sep:
        raise PplgateError(f"{text!r} is not of the form DEVICE-PRECISION: write e.g. cpu-fp32 or gpu:1-fp16.")
    return parse_device(device), parse_precision(precision)


def converts_to_fp16(device: Device, precision: str) -> bool:
    """Whether ``precision`` on ``device`` runs an fp16 conversion of the model.

    The one rule for fp16: a converted model, unless the provider has its own
    fp16 switch (the vendor's GCU build), which then lowers the precision of
    the fp32 model itself.
    """
    return precision == "fp16" and device.kind.fp16_env is None


def widened(key: str) -> bool:
    """Whether a golden key (``cpu-fp16``) names fp16 on a provider that computes it in fp32."""
    device, _, precision = key.rpartition("-")
    return precision == "fp16" and device in DEVICES and DEVICES[device].widens_fp16
