"""onnxruntime sessions for one device and precision, fed and scored the vendor's way."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pplgate.errors import PplgateError, ProviderUnavailable
from pplgate.interface import GraphInterface, feeds, inspect, logits_short
from pplgate.metric import host_token_losses
from pplgate.options import SCORINGS, RuntimeOptions
from pplgate.precision import session_model
from pplgate.scoring import LABELS, LOGITS, TOKEN_LOSSES, labels_of, scoring_model
from pplgate.target import Device, Precision, Target

# What onnxruntime raises when it cannot build or run a session.
_state = ort.capi.onnxruntime_pybind11_state
ORT_ERRORS = (
    _state.Fail,
    _state.NotImplemented,
    _state.InvalidGraph,
    _state.InvalidArgument,
    _state.RuntimeException,
    _state.InvalidProtobuf,
    _state.NoSuchFile,
)
# run_with_iobinding reports a failed run as a plain RuntimeError.
ORT_RUN_ERRORS = ORT_ERRORS + (RuntimeError,)

log = logging.getLogger("pplgate")

# Positions the CPU scorer takes per run: its LogSoftmax buffer is this many
# rows of the vocabulary (26 MB for GPT-2), against 206 MB for a whole block.
SCORED_ROWS = 128


def resolve_scoring(scoring: str, target: Target) -> str:
    if scoring != "auto":
        return scoring
    return "host" if target.lowered_by_provider else "graph"


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
    """An onnxruntime session of a language model, and how its tokens are scored.

    ``scored``: the session runs the model's graph with the scorer appended
    (``pplgate.scored``) and gives the losses itself.  Else, with a ``scorer``,
    the scorer runs as a session of its own beside the model's, the logits
    handed over where they are (where the scored graph cannot be written
    beside the model); without one, the logits are fetched and scored in numpy
    (host scoring, the vendor's way).
    """

    session: ort.InferenceSession
    # logits + labels -> token losses, on the same device, beside the model's session; else None.
    scorer: ort.InferenceSession | None
    iface: GraphInterface
    target: Target
    scoring: str  # "graph" or "host", as reported
    source_path: Path  # the model as given
    # What the session runs, by path: the source, or its fp16 conversion, maybe with the scorer appended.
    model_path: Path
    options: RuntimeOptions
    vocab: int | None = None  # the entries scored: the tokenizer's, a padded vocabulary's padding left out; None: all
    scored: bool = False
    _logits: np.ndarray | None = field(default=None, repr=False)  # the CPU path's logits buffer
    _model: ort.InferenceSession | None = field(default=None, repr=False)  # model_session(), of a scored graph

    @property
    def computed_as(self) -> str:
        """What computes the precision, in words; a model that is fp16 as shipped says so."""
        if not (self.target.converts_to_fp16 and self.model_path == self.source_path):
            return self.target.computed_as
        if self.target.widens_fp16:
            return (
                f"the model's own fp16 weights, as shipped, most of whose operators {self.target.provider} computes "
                "in fp32: no evidence for a device that computes in fp16"
            )
        return "the model's own fp16 weights, as shipped, computed by the provider in fp16"

    @property
    def device(self) -> Device:
        return self.target.device

    @property
    def precision(self) -> Precision:
        return self.target.precision

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def requested_provider_options(self) -> dict[str, str]:
        return self.target.provider_options(self.options.provider_options)

    @property
    def effective_provider_options(self) -> dict[str, str]:
        return self.session.get_provider_options().get(self.device.kind.provider, {})

    def feeds(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """ids [B, T] -> every input the graph declares, in its own dtype (and the labels, for a scored graph)."""
        given = feeds(self.iface, ids)
        if self.scored:
            given[LABELS] = labels_of(ids)
        return given

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """ids [B, T] -> logits [B, T, V] on the host, only the logits fetched.

        Where the CPU scorer keeps a logits buffer, they are written into it:
        the array returned is that buffer, valid until the next run.
        """
        if self.scored:
            return self.model_session().run([self.iface.logits], feeds(self.iface, ids))[0]
        if self.scorer is None or self.device.kind.memory != "cpu":
            return self.session.run([self.iface.logits], self.feeds(ids))[0]
        b, t = ids.shape
        logits = self._logits_buffer(b, t)
        binding = self.session.io_binding()
        inputs = {
            name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in self.feeds(ids).items()
        }  # held: see _run_bound
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        bound = ort.OrtValue.ortvalue_from_numpy(logits)
        binding.bind_ortvalue_output(self.iface.logits, bound)
        self.session.run_with_iobinding(binding)
        return logits

    def model_session(self) -> ort.InferenceSession:
        """The model's own graph on the same target: a scored graph gives only the losses, so its logits (a reference
        comparison's, a probe's) come from here, made the first time they are asked for."""
        if not self.scored:
            return self.session
        if self._model is None:
            self._model = create_session(
                str(self.model_path), self.target, self.options, self.model_path.name, lean=True
            )
        return self._model

    def forward_in_place(self, ids: np.ndarray) -> None:
        """The bare model on ids [B, T], its logits left where the provider made them (--measure-forward).

        What a forward costs on every provider: on a GPU the logits stay on the
        card, as the scored run's do, rather than crossing to the host.
        """
        memory, card = self.device.kind.memory, self.device.index or 0
        binding = self.session.io_binding()
        inputs = {
            name: ort.OrtValue.ortvalue_from_numpy(value, memory, card) for name, value in self.feeds(ids).items()
        }  # held: see _run_bound
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        if memory == "cpu":
            bound = ort.OrtValue.ortvalue_from_numpy(self._logits_buffer(*ids.shape))
            binding.bind_ortvalue_output(self.iface.logits, bound)
        else:
            binding.bind_output(self.iface.logits, memory, card)
        self.session.run_with_iobinding(binding)

    def token_losses(self, ids: np.ndarray) -> np.ndarray:
        """ids [B, T] -> cross-entropy [B, T-1] float32 of positions 0..T-2 against 1..T-1."""
        if self.scored:
            # One run: the logits are made, read and dropped where they are; only the losses come back.
            return self.session.run([TOKEN_LOSSES], self.feeds(ids))[0][:, :-1]
        if self.scorer is not None:
            return self._run_bound(ids)
        logits = self.forward(ids)
        if logits.ndim != 3 or logits.shape[:2] != ids.shape:
            raise logits_short(self.model_path.name, logits.shape[1] if logits.ndim == 3 else 0, ids.shape[1])
        return host_token_losses(logits[..., : self.vocab], ids)

    def _run_bound(self, ids: np.ndarray) -> np.ndarray:
        """Model then scorer through I/O binding; only the losses [B, T-1] come back.

        On the CPU the model writes its logits into a buffer kept here and the
        scorer reads them in place, SCORED_ROWS positions a run: no copy, and
        the scorer's own buffers are a fraction of the logits.  Elsewhere the
        logits stay in the provider's memory, handed to the scorer whole as
        the same OrtValue: the inputs cross once, the logits never do.
        """
        assert self.scorer is not None  # graph scoring
        memory, card = self.device.kind.memory, self.device.index or 0
        b, t = ids.shape
        labels = labels_of(ids)  # [B, T]
        model = self.session.io_binding()
        # Held until the runs end: onnxruntime before 1.10 or so keeps no
        # reference to a bound OrtValue, so a temporary's memory would be
        # freed and reused while the session reads it (wrong losses, seen on 1.9).
        inputs = {
            name: ort.OrtValue.ortvalue_from_numpy(value, memory, card) for name, value in self.feeds(ids).items()
        }
        for name, value in inputs.items():
            model.bind_ortvalue_input(name, value)
        if memory == "cpu":
            logits = self._logits_buffer(b, t)  # [B, T, V]
            bound_logits = ort.OrtValue.ortvalue_from_numpy(logits)
            model.bind_ortvalue_output(self.iface.logits, bound_logits)
            self.session.run_with_iobinding(model)
            rows, row_labels = logits.reshape(1, b * t, -1), labels.reshape(1, b * t)  # views
            runs = [
                self.scorer.run(
                    [TOKEN_LOSSES], {LOGITS: rows[:, r : r + SCORED_ROWS], LABELS: row_labels[:, r : r + SCORED_ROWS]}
                )[0]
                for r in range(0, b * t, SCORED_ROWS)
            ]
            losses = np.concatenate(runs, axis=1).reshape(b, t)
        else:
            model.bind_output(self.iface.logits, memory, card)  # only the logits: present.* are not fetched
            self.session.run_with_iobinding(model)
            scorer = self.scorer.io_binding()
            scorer.bind_ortvalue_input(LOGITS, model.get_outputs()[0])
            bound_labels = ort.OrtValue.ortvalue_from_numpy(labels, memory, card)  # held for the same reason
            scorer.bind_ortvalue_input(LABELS, bound_labels)
            scorer.bind_output(TOKEN_LOSSES, "cpu")
            self.scorer.run_with_iobinding(scorer)
            losses = scorer.copy_outputs_to_cpu()[0]
        return losses[:, :-1]  # the last position has no next id

    def _logits_buffer(self, b: int, t: int) -> np.ndarray:
        """[B, T, V] in the logits' dtype, made once per batch shape and reused."""
        if self._logits is None or self._logits.shape[:2] != (b, t):
            self._logits = None  # let the old buffer go before the new one is made
            assert self.iface.vocab_size is not None  # graph scoring needs it, open_session made sure
            self._logits = np.empty((b, t, self.iface.vocab_size), dtype=self.iface.logits_dtype)
        return self._logits


