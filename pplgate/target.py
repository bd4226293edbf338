"""What a run is on: a device (an execution provider, maybe one card of several) at a precision.

One table of devices (adding one is adding a row) and one value, ``Target``,
made once from its text (``Target.parse("gcu:1-fp16")``) and checked where it
is made; its ``key`` is the golden entry's key (``gcu-fp16``).  Everything
that depends on the pair, the provider options a precision sets, whether the
model is converted to fp16, what computes it, is a property of the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pplgate.errors import NotApplicable, PplgateError


class Precision(str, Enum):
    """fp32 is IEEE fp32 on every device; tf32 is CUDA's TensorFloat-32 matmuls
    (fp32 data, 10-bit mantissa products), a mode of its own, never fp32's."""

    FP32 = "fp32"
    FP16 = "fp16"
    TF32 = "tf32"

    # Printed as its value everywhere (f-strings, str(), JSON), on every Python.
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def parse(cls, text: str) -> Precision:
        value = str(text).strip().lower()
        for p in cls:
            if p.value == value:
                return p
        raise PplgateError(f"unknown precision {text!r}: use one of {', '.join(p.value for p in cls)}.")


PRECISIONS = tuple(p.value for p in Precision)


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
    # onnxruntime reads no provider options for it (the CPU provider) and
    # would ignore any given: they are refused instead.
    takes_options: bool = True


