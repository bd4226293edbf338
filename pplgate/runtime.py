"""onnxruntime sessions for one device and precision, fed and scored the vendor's way."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pplgate.devices import Device
from pplgate.errors import PplgateError, ProviderUnavailable
from pplgate.graph import IDS, MASK, POSITIONS, GraphInterface, inspect, load
from pplgate.metric import host_token_losses
from pplgate.precision import convert_fp16
from pplgate.scoring import TOKEN_LOSSES, append_scoring

# What onnxruntime raises when it cannot build or run a session.
_state = ort.capi.onnxruntime_pybind11_state
ORT_ERRORS = (_state.Fail, _state.NotImplemented, _state.InvalidGraph, _state.InvalidArgument,
              _state.RuntimeException, _state.InvalidProtobuf, _state.NoSuchFile)
# run_with_iobinding reports a failed run as a plain RuntimeError.
ORT_RUN_ERRORS = ORT_ERRORS + (RuntimeError,)

# "graph": cross-entropy appended to the model, only losses leave the runtime.
# "host": the vendor's way, logits fetched and scored in float32 numpy.
# "auto": graph, except where the provider lowers the graph's precision itself
# (GCU fp16 mixed precision): there the appended scoring could run in fp16,
# and the vendor's figures were scored in float32 on the host.
SCORINGS = ("auto", "graph", "host")


def resolve_scoring(scoring: str, device: Device, precision: str) -> str:
    if scoring != "auto":
        return scoring
    return "host" if precision == "fp16" and device.kind.fp16_env is not None else "graph"


@dataclass(frozen=True)
class RuntimeOptions:
    """Settings that change speed but not the result; recorded in every report."""

    intra_op_threads: int = 0  # 0: onnxruntime's default, one per physical core
    provider_options: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def _environment(name: str | None, value: str) -> Iterator[None]:
    """Sets one variable for the duration of a session's creation, then restores it."""
    if name is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def check_provider(device: Device) -> None:
    available = ort.get_available_providers()
    if device.kind.provider not in available:
        raise ProviderUnavailable(
            f"{device.kind.provider} (device {device.kind.name}) is not in this onnxruntime {ort.__version__}, "
            f"which has {', '.join(available)}: install {device.kind.package} to test {device.kind.name}.",
            provider=device.kind.provider,
        )


@dataclass
class LMSession:
    """One onnxruntime session of a language model, ready to score blocks."""

    session: ort.InferenceSession
    iface: GraphInterface
    device: Device
    precision: str
    scoring: str
    source_path: Path  # the model as given
    model_path: Path  # what the session loaded: the source, or its fp16 conversion
    options: RuntimeOptions

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def requested_provider_options(self) -> dict[str, str]:
        return self.device.provider_options() | self.options.provider_options

    @property
    def effective_provider_options(self) -> dict[str, str]:
        return self.session.get_provider_options().get(self.device.kind.provider, {})

    def feeds(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """ids [B, T] -> every input the graph declares, in its own dtype."""
        values = {
            IDS: ids,
            MASK: np.ones_like(ids),  # the vendor attends to every position
            POSITIONS: np.broadcast_to(np.arange(ids.shape[1]), ids.shape),
        }
        return {name: np.ascontiguousarray(values[name], dtype=dtype) for name, dtype in self.iface.input_dtypes.items()}

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """The bare model: ids [B, T] -> logits [B, T, V].  Host-scoring sessions only."""
        return self.session.run([self.iface.logits], self.feeds(ids))[0]

    def token_losses(self, ids: np.ndarray) -> np.ndarray:
        """ids [B, T] -> cross-entropy [B, T-1] float32 of positions 0..T-2 against 1..T-1."""
        if self.scoring == "graph":
            return self._run_bound(ids)
        return host_token_losses(self.forward(ids), ids)

    def _run_bound(self, ids: np.ndarray) -> np.ndarray:
        """session.run through I/O binding: inputs placed in the provider's memory, losses back.

        On CUDA the inputs go to the card in one copy each and only the
        [B, T-1] losses return; on the CPU it is the same as session.run.
        """
        memory, card = self.device.kind.memory, self.device.index or 0
        binding = self.session.io_binding()
        for name, value in self.feeds(ids).items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, memory, card))
        binding.bind_output(TOKEN_LOSSES, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def open_session(
    model_path: Path,
    device: Device,
    precision: str,
    scoring: str = "auto",
    options: RuntimeOptions | None = None,
) -> LMSession:
    """Builds the session, refusing any that would not run where it was asked to."""
    options = options or RuntimeOptions()
    if scoring not in SCORINGS:
        raise PplgateError(f"unknown scoring {scoring!r}: use one of {', '.join(SCORINGS)}.")
    scoring = resolve_scoring(scoring, device, precision)
    check_provider(device)
    source_path = model_path = Path(model_path)
    if precision == "fp16" and device.kind.fp16_env is None:
        model_path = convert_fp16(source_path)
    model = load(model_path)
    iface = inspect(model, model_path.name)
    if scoring == "graph":
        model = append_scoring(model, iface)

    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    provider_options = device.provider_options() | options.provider_options  # the user's win over the card index
    # The vendor's GCU build reads its precision from the environment when the
    # session is created: 1 is fp16 mixed precision (its default), 0 is fp32.
    env_value = "1" if precision == "fp16" else "0"
    try:
        with _environment(device.kind.fp16_env, env_value):
            session = ort.InferenceSession(
                model.SerializeToString(), so, providers=[(device.kind.provider, provider_options)]
            )
    except ORT_ERRORS as err:
        first_line = str(err).strip().splitlines()[0]
        hint = f"use --precision fp32 on {device.kind.name}" if precision == "fp16" else "check the model and the provider options"
        raise PplgateError(f"onnxruntime cannot build a {precision} session of {model_path.name} on {device.spec} ({first_line}): {hint}.") from err
    got = session.get_providers()
    if not got or got[0] != device.kind.provider:
        raise ProviderUnavailable(
            f"onnxruntime created the {device.spec} session on {', '.join(got)} instead of {device.kind.provider} "
            f"(a silent fallback, usually missing drivers or libraries): fix the {device.kind.name} installation.",
            provider=device.kind.provider,
        )
    return LMSession(session, iface, device, precision, scoring, source_path, model_path, options)