def create_session(
    what: str | bytes, target: Target, options: RuntimeOptions, name: str, spin: bool = True, lean: bool = False
) -> ort.InferenceSession:
    """An InferenceSession on the target's device alone, refusing a silent fallback to another provider.

    The target was checked when the run started (``pipeline.check_target``).
    ``spin`` False: the session's threads sleep as soon as a run ends, rather
    than spinning for the next one on cores another session needs.
    """
    device, precision = target.device, target.precision
    check_provider(device)  # every session is made here: none on a provider this build lacks
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if lean:
        # A session beside another (a reference): no memory arena kept between
        # runs: its activations are freed as soon as each run ends.
        so.enable_cpu_mem_arena = False
    provider_options = target.provider_options(options.provider_options)
    # The vendor's GCU build reads its precision from the environment when the
    # session is created: 1 is fp16 mixed precision (its default), 0 is fp32.
    env_value = "1" if precision is Precision.FP16 else "0"
    try:
        with _environment(device.kind.fp16_env, env_value):
            session = ort.InferenceSession(what, so, providers=[(device.kind.provider, provider_options)])
    except _state.InvalidProtobuf as err:
        raise PplgateError(
            f"model file {name} is not a readable ONNX model ({str(err).strip().splitlines()[0]}): check that it is a "
            f"complete .onnx file."
        ) from err
    except ORT_ERRORS as err:
        first_line = str(err).strip().splitlines()[0]
        hint = (
            f"use --precision fp32 on {device.kind.name}"
            if precision is Precision.FP16
            else "check the model and the provider options"
        )
        raise PplgateError(
            f"onnxruntime cannot build a {precision} session of {name} on {device.spec} ({first_line}): {hint}."
        ) from err
    got = session.get_providers()
    if not got or got[0] != device.kind.provider:
        raise ProviderUnavailable(
            f"onnxruntime created the {device.spec} session on {', '.join(got)} instead of {device.kind.provider} "
            f"(a silent fallback, usually missing drivers or libraries): fix the {device.kind.name} installation.",
            provider=device.kind.provider,
        )
    _refuse_unknown_options(
        options.provider_options, session.get_provider_options().get(device.kind.provider, {}), device
    )
    return session


