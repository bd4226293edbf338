"""The gate's state for one pytest session: settings, and what was built once to share.

Built in ``pytest_configure`` and kept in ``config.stash``.  Token blocks,
resolved models, onnxruntime sessions and evaluations are made on first use
and shared by every test that needs them; a failure to make one is kept too,
so that the next test that needs it skips at once instead of retrying a
download that cannot succeed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pplgate.data import TokenStream
from pplgate.compare import compare_with_reference
from pplgate.devices import Device, assign_card, parse_device, parse_target
from pplgate.evaluate import Evaluation, evaluate
from pplgate.golden import GoldenCase, GoldenError, Limits, load_case
from pplgate.pipeline import Sources, build_session, load_blocks
from pplgate.report import final_report
from pplgate.runtime import LMSession, RuntimeOptions, check_provider, open_session
from pplgate.sources import BUILTIN_PREFIX


@dataclass(frozen=True)
class Target:
    """What one gate test checks: a case on a device at a precision."""

    case: GoldenCase
    device: Device
    precision: str

    @property
    def key(self) -> str:
        """The golden entry's key: device kind without card index, and precision."""
        return f"{self.device.kind.name}-{self.precision}"

    @property
    def id(self) -> str:
        return f"{self.case.name}-{self.key}"


@dataclass(frozen=True)
class BrokenCase:
    """A golden file that could not be read: its test fails with the reason."""

    path: Path
    error: GoldenError

    @property
    def id(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class GateSettings:
    golden_dir: Path
    model_dir: Path
    cache_dir: Path
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    model: str | None  # None: each case's own model
    dataset: str | None
    tokenizer: str | None
    strict: bool
    update: bool
    report_path: Path | None
    batch_size: int
    scoring: str
    options: RuntimeOptions
    bench_blocks: int  # blocks timed by each throughput test
    bench_rounds: int
    worker: int | None = None  # the pytest-xdist worker's number (gw3 -> 3), None without xdist
    cards: int | None = None  # cards per device kind on this node, for spreading workers over them


@dataclass
class GateSession:
    settings: GateSettings
    _made: dict = field(default_factory=dict)  # key -> value or the exception that making it raised

    def _once(self, key, make):
        if key not in self._made:
            try:
                self._made[key] = make()
            except Exception as err:  # kept and re-raised to every later caller
                self._made[key] = err
        value = self._made[key]
        if isinstance(value, Exception):
            raise value
        return value

    def targets(self) -> list[Target | BrokenCase]:
        """Every (case, device, precision) the golden folder and the settings call for."""
        out: list[Target | BrokenCase] = []
        for path in sorted(self.settings.golden_dir.glob("*.json")):
            try:
                case = load_case(path)
            except GoldenError as err:
                out.append(BrokenCase(path, err))
                continue
            s = self.settings
            out += [Target(case, assign_card(parse_device(d), s.worker, s.cards), p) for d in s.devices for p in s.precisions]
        return out

    def sources(self, case: GoldenCase) -> Sources:
        s = self.settings
        model = case.sources["model"]
        # A built model is part of the case's definition; real models follow --model.
        if s.model and not model.startswith(BUILTIN_PREFIX):
            model = s.model
        return Sources(model, s.dataset or case.sources["dataset"], s.tokenizer or case.sources["tokenizer"], s.model_dir, s.cache_dir)

    def blocks(self, case: GoldenCase) -> tuple[TokenStream, np.ndarray]:
        src = self.sources(case)
        return self._once(("blocks", src.dataset, src.tokenizer, case.max_blocks), lambda: load_blocks(src, case.max_blocks))

    def session(self, target: Target) -> LMSession:
        src = self.sources(target.case)
        tokens, _ = self.blocks(target.case)
        key = ("session", src.model, target.device, target.precision)
        return self._once(key, lambda: build_session(src, target.device, target.precision, tokens, self.settings.scoring, self.settings.options))

    def evaluation(self, target: Target) -> tuple[dict, Evaluation]:
        def make() -> tuple[dict, Evaluation]:
            session = self.session(target)
            tokens, blocks = self.blocks(target.case)
            ev = evaluate(session, blocks, self.settings.batch_size)
            src = self.sources(target.case)
            report = final_report(model=src.model, dataset=src.dataset, tokenizer=src.tokenizer, session=session, evaluation=ev, tokens=tokens)
            return report, ev

        return self._once(("evaluation", target.case.name, target.device, target.precision), make)

    def reference_summary(self, target: Target, limits: Limits) -> dict:
        """KL, top-1 agreement and perplexity ratio of the target against ``limits.reference``."""
        def make() -> dict:
            reference, precision = parse_target(limits.reference)
            check_provider(reference)
            session = self.session(target)
            options = self.settings.options
            run = session if session.scoring == "host" else open_session(session.source_path, target.device, target.precision, "host", options)
            ref = open_session(session.source_path, reference, precision, "host", options)
            _, blocks = self.blocks(target.case)
            return compare_with_reference(run, ref, blocks[: limits.blocks], self.settings.batch_size).summary()

        return self._once(("reference", target.case.name, target.device, target.precision, limits.reference, limits.blocks), make)
