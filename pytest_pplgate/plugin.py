"""Options, fixtures and hooks of the pplgate gate.  The work is done in pplgate/.

Loaded in every pytest run of the environment it is installed in (a pytest11
entry point), so it imports only what declaring options needs; onnxruntime,
onnx and the pipeline are imported by the fixtures and hooks that use them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

from pplgate.errors import GoldenError, PplgateError
from pplgate.options import OPTIONS, RunSettings, RuntimeOptions, add_global_options, add_ini_keys, resolve
from pplgate.target import DEVICES, Precision
from pplgate.timings import Saved
from pytest_pplgate.outcome import TARGET_PROPERTY, THROUGHPUT_TARGET_PROPERTY, inapplicable, obtain
from pytest_pplgate.recording import Recorder
from pytest_pplgate.session import BrokenCase, CaseTarget, GateSession, GateSettings
from pytest_pplgate.summary import GateSummary

gate_key = pytest.StashKey[GateSession]()
golden_error_key = pytest.StashKey[GoldenError]()


def _worker(config: pytest.Config) -> tuple[int | None, int | None]:
    """This process's pytest-xdist worker number and the number of workers, or (None, None)."""
    info = getattr(config, "workerinput", None)
    if info is None:
        return None, None
    return int(info["workerid"][len("gw") :]), int(info["workercount"])


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pplgate", "pplgate: perplexity and throughput gate")
    add_global_options(group.addoption, prefix="gate-")
    add_ini_keys(parser.addini)


def _options(config: pytest.Config) -> dict[str, Any]:
    """Every option's value, each from where the table says (option, pytest.ini, environment, default); a bad ini value
    is a usage error.
    """
    values: dict[str, Any] = {}
    for o in OPTIONS:
        ini = config.getini(o.ini) if o.ini else None
        try:
            values[o.name] = resolve(o, config.getoption(o.dest), ini, config.rootpath, in_gate=True)
        except (argparse.ArgumentTypeError, PplgateError) as err:
            raise pytest.UsageError(f"{config.inipath}: {o.ini} = {ini!r}: {err}") from None
    return values


def _settings(config: pytest.Config) -> GateSettings:
    v = _options(config)
    worker, workers = _worker(config)
    golden = Path(v["golden-dir"])
    return GateSettings(
        golden_dir=golden if golden.is_absolute() else config.rootpath / golden,
        model_dir=v["model-dir"],
        cache_dir=v["cache-dir"],
        devices=v["devices"],
        precisions=v["precisions"],
        model=v["model"],
        dataset=v["dataset"],
        tokenizer=v["tokenizer"],
        sources=v["sources"],
        strict=bool(v["strict"]),
        update=bool(v["update-golden"]),
        report_path=v["report"],
        run=RunSettings(
            batch_size=v["batch-size"],
            scoring=v["scoring"],
            options=RuntimeOptions(v["intra-op-threads"], dict(v["provider-option"])),
        ),
        bench_blocks=v["bench-blocks"],
        bench_rounds=v["bench-rounds"],
        throughput_fail=v["throughput-fail"],
        drift_fail=bool(v["drift-fail"]),
        history=v["history"],
        worker=worker,
        cards=v["cards"] or workers,
    )


# The options whose value is a path: written with a space, pytest takes that path for a test path.
PATH_OPTIONS = tuple(f"--gate-{o.name}" for o in OPTIONS if o.path or o.source)

# The files pytest reads its settings from, and what marks one as pytest's.
INI_FILES = {
    "pytest.ini": "",
    ".pytest.ini": "",
    "pyproject.toml": "[tool.pytest",
    "tox.ini": "[pytest]",
    "setup.cfg": "[tool:pytest]",
}


def _ini_files(folder: Path) -> list[Path]:
    found = []
    for name, section in INI_FILES.items():
        path = folder / name
        if path.is_file() and section in path.read_text(errors="replace"):
            found.append(path)
    return found