def _refuse_unknown_options(given: dict[str, str], effective: dict[str, str], device: Device) -> None:
    """An option the provider does not list among its own would be ignored: refused, where the provider lists them
    (CUDA does; a provider that lists none cannot be checked, and its report shows what it ran with)."""
    unknown = sorted(set(given) - set(effective))
    if effective and unknown:
        raise PplgateError(
            f"--provider-option {unknown[0]} is not an option of {device.kind.provider}, which would ignore it (its "
            f"options: {', '.join(sorted(effective))}): check its spelling."
        )


def open_session(
    model_path: Path,
    target: Target,
    scoring: str = "auto",
    options: RuntimeOptions | None = None,
    lean: bool = False,
    cache_dir: Path | None = None,
    vocab: int | None = None,
    append: bool = True,
) -> LMSession:
    """The model's session on ``target``, scoring the first ``vocab`` entries of its logits (None: all).

    Graph scoring runs the model's graph with the scorer appended, written
    once beside it; where that cannot be written (a read-only folder), the
    model's opset is too old to append to, or ``append`` is False, the scorer
    runs as a session of its own.  Host scoring runs the model as given.
    """
    from pplgate.fileio import WriteFailed, user_cache_dir
    from pplgate.modelfiles import model_identity
    from pplgate.scored import scored_model

    options = options or RuntimeOptions()
    if scoring not in SCORINGS:
        raise PplgateError(f"unknown scoring {scoring!r}: use one of {', '.join(SCORINGS)}.")
    scoring = resolve_scoring(scoring, target)
    source_path = model_path = Path(model_path)
    if source_path.stat().st_size == 0:
        raise PplgateError(f"model file {source_path} is empty: delete it and download or export the model again.")
    cache = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    model_path = session_model(source_path, target, cache)  # the conversion is by content: hashes in the cache
    if scoring == "graph" and append:
        try:
            scored = scored_model(model_path, model_identity(model_path, cache).sha256, vocab, cache)
        except WriteFailed as err:
            log.info("scoring %s in a session of its own: %s", model_path.name, err)
            scored = None
        if scored is not None:
            session = create_session(str(scored), target, options, model_path.name, lean=lean)
            iface = inspect(session, model_path.name)
            return LMSession(
                session, None, iface, target, scoring, source_path, model_path, options, vocab, scored=True
            )
    session = create_session(str(model_path), target, options, model_path.name, lean=lean)
    iface = inspect(session, model_path.name)
    if scoring == "graph" and iface.vocab_size is None:
        # Where the vocabulary stays symbolic, the logits cannot be given a buffer beforehand.
        scoring = "host"
    scorer = None
    if scoring == "graph":
        assert iface.vocab_size is not None
        # The scorer is pplgate's own float32 graph: created at fp32 whatever the run's precision.
        graph = scoring_model(vocab or iface.vocab_size, iface.logits_dtype, iface.vocab_size)
        # It runs between the model's runs: spinning, its threads would take cores from the model's next run.
        scorer = create_session(
            graph.SerializeToString(),
            Target(target.device, Precision.FP32),
            options,
            "pplgate's scoring graph",
            spin=False,
        )
    return LMSession(session, scorer, iface, target, scoring, source_path, model_path, options, vocab)
