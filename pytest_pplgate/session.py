"""The gate's state for one pytest session: settings, and what was made once to share.

Built in ``pytest_configure`` and kept in ``config.stash``.  The work is
``pplgate.pipeline``'s steps; this only keeps what each made (token blocks,
onnxruntime sessions, evaluations), so that every test needing it shares it.
A failure to make one is kept too, so that the next test that needs it skips
or fails at once instead of retrying a download that cannot succeed.

Light at import, as the whole plugin: the pipeline is imported when a test
first needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pplgate.devices import Device, assign_card, parse_device
from pplgate.errors import GoldenError
from pplgate.options import RunSettings
from pplgate.sources import BUILTIN_PREFIX

if TYPE_CHECKING:
    from pplgate.blocks import Blocks
    from pplgate.data import TokenStream
    from pplgate.evaluate import Evaluation
    from pplgate.golden import GoldenCase, Limits
    from pplgate.runtime import LMSession
    from pplgate.sourcefolder import Sources


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
    """A (device, precision) of a golden file that could not be read: its test fails with the reason.

    It has the id and markers the file's test would have had, so any -k or -m
    that would select that test selects the failure.
    """

    path: Path
    error: GoldenError
    device: Device
    precision: str

    @property
    def id(self) -> str:
        return f"{self.path.stem}-{self.device.kind.name}-{self.precision}"


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
    sources: Path | None  # --sources: the folder remote sources are read from
    strict: bool
    update: bool
    report_path: Path | None
    run: RunSettings  # batch size, scoring and onnxruntime options of every session
    bench_blocks: int  # blocks timed by each throughput test
    bench_rounds: int
    throughput_fail: float | None = None  # --gate-throughput-fail: a slowdown beyond this fraction and the noise fails
    drift_fail: bool = False  # --gate-drift-fail: a perplexity that moved on the same model and blocks fails
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

    def release(self, kinds: tuple[str, ...] = ("session",)) -> None:
        """Drops what was made of ``kinds`` (onnxruntime sessions hold the models and their buffers); made again if asked for."""
        for key in [k for k in self._made if k[0] in kinds]:
            del self._made[key]

    def golden_files(self) -> list[Path]:
        """The case files; a folder that is missing or holds none is a usage error, never an empty gate."""
        folder = self.settings.golden_dir
        if not folder.is_dir():
            raise GoldenError(f"golden folder {folder} does not exist: pass --gate-golden-dir with the folder of the case files (golden/ of the repository).")
        files = sorted(folder.glob("*.json"))
        if not files:
            raise GoldenError(f"golden folder {folder} holds no case (*.json): pass --gate-golden-dir with the folder of the case files, or add one (see README, Cases).")
        return files

    def targets(self) -> list[Target | BrokenCase]:
        """Every (case, device, precision) the golden folder and the settings call for."""
        from pplgate.golden import load_case

        s = self.settings
        out: list[Target | BrokenCase] = []
        for path in self.golden_files():
            devices = [assign_card(parse_device(d), s.worker, s.cards) for d in s.devices]
            try:
                case = load_case(path)
            except GoldenError as err:
                out += [BrokenCase(path, err, d, p) for d in devices for p in s.precisions]
                continue
            out += [Target(case, d, p) for d in devices for p in s.precisions]
        return out

    def ignored_options(self) -> list[str]:
        """A line per case that does not follow an option given: a built model is part of its case's definition."""
        if not self.settings.model:
            return []
        from pplgate.golden import load_case

        try:
            files = self.golden_files()
        except GoldenError:
            return []  # collection says so
        lines = []
        for path in files:
            try:
                model = load_case(path).sources["model"]
            except GoldenError:
                continue  # its own tests fail and say why
            if model.startswith(BUILTIN_PREFIX):
                lines.append(f"pplgate: case {path.stem} ignores --gate-model: its model {model} is part of the case (the built model and its computed reference)")
        return lines

    def sources(self, case: GoldenCase) -> Sources:
        """The case's sources after the options, each remote one read from --sources where given (checked once)."""
        from pplgate.sourcefolder import Sources

        s = self.settings
        model = case.sources["model"]
        # A built model is part of the case's definition; real models follow --model.
        if s.model and not model.startswith(BUILTIN_PREFIX):
            model = s.model
        given = Sources(model, s.dataset or case.sources["dataset"], s.tokenizer or case.sources["tokenizer"], s.model_dir, s.cache_dir, s.sources)
        return self._once(("sources", given), given.resolved)

    def blocks(self, case: GoldenCase) -> tuple[TokenStream, Blocks]:
        from pplgate.pipeline import load_blocks

        src = self.sources(case)
        return self._once(("blocks", src.dataset, src.tokenizer, case.method), lambda: load_blocks(src, case.method))

    def session(self, target: Target) -> LMSession:
        from pplgate.pipeline import build_session, check_target

        check_target(target.device, target.precision, self.settings.run.options.provider_options)  # the first cause: before any source is resolved, downloaded or checked
        src = self.sources(target.case)
        tokens, blocks = self.blocks(target.case)
        key = ("session", src.model, target.device, target.precision)
        return self._once(key, lambda: build_session(src, target.device, target.precision, tokens, blocks, self.settings.run))

    def evaluation(self, target: Target) -> tuple[dict, Evaluation]:
        from pplgate.pipeline import evaluate_report

        def make() -> tuple[dict, Evaluation]:
            tokens, blocks = self.blocks(target.case)
            return evaluate_report(self.sources(target.case), self.session(target), tokens, blocks, target.case.method, self.settings.run)

        return self._once(("evaluation", target.case.name, target.device, target.precision), make)

    def accuracy_perplexity(self, target: Target, n_blocks: int) -> float:
        """The accuracy path's perplexity of the case's first ``n_blocks``: this session's evaluation
        when it has run (the accuracy test runs first), else an untimed evaluation of those blocks."""
        from pplgate.evaluate import evaluate
        from pplgate.metric import perplexity

        made = self._made.get(("evaluation", target.case.name, target.device, target.precision))
        if made is not None and not isinstance(made, Exception):
            return perplexity(made[1].block_losses[:n_blocks])
        _, blocks = self.blocks(target.case)
        return evaluate(self.session(target), blocks.head(n_blocks), self.settings.run.batch_size, progress=False).perplexity

    def reference_summary(self, target: Target, limits: Limits) -> dict:
        """KL, top-1 agreement and perplexity ratio of the target against ``limits.reference``."""
        from pplgate.devices import parse_target
        from pplgate.pipeline import check_target, compare

        def make() -> dict:
            reference = parse_target(limits.reference)
            check_target(*reference)
            _, blocks = self.blocks(target.case)
            return compare(self.session(target), reference, blocks.head(limits.blocks), self.settings.run, self.settings.cache_dir)

        return self._once(("reference", target.case.name, target.device, target.precision, limits.reference, limits.blocks), make)

    def computed_perplexity(self, target: Target) -> float:
        """A built model's perplexity by its float64 numpy forward pass, on this run's blocks."""
        from pplgate.testmodel import cached_reference_perplexity

        def make() -> float:
            session = self.session(target)
            _, blocks = self.blocks(target.case)
            return cached_reference_perplexity(session.source_path, blocks, self.settings.cache_dir)

        return self._once(("computed", target.case.name), make)