def _refuse_missed_ini(config: pytest.Config) -> None:
    """A usage error where pytest chose its rootdir from an option's path and so missed pytest.ini.

    pytest picks its rootdir and ini file from the path-like words on the
    command line before it knows any plugin's options (pytest-dev/pytest#8846):
    in ``--gate-dataset ../data`` it takes ``../data`` for a test path, looks
    for pytest.ini from there, and runs without the gate's settings.
    """
    if config.inipath is not None:
        return
    args = [str(a) for a in config.invocation_params.args]
    given = [a for a in args[:-1] if a in PATH_OPTIONS]  # written with a space, not with '='
    folder = config.invocation_params.dir
    missed = next((ini for d in (folder, *folder.parents) for ini in _ini_files(d)), None)
    if given and missed is not None:
        raise pytest.UsageError(
            f"pytest did not read {missed}: it took the path after {given[0]} for a test path and chose its rootdir "
            f"{config.rootpath} from it (pytest-dev/pytest#8846); write path options with '=', e.g. {given[0]}=PATH."
        )


def _refuse_unreadable_model(model: str | None) -> None:
    """A --gate-model that names no readable file is a usage error, never a run of the cases that do not use it."""
    from pplgate.redact import bare_address
    from pplgate.spec import unreadable

    why = unreadable(model) if model else None
    if model and why is not None:
        raise pytest.UsageError(
            f"--gate-model {bare_address(model)}: {why}: pass the path of a readable ONNX file, an https URL or "
            f"hf://<repo>/<file>, "
            "or leave --gate-model out to run each case's own model."
        )


def _refuse_outputs_over_golden(config: pytest.Config, golden: Path) -> None:
    """No output of the run (the gate's report, junit XML, pytest-benchmark's JSON) replaces or adds a case file."""
    from pplgate.golden import refuse_over_cases

    json_out = config.getoption("benchmark_json", None)
    outputs = {
        "--gate-report": config.stash[gate_key].settings.report_path if gate_key in config.stash else None,
        "--junitxml": getattr(config.option, "xmlpath", None),
        # pytest-benchmark 4 opens this file when it parses the options: too late to keep it; 5 and later take a path.
        "--benchmark-json": json_out if isinstance(json_out, (str, Path)) else getattr(json_out, "name", None),
    }
    for option, path in outputs.items():
        if path is None:
            continue
        try:
            refuse_over_cases(Path(path), option, golden)
        except PplgateError as err:
            opened = (
                " (pytest-benchmark 4 has already emptied it: restore it with git checkout)"
                if not isinstance(json_out, (str, Path)) and option == "--benchmark-json"
                else ""
            )
            raise pytest.UsageError(f"{err}{opened}") from None


def pytest_configure(config: pytest.Config) -> None:
    for name, kind in DEVICES.items():
        config.addinivalue_line("markers", f"{name}: a pplgate case on {kind.provider}")
    for precision in Precision:
        config.addinivalue_line("markers", f"{precision}: a pplgate case at {precision}")
    _refuse_missed_ini(config)
    gate = GateSession(_settings(config))
    if (
        gate.settings.update and gate.settings.strict
    ):  # strict from the command line or from pytest.ini's pplgate_strict
        raise pytest.UsageError(
            "--gate-update-golden records what this node obtains and --gate-strict (or pplgate_strict in pytest.ini) "
            "gates on it: "
            "run one, not both (record with --gate-update-golden -o pplgate_strict=false, then check with "
            "--gate-strict)."
        )
    if gate.settings.golden_dir.is_dir():
        _import_onnxruntime()  # a gate project: its first sentence, before any test; elsewhere the plugin costs nothing
    _refuse_unreadable_model(gate.settings.model)
    config.stash[gate_key] = gate
    _refuse_outputs_over_golden(config, gate.settings.golden_dir)
    summary = GateSummary(config, gate.settings.report_path, gate.params, gate.settings.strict, gate.settings.history)
    config.pluginmanager.register(summary, "pplgate-summary")
    config.pluginmanager.register(Recorder(config, summary, gate.settings.history, gate.benchmarks), "pplgate-recorder")


def pytest_unconfigure(config: pytest.Config) -> None:
    gate = config.stash.get(gate_key, None)
    if gate is not None:
        # pytester and others may keep a finished config: not its models.
        gate.release(("session", "evaluation", "blocks", "reference", "computed"))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The gate's sessions go when its last test in a row is done: a suite's other tests do not carry them."""
    if "gate_target" in getattr(item, "fixturenames", ()) and (
        nextitem is None or "gate_target" not in getattr(nextitem, "fixturenames", ())
    ):
        item.config.stash[gate_key].release()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under --gate-strict a gate test skipped by anyone (a skip mark, pytest-benchmark's --benchmark-only or
    --benchmark-skip, another plugin) fails: only a target no node could run stays a skip."""
    outcome = yield
    report = outcome.get_result()
    gate = item.config.stash.get(gate_key, None)
    if (
        gate is None
        or not gate.settings.strict
        or not report.skipped
        or hasattr(report, "wasxfail")  # an xfail mark: the test ran
        or "gate_target" not in getattr(item, "fixturenames", ())
        or (call.excinfo is not None and inapplicable(call.excinfo.value))
    ):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason
    report.outcome = "failed"
    report.longrepr = (
        f"skipped ({reason}), and --gate-strict fails every selected gate test that does not run: drop what skipped "
        "it, or choose the tests with -k or -m instead."
    )


