"""Device names, the execution providers behind them, and precisions.

One table: adding a device is adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass

from pplgate.errors import PplgateError

PRECISIONS = ("fp32", "fp16")


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


DEVICES: dict[str, DeviceKind] = {
    kind.name: kind
    for kind in (
        DeviceKind("cpu", "CPUExecutionProvider", "onnxruntime"),
        DeviceKind("gpu", "CUDAExecutionProvider", "onnxruntime-gpu", memory="cuda"),
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
