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
from typing import TYPE_CHECKING, Any

from pplgate.errors import GoldenError
from pplgate.options import RunSettings
from pplgate.spec import is_builtin
from pplgate.target import Device, Precision, Target

if TYPE_CHECKING:
    from pplgate.blocks import Blocks
    from pplgate.data import TokenStream
    from pplgate.evaluate import Evaluation
    from pplgate.golden import GoldenCase, Limits
    from pplgate.runtime import LMSession
    from pplgate.sourcefolder import Sources


@dataclass(frozen=True)
class CaseTarget:
    """What one gate test checks: a case on a target."""

    case: GoldenCase
    target: Target

    @property
    def id(self) -> str:
        return f"{self.case.name}-{self.target.key}"


@dataclass(frozen=True)
class BrokenCase:
    """A target of a golden file that could not be read: its test fails with the reason.

    It has the id and markers the file's test would have had, so any -k or -m
    that would select that test selects the failure.
    """

    path: Path
    error: GoldenError
    target: Target

    @property
    def id(self) -> str:
        return f"{self.path.stem}-{self.target.key}"


@dataclass(frozen=True)
class GateSettings:
    golden_dir: Path
    model_dir: Path
    cache_dir: Path
    devices: tuple[Device, ...]
    precisions: tuple[Precision, ...]
    model: str | None  # None: each case's own model
    dataset: str | None
    tokenizer: str | None
    sources: Path | None  # --gate-sources: the folder remote sources are read from
    strict: bool
    update: bool
    report_path: Path | None
    run: RunSettings  # batch size, scoring and onnxruntime options of every session
    bench_blocks: int  # blocks timed by each throughput test
    bench_rounds: int
    throughput_fail: float | None = None  # --gate-throughput-fail: a slowdown beyond this fraction and the noise fails
    drift_fail: bool = False  # --gate-drift-fail: a perplexity that moved on the same model and blocks fails
    history: str | None = None  # --gate-history: the store each run is recorded in and judged against
    worker: int | None = None  # the pytest-xdist worker's number (gw3 -> 3), None without xdist
    cards: int | None = None  # cards per device kind on this node, for spreading workers over them

    def targets(self) -> list[Target]:
        """Every device and precision asked for, each device on this worker's card."""
        return [Target(d.card(self.worker, self.cards), p) for d in self.devices for p in self.precisions]


@dataclass
class GateSession:
    settings: GateSettings
    _made: dict = field(default_factory=dict)  # key -> value or the exception that making it raised
    # This run's throughput benchmarks, as pytest-benchmark saves them: what the history records (recording.py).
    benchmarks: list = field(default_factory=list)

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
        """Drops what was made of ``kinds`` (onnxruntime sessions hold the models and their buffers); made again if
        asked for.
        """
        for key in [k for k in self._made if k[0] in kinds]:
            del self._made[key]

    def golden_files(self) -> list[Path]:
        """The case files; a folder that is missing or holds none is a usage error, never an empty gate."""
        folder = self.settings.golden_dir
        if not folder.is_dir():
            raise GoldenError(
                f"golden folder {folder} does not exist: pass --gate-golden-dir with the folder of the case files "
                f"(golden/ of the repository)."
            )
        files = sorted(folder.glob("*.json"))
        if not files:
            raise GoldenError(
                f"golden folder {folder} holds no case (*.json): pass --gate-golden-dir with the folder of the case "
                f"files, "
                "or add one (see README, Cases)."
            )
        return files

    def params(self) -> list[CaseTarget | BrokenCase]:
        """Every (case, target) the golden folder and the settings call for."""
        from pplgate.golden import load_case

        out: list[CaseTarget | BrokenCase] = []
        targets = self.settings.targets()
        for path in self.golden_files():
            try:
                case = load_case(path)
            except GoldenError as err:
                out += [BrokenCase(path, err, t) for t in targets]
                continue
            out += [CaseTarget(case, t) for t in targets]
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
            if is_builtin(model):
                lines.append(
                    f"pplgate: case {path.stem} ignores --gate-model: its model {model} is part of the case (the "
                    f"built model and its computed reference)"
                )
        return lines

    def sources(self, case: GoldenCase) -> Sources:
        """The case's sources after the options, each remote one read from --gate-sources where given (checked once)."""
        from pplgate.sourcefolder import Sources

        s = self.settings
        model = case.sources["model"]
        # A built model is part of the case's definition; real models follow --gate-model.
        if s.model and not is_builtin(model):
            model = s.model
        given = Sources(
            model,
            s.dataset or case.sources["dataset"],
            s.tokenizer or case.sources["tokenizer"],
            s.model_dir,
            s.cache_dir,
            s.sources,
        )
        return self._once(("sources", given), given.resolved)

    def blocks(self, case: GoldenCase) -> tuple[TokenStream, Blocks]:
        from pplgate.pipeline import load_blocks

        src = self.sources(case)
        return self._once(("blocks", src.dataset, src.tokenizer, case.method), lambda: load_blocks(src, case.method))

    def session(self, param: CaseTarget) -> LMSession:
        from pplgate.pipeline import build_session, check_target

        check_target(
            param.target, self.settings.run.options.provider_options
        )  # the first cause: before any source is resolved, downloaded or checked
        src = self.sources(param.case)
        tokens, blocks = self.blocks(param.case)
        key = ("session", src.model, param.target)
        return self._once(key, lambda: build_session(src, param.target, tokens, blocks, self.settings.run))

    def evaluation(self, param: CaseTarget) -> tuple[dict, Evaluation]:
        from pplgate.pipeline import evaluate_report

        def make() -> tuple[dict, Evaluation]:
            tokens, blocks = self.blocks(param.case)
            return evaluate_report(
                self.sources(param.case), self.session(param), tokens, blocks, param.case.method, self.settings.run
            )

        return self._once(("evaluation", param.case.name, param.target), make)

    def accuracy_perplexity(self, param: CaseTarget, n_blocks: int) -> float:
        """The accuracy path's perplexity of the case's first ``n_blocks``: this session's evaluation
        when it has run (the accuracy test runs first), else an untimed evaluation of those blocks."""
        from pplgate.evaluate import evaluate
        from pplgate.metric import perplexity

        made: Any = self._made.get(("evaluation", param.case.name, param.target))
        if made is not None and not isinstance(made, Exception):
            return perplexity(made[1].block_losses[:n_blocks])
        _, blocks = self.blocks(param.case)
        return evaluate(
            self.session(param), blocks.head(n_blocks), self.settings.run.batch_size, progress=False
        ).perplexity

    def reference_summary(self, param: CaseTarget, limits: Limits) -> dict:
        """KL, top-1 agreement and perplexity ratio of the target against ``limits.reference``."""
        from pplgate.pipeline import check_target, compare

        def make() -> dict:
            check_target(limits.reference)
            _, blocks = self.blocks(param.case)
            return compare(
                self.session(param),
                limits.reference,
                blocks.head(limits.blocks),
                self.settings.run,
                self.settings.cache_dir,
            )

        return self._once(("reference", param.case.name, param.target, limits.reference, limits.blocks), make)

    def computed_perplexity(self, param: CaseTarget) -> float:
        """A built model's perplexity by its float64 numpy forward pass, on this run's blocks."""
        from pplgate.testmodel import cached_reference_perplexity

        def make() -> float:
            session = self.session(param)
            _, blocks = self.blocks(param.case)
            return cached_reference_perplexity(session.source_path, blocks, self.settings.cache_dir)

        return self._once(("computed", param.case.name), make)