def _import_onnxruntime():
    """onnxruntime, or a usage error saying how to install it: pplgate leaves the build to the node (see README, Set
    up).
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise pytest.UsageError(
            f"onnxruntime cannot be imported in this Python ({sys.executable}: {err}): install the build for this "
            f"node's device, "
            f"e.g. '{sys.executable} -m pip install onnxruntime' for the CPU, onnxruntime-gpu for CUDA, or the "
            f"vendor's wheel."
        ) from None
    return onnxruntime


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash[gate_key].settings
    if not s.golden_dir.is_dir():
        return []  # not a gate project: a run that never uses the plugin does not pay for onnxruntime's import
    import onnxruntime as ort  # importable: pytest_configure checked

    from pplgate.redact import bare_address
    from pplgate.report import onnxruntime_distribution

    return [
        f"pplgate: onnxruntime {ort.__version__} ({onnxruntime_distribution()}), providers: "
        f"{', '.join(ort.get_available_providers())}",
        f"pplgate: model {bare_address(s.model) if s.model else 'per golden file'}, dataset "
        f"{s.dataset or 'per golden file'}, "
        f"tokenizer {s.tokenizer or 'per golden file'}" + (f", remote sources from {s.sources}" if s.sources else ""),
        f"pplgate: golden {s.golden_dir}, devices {' '.join(d.spec for d in s.devices)}, precisions "
        f"{' '.join(s.precisions)}"
        + (", strict" if s.strict else "")
        + (", UPDATING GOLDEN FILES" if s.update else ""),
        *config.stash[gate_key].ignored_options(),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gate_target" not in metafunc.fixturenames:
        return
    gate = metafunc.config.stash[gate_key]
    try:
        params = gate.params()
    except GoldenError as err:
        # Raised as a usage error once collection ends: raised here it would
        # only be one module's collection error.
        metafunc.config.stash[golden_error_key] = err
        params = []
    marked = [
        pytest.param(
            p,
            id=p.id,
            marks=[getattr(pytest.mark, p.target.device.kind.name), getattr(pytest.mark, p.target.precision.value)],
        )
        for p in params
    ]
    metafunc.parametrize("gate_target", marked, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    error = config.stash.get(golden_error_key, None)
    if error is not None:
        raise pytest.UsageError(str(error))
    # Marks the gate's tests for the summary: accuracy tests by their result, throughput tests by their verdicts.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "gate_target" not in callspec.params:
            continue
        fixtures = getattr(item, "fixturenames", ())
        if "perplexity_regression" in fixtures:
            item.user_properties.append((TARGET_PROPERTY, callspec.params["gate_target"].id))
        elif "throughput_regression" in fixtures:
            item.user_properties.append((THROUGHPUT_TARGET_PROPERTY, callspec.params["gate_target"].id))


@pytest.fixture(scope="session")
def gate(pytestconfig: pytest.Config) -> GateSession:
    """The gate's shared state: settings, and the token blocks, sessions and evaluations made so far."""
    return pytestconfig.stash[gate_key]


@pytest.fixture
def gate_target(request: pytest.FixtureRequest) -> CaseTarget:
    """The case and target (device, precision) of this test."""
    param = request.param
    if isinstance(param, BrokenCase):
        pytest.fail(str(param.error), pytrace=False)
    return param


@pytest.fixture
def gate_model(gate: GateSession, gate_target: CaseTarget):
    """The model of this test's case as an onnxruntime session on its target (pplgate.runtime.LMSession), built once
    per pytest session.
    """
    return obtain(gate.settings.strict, lambda: gate.session(gate_target))


@pytest.fixture
def gate_blocks(gate: GateSession, gate_target: CaseTarget):
    """The case's token blocks (pplgate.blocks.Blocks)."""
    return obtain(gate.settings.strict, lambda: gate.blocks(gate_target.case)[1])