DEVICES: dict[str, DeviceKind] = {
    kind.name: kind
    for kind in (
        DeviceKind("cpu", "CPUExecutionProvider", "onnxruntime", widens_fp16=True, takes_options=False),
        DeviceKind("gpu", "CUDAExecutionProvider", "onnxruntime-gpu", memory="cuda", tf32_option="use_tf32"),
        DeviceKind(
            "gcu",
            "TopsInferenceExecutionProvider",
            "Enflame's onnxruntime build (TopsInference)",
            fp16_env="ORT_TOPSINFERENCE_FP16_ENABLE",
        ),
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

    @classmethod
    def parse(cls, text: str) -> Device:
        """``cpu``, ``gpu``, ``gcu:3`` ... -> Device; anything else is refused with the known names."""
        name, _, index = str(text).strip().lower().partition(":")
        if name not in DEVICES:
            raise PplgateError(
                f"unknown device {text!r}: use one of {', '.join(DEVICES)}, optionally with a card index such as gpu:1."
            )
        if not index:
            return cls(DEVICES[name])
        if not index.isdigit():
            raise PplgateError(
                f"device {text!r} has a card index that is not a whole number >= 0: write it as {name}:0, {name}:1 ..."
            )
        if name == "cpu":
            raise PplgateError(f"device {text!r} has a card index, but the CPU provider has no cards: write cpu.")
        return cls(DEVICES[name], int(index))

    @property
    def spec(self) -> str:
        return self.kind.name if self.index is None else f"{self.kind.name}:{self.index}"

    def card(self, worker: int | None, cards: int | None) -> Device:
        """The card a pytest-xdist worker uses for a device given without an index.

        Worker n of a node with ``cards`` cards takes card n mod cards, so
        ``pytest -n 8 -k gcu`` on an 8-card node puts one worker on each card.
        An explicit index (gcu:3), the CPU, and runs without workers are left alone.
        """
        if self.index is not None or self.kind.name == "cpu" or worker is None or not cards:
            return self
        return Device(self.kind, worker % cards)


@dataclass(frozen=True)
class Target:
    """A device at a precision: what one session runs on, and what one golden entry is for."""

    device: Device
    precision: Precision

    def __post_init__(self) -> None:
        if not isinstance(self.device, Device):
            raise TypeError(f"Target.device must be a Device, not {type(self.device).__name__}")
        if not isinstance(self.precision, Precision):
            object.__setattr__(self, "precision", Precision.parse(self.precision))

    @classmethod
    def parse(cls, text: str) -> Target:
        """``DEVICE-PRECISION`` (cpu-fp32, gpu:1-fp16) -> Target."""
        device, sep, precision = str(text).strip().rpartition("-")
        if not sep or not device:
            raise PplgateError(f"{text!r} is not of the form DEVICE-PRECISION: write e.g. cpu-fp32 or gpu:1-fp16.")
        return cls(Device.parse(device), Precision.parse(precision))

    @classmethod
    def of(cls, device: str, precision: str) -> Target:
        return cls(Device.parse(device), Precision.parse(precision))

    @property
    def key(self) -> str:
        """The golden entry's key: the device kind without its card index, and the precision."""
        return f"{self.device.kind.name}-{self.precision}"

    @property
    def spec(self) -> str:
        """As written on a command line: with the card index."""
        return f"{self.device.spec}-{self.precision}"

    @property
    def provider(self) -> str:
        return self.device.kind.provider

    def on_card(self, worker: int | None, cards: int | None) -> Target:
        return Target(self.device.card(worker, cards), self.precision)

    def check(self, provider_options: dict[str, str] | None = None) -> None:
        """Before anything is read: a precision the device does not have (tf32 off CUDA) does not apply
        (NotApplicable, a skip), and a provider option that would make it another precision is refused."""
        kind = self.device.kind
        if self.precision is Precision.TF32 and kind.tf32_option is None:
            raise NotApplicable(
                f"tf32 is CUDA's TensorFloat-32 matmul mode, which {kind.provider} does not have: "
                f"{kind.name} computes fp32 as IEEE fp32; run tf32 on gpu."
            )
        given_options = provider_options or {}
        if given_options and not kind.takes_options:
            name, value = next(iter(given_options.items()))
            raise PplgateError(
                f"--provider-option {name}={value}: {kind.provider} takes no provider options (onnxruntime would "
                "ignore it): drop it; --intra-op-threads sets its threads."
            )
        option = kind.tf32_option
        given = given_options.get(option) if option else None
        if option is None or given is None:
            return
        wanted = self.precision_options()[option]
        if str(given).strip() != wanted:
            other = "tf32" if wanted == "0" else "fp32"
            raise PplgateError(
                f"--provider-option {option}={given} contradicts precision {self.precision}, "
                f"which pplgate runs with {option}={wanted}: ask for precision {other} instead "
                "(fp32 means IEEE fp32, tf32 is its own precision)."
            )

    def precision_options(self) -> dict[str, str]:
        """The provider options the precision sets: TF32 on for tf32 alone, off for fp32 (and fp16's fp32 parts)."""
        option = self.device.kind.tf32_option
        return {} if option is None else {option: "1" if self.precision is Precision.TF32 else "0"}

    def provider_options(self, given: dict[str, str] | None = None) -> dict[str, str]:
        """Every option a session gets: the card, the user's (which win over the card), the precision's (which win over
        all).
        """
        card = {} if self.device.index is None else {"device_id": str(self.device.index)}
        return {**card, **(given or {}), **self.precision_options()}

    @property
    def converts_to_fp16(self) -> bool:
        """The one rule for fp16: a converted model, unless the provider has its own fp16
        switch (the vendor's GCU build), which then lowers the precision of the fp32 model itself."""
        return self.precision is Precision.FP16 and self.device.kind.fp16_env is None

    @property
    def lowered_by_provider(self) -> bool:
        """fp16 as the provider's own mixed precision on the fp32 model."""
        return self.precision is Precision.FP16 and self.device.kind.fp16_env is not None

    @property
    def widens_fp16(self) -> bool:
        """fp16 on a provider that computes most of it in fp32: no evidence for a device that computes in fp16."""
        return self.precision is Precision.FP16 and self.device.kind.widens_fp16

    @property
    def computed_as(self) -> str:
        """What computes the precision on the device, in words: reports and summaries say it beside the number."""
        kind = self.device.kind
        if self.lowered_by_provider:
            return f"the provider's own fp16 mixed precision ({kind.fp16_env}=1) on the fp32 model"
        if self.widens_fp16:
            return (
                f"onnxruntime's fp16 conversion, most of whose operators {kind.provider} computes in fp32: "
                "no evidence for a device that computes in fp16"
            )
        if self.precision is Precision.FP16:
            return "onnxruntime's fp16 conversion of the model, computed by the provider in fp16"
        if self.precision is Precision.TF32:
            return f"fp32 with TF32 matmuls ({kind.tf32_option}=1)"
        tf32 = f", TF32 off ({kind.tf32_option}=0)" if kind.tf32_option else ""
        return f"IEEE fp32{tf32}"

    def __str__(self) -> str:
        return self.spec


def golden_key(text: str) -> Target:
    """A golden entry's key: ``<device>-<precision>`` of known names, lower case, no card index."""
    target = Target.parse(text)
    if target.key != text:
        raise PplgateError(f"{text!r} is not written as a golden key: write {target.key}.")
    return target