@pytest.fixture
def gate_result(gate: GateSession, gate_target: CaseTarget, gate_model) -> dict:
    """The Final report of this test's evaluation, computed once per pytest session."""
    report, _ = obtain(gate.settings.strict, lambda: gate.evaluation(gate_target))
    return report


@pytest.fixture
def perplexity_regression(gate: GateSession, gate_target: CaseTarget, request: pytest.FixtureRequest):
    """``perplexity_regression.check(report)`` compares with the golden file, or records with --gate-update-golden."""
    from pytest_pplgate.perplexity import PerplexityRegression

    return PerplexityRegression(gate, gate_target, request)


@pytest.fixture(scope="session")
def gate_history(pytestconfig: pytest.Config, gate: GateSession) -> Saved:
    """The throughput Timings this run is judged against, oldest first: those of ``--gate-history``'s store, else of
    the runs pytest-benchmark saved (its file storage, or another it loads).

    A saved run that cannot be read (not JSON, text where numbers belong, a
    zero time) is set aside with a warning that names it: never a traceback,
    never a baseline.  A store that cannot be read is a warning too, and the
    runs pytest-benchmark saved on this node stand in for it.
    """
    import warnings

    from pplgate.errors import PplgateError
    from pplgate.history import (
        SavedRun,
        SetAside,
        _commit,
        replay_found,
        saved_history,
        timings_of_run,
    )
    from pplgate.redact import printable
    from pplgate.store import FolderStore, open_store
    from pplgate.timings import UnreadableRun
    from pplgate.verdicts import DEFAULT_THRESHOLD

    bench = getattr(pytestconfig, "_benchmarksession", None)  # pytest-benchmark's session, as its own fixture finds it
    if bench is None or getattr(bench, "disabled", False):
        return Saved()
    threshold = DEFAULT_THRESHOLD if gate.settings.throughput_fail is None else gate.settings.throughput_fail
    saved: Saved | None = None
    aside: list = []
    if gate.settings.history is not None:
        try:
            with open_store(gate.settings.history) as store:
                saved, aside = saved_history(store, threshold)
        except PplgateError as err:
            warnings.warn(
                pytest.PytestWarning(
                    f"pplgate: the history {printable(str(err))}: judged against the runs pytest-benchmark saved on "
                    "this node instead"
                ),
                stacklevel=2,
            )
    if saved is None:
        storage = bench.storage
        if hasattr(storage, "query"):  # file storage: the files pytest-benchmark would compare with
            saved, aside = saved_history(FolderStore(Path(storage.path)), threshold)
        else:  # another storage of pytest-benchmark's: what it loads, replayed as the gate judged it
            found = []
            for path, data in storage.load():
                try:
                    timings = timings_of_run(Path(str(path)).stem.split("_")[0], data)
                except UnreadableRun as err:
                    aside.append(SetAside(str(path), str(err)))
                    continue
                found.append((SavedRun(str(path), "", _commit({})), timings))
            saved = replay_found(found, {}, threshold)
    for run in aside:
        warnings.warn(pytest.PytestWarning(f"pplgate: {printable(run.line())}"), stacklevel=2)
    return saved


@pytest.fixture
def throughput_regression(
    gate: GateSession, gate_target: CaseTarget, request: pytest.FixtureRequest, gate_history: Saved
):
    """``throughput_regression.check(benchmark, result, conditions)``: TEST01, then the verdict against saved runs."""
    from pytest_pplgate.throughput import ThroughputRegression

    return ThroughputRegression(gate, gate_target, request, gate_history)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Settings that change speed, in pytest-benchmark's machine_info.

    pytest-benchmark warns when a compared run's machine_info differs, so runs
    under another onnxruntime build, thread count or provider options are not
    compared as if they were the same.
    """
    ort = _import_onnxruntime()

    from pplgate.report import onnxruntime_distribution

    s = config.stash[gate_key].settings
    machine_info["pplgate"] = {
        "onnxruntime": ort.__version__,
        "onnxruntime_distribution": onnxruntime_distribution(),
        "available_providers": ort.get_available_providers(),
        "intra_op_threads": s.run.options.intra_op_threads,
        "provider_options": s.run.options.provider_options,
        "batch_size": s.run.batch_size,
        "scoring": s.run.scoring,
    }
