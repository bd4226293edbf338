"""Options, fixtures and hooks of the pplgate gate.  The work is done in pplgate/.

Loaded in every pytest run of the environment it is installed in (a pytest11
entry point), so it imports only what declaring options needs; onnxruntime,
onnx and the pipeline are imported by the fixtures and hooks that use them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from pplgate.argtypes import device_list, percent, positive_int, precision_list
from pplgate.devices import DEVICES, PRECISIONS
from pplgate.errors import GoldenError
from pplgate.fileio import default_model_dir
from pplgate.options import RunSettings, RuntimeOptions, add_global_options, default_sources_folder
from pytest_pplgate.outcome import TARGET_PROPERTY, obtain
from pytest_pplgate.session import BrokenCase, GateSession, GateSettings, Target
from pytest_pplgate.summary import GateSummary

gate_key = pytest.StashKey[GateSession]()
golden_error_key = pytest.StashKey[GoldenError]()


def _worker(config: pytest.Config) -> tuple[int | None, int | None]:
    """This process's pytest-xdist worker number and the number of workers, or (None, None)."""
    info = getattr(config, "workerinput", None)
    if info is None:
        return None, None
    return int(info["workerid"][len("gw"):]), int(info["workercount"])


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pplgate", "pplgate: perplexity and throughput gate")
    add_global_options(group.addoption, prefix="gate-")
    # The spellings of earlier releases (--strict-gate, --update-golden, --golden-dir) are accepted for one release.
    group.addoption("--gate-strict", "--strict-gate", dest="pplgate_strict", action="store_true", default=None,
                    help="fail, rather than skip, cases whose provider, model, dataset or tokenizer is missing (default: skip; ini: pplgate_strict)")
    group.addoption("--gate-update-golden", "--update-golden", dest="pplgate_update", action="store_true", default=False,
                    help="record the obtained perplexities of the selected tests in their golden files (default: off, goldens are never changed)")
    group.addoption("--gate-report", dest="pplgate_report", default=None, type=Path, metavar="PATH",
                    help="write the gate's results as JSON to PATH (default: none)")
    group.addoption("--gate-devices", dest="pplgate_devices", default=None, type=device_list, metavar="LIST",
                    help=f"devices to parametrize over, e.g. 'cpu gcu:1' (default: cpu gpu gcu; ini: pplgate_devices; known: {', '.join(DEVICES)})")
    group.addoption("--gate-precisions", dest="pplgate_precisions", default=None, type=precision_list, metavar="LIST",
                    help=f"precisions to parametrize over (default: {' '.join(PRECISIONS)}; ini: pplgate_precisions)")
    group.addoption("--gate-bench-blocks", dest="pplgate_bench_blocks", default=4, type=positive_int, metavar="N",
                    help="blocks each throughput test times per round (default: 4)")
    group.addoption("--gate-bench-rounds", dest="pplgate_bench_rounds", default=3, type=positive_int, metavar="N",
                    help="timed rounds of each throughput test, after one warm-up round (default: 3)")
    group.addoption("--gate-throughput-fail", dest="pplgate_throughput_fail", default=None, type=percent, metavar="PCT",
                    help="fail a throughput test whose tokens/s fell by more than PCT percent and beyond the noise of its saved runs "
                    "(default: such slowdowns beyond 10%% are only reported)")
    group.addoption("--gate-drift-fail", dest="pplgate_drift_fail", action="store_true", default=False,
                    help="fail a throughput test whose perplexity moved from the last saved run on the same model, blocks and method (default: a warning)")
    group.addoption("--gate-cards", dest="pplgate_cards", default=None, type=positive_int, metavar="N",
                    help="cards per device on this node: pytest-xdist worker n uses card n mod N (default: the number of workers; ini: pplgate_cards)")
    group.addoption("--gate-golden-dir", "--golden-dir", dest="pplgate_golden_dir", default=None, type=Path, metavar="DIR",
                    help="folder of golden JSON files (default: <rootdir>/golden; ini: pplgate_golden_dir)")
    parser.addini("pplgate_model", "default for --model", default="")
    parser.addini("pplgate_dataset", "default for --dataset (relative paths: from the rootdir)", default="")
    parser.addini("pplgate_tokenizer", "default for --tokenizer (relative paths: from the rootdir)", default="")
    parser.addini("pplgate_sources", "default for --sources (relative paths: from the rootdir)", default="")
    parser.addini("pplgate_strict", "default for --gate-strict", type="bool", default=False)
    parser.addini("pplgate_devices", "default for --gate-devices", default="cpu gpu gcu")
    parser.addini("pplgate_precisions", "default for --gate-precisions", default=" ".join(PRECISIONS))
    parser.addini("pplgate_cards", "default for --gate-cards", default="")
    parser.addini("pplgate_golden_dir", "default for --gate-golden-dir", default="golden")
    parser.addini("pplgate_model_dir", "default for --model-dir (relative paths: from the rootdir)", default="")


def _source(config: pytest.Config, name: str) -> str | None:
    """An option if given, else the ini value, a local path there taken from the rootdir."""
    value = config.getoption(f"pplgate_{name}")
    if value:
        return value
    value = config.getini(f"pplgate_{name}")
    if not value:
        return None
    # A relative path in pytest.ini means relative to that file, not to the cwd.
    return str(config.rootpath / value) if value.startswith(".") else value


def _sources_folder(config: pytest.Config) -> Path | None:
    """--sources, else pplgate_sources in pytest.ini, else $PPLGATE_SOURCES."""
    value = _source(config, "sources")
    return Path(value) if value else default_sources_folder()


def _ini(config: pytest.Config, name: str, parse):
    """An ini value through its parser; a bad one is a usage error naming the key."""
    try:
        return parse(config.getini(name))
    except argparse.ArgumentTypeError as err:
        raise pytest.UsageError(f"{config.inipath}: {name} = {config.getini(name)!r}: {err}") from None


def _settings(config: pytest.Config) -> GateSettings:
    root = config.rootpath
    strict = config.getoption("pplgate_strict")
    worker, workers = _worker(config)
    cards = config.getoption("pplgate_cards") or (_ini(config, "pplgate_cards", positive_int) if config.getini("pplgate_cards") else workers)
    return GateSettings(
        golden_dir=config.getoption("pplgate_golden_dir") or root / config.getini("pplgate_golden_dir"),
        model_dir=config.getoption("pplgate_model_dir") or (root / config.getini("pplgate_model_dir") if config.getini("pplgate_model_dir") else default_model_dir()),
        cache_dir=config.getoption("pplgate_cache_dir"),
        devices=config.getoption("pplgate_devices") or _ini(config, "pplgate_devices", device_list),
        precisions=config.getoption("pplgate_precisions") or _ini(config, "pplgate_precisions", precision_list),
        model=_source(config, "model"),
        dataset=_source(config, "dataset"),
        tokenizer=_source(config, "tokenizer"),
        sources=_sources_folder(config),
        strict=bool(strict if strict is not None else config.getini("pplgate_strict")),
        update=config.getoption("pplgate_update"),
        report_path=config.getoption("pplgate_report"),
        run=RunSettings(
            batch_size=config.getoption("pplgate_batch_size"),
            scoring=config.getoption("pplgate_scoring"),
            options=RuntimeOptions(config.getoption("pplgate_intra_op_threads"), dict(config.getoption("pplgate_provider_option"))),
        ),
        bench_blocks=config.getoption("pplgate_bench_blocks"),
        bench_rounds=config.getoption("pplgate_bench_rounds"),
        throughput_fail=config.getoption("pplgate_throughput_fail"),
        drift_fail=config.getoption("pplgate_drift_fail"),
        worker=worker,
        cards=cards,
    )


# The options whose value is a path: written with a space, pytest takes that path for a test path.
PATH_OPTIONS = tuple(f"--{prefix}{name}" for name in ("model", "dataset", "tokenizer", "sources", "golden-dir", "model-dir") for prefix in ("gate-", "")) + (
    "--gate-cache-dir", "--gate-report")


# The files pytest reads its settings from, and what marks one as pytest's.
INI_FILES = {"pytest.ini": "", ".pytest.ini": "", "pyproject.toml": "[tool.pytest", "tox.ini": "[pytest]", "setup.cfg": "[tool:pytest]"}


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
    in ``--dataset ../data`` it takes ``../data`` for a test path, looks for
    pytest.ini from there, and runs without the gate's settings.
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
    """A --model that names no readable file is a usage error, never a run of the cases that do not use it."""
    from pplgate.sources import describe, unreadable_model

    why = unreadable_model(model) if model else None
    if why is not None:
        raise pytest.UsageError(f"--gate-model {describe(model)}: {why}: pass the path of a readable ONNX file, an https URL or hf://<repo>/<file>, "
                                "or leave --gate-model out to run each case's own model.")


def _refuse_report_over_golden(report: Path | None, golden: Path) -> None:
    """--gate-report never overwrites a case file: golden files change only through --gate-update-golden."""
    if report is not None and report.suffix == ".json" and report.resolve().parent == golden.resolve():
        raise pytest.UsageError(f"--gate-report {report} is in the golden folder {golden}, where it would replace or add a case: "
                                "write the report elsewhere (golden files change only through --gate-update-golden).")


def pytest_configure(config: pytest.Config) -> None:
    for name, kind in DEVICES.items():
        config.addinivalue_line("markers", f"{name}: a pplgate case on {kind.provider}")
    for precision in PRECISIONS:
        config.addinivalue_line("markers", f"{precision}: a pplgate case at {precision}")
    _refuse_missed_ini(config)
    gate = GateSession(_settings(config))
    if gate.settings.update and gate.settings.strict:  # strict from the command line or from pytest.ini's pplgate_strict
        raise pytest.UsageError("--gate-update-golden records what this node obtains and --gate-strict (or pplgate_strict in pytest.ini) gates on it: "
                                "run one, not both (record with --gate-update-golden -o pplgate_strict=false, then check with --gate-strict).")
    if gate.settings.golden_dir.is_dir():
        _import_onnxruntime()  # a gate project: its first sentence, before any test; elsewhere the plugin costs nothing
    _refuse_unreadable_model(gate.settings.model)
    _refuse_report_over_golden(gate.settings.report_path, gate.settings.golden_dir)
    config.stash[gate_key] = gate
    config.pluginmanager.register(GateSummary(config, gate.settings.report_path, gate.targets), "pplgate-summary")


def pytest_unconfigure(config: pytest.Config) -> None:
    gate = config.stash.get(gate_key, None)
    if gate is not None:
        # pytester and others may keep a finished config: not its models.
        gate.release(("session", "evaluation", "blocks", "reference", "computed"))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The gate's sessions go when its last test in a row is done: a suite's other tests do not carry them."""
    if "gate_target" in getattr(item, "fixturenames", ()) and (nextitem is None or "gate_target" not in getattr(nextitem, "fixturenames", ())):
        item.config.stash[gate_key].release()


def _import_onnxruntime():
    """onnxruntime, or a usage error saying how to install it: pplgate leaves the build to the node (see README, Set up)."""
    try:
        import onnxruntime
    except ImportError as err:
        raise pytest.UsageError(
            f"onnxruntime cannot be imported in this Python ({sys.executable}: {err}): install the build for this node's device, "
            f"e.g. '{sys.executable} -m pip install onnxruntime' for the CPU, onnxruntime-gpu for CUDA, or the vendor's wheel.") from None
    return onnxruntime


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash[gate_key].settings
    if not s.golden_dir.is_dir():
        return []  # not a gate project: a run that never uses the plugin does not pay for onnxruntime's import
    import onnxruntime as ort  # importable: pytest_configure checked

    from pplgate.report import onnxruntime_distribution
    from pplgate.sources import describe

    return [
        f"pplgate: onnxruntime {ort.__version__} ({onnxruntime_distribution()}), providers: {', '.join(ort.get_available_providers())}",
        f"pplgate: model {describe(s.model) if s.model else 'per golden file'}, dataset {s.dataset or 'per golden file'}, tokenizer {s.tokenizer or 'per golden file'}"
        + (f", remote sources from {s.sources}" if s.sources else ""),
        f"pplgate: golden {s.golden_dir}, devices {' '.join(s.devices)}, precisions {' '.join(s.precisions)}"
        + (", strict" if s.strict else "") + (", UPDATING GOLDEN FILES" if s.update else ""),
        *config.stash[gate_key].ignored_options(),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gate_target" not in metafunc.fixturenames:
        return
    gate = metafunc.config.stash[gate_key]
    try:
        targets = gate.targets()
    except GoldenError as err:
        # Raised as a usage error once collection ends: raised here it would
        # only be one module's collection error.
        metafunc.config.stash[golden_error_key] = err
        targets = []
    params = [pytest.param(t, id=t.id, marks=[getattr(pytest.mark, t.device.kind.name), getattr(pytest.mark, t.precision)]) for t in targets]
    metafunc.parametrize("gate_target", params, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    error = config.stash.get(golden_error_key, None)
    if error is not None:
        raise pytest.UsageError(str(error))
    # Marks the accuracy tests for the summary; throughput tests report through pytest-benchmark.
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "gate_target" in callspec.params and "perplexity_regression" in item.fixturenames:
            item.user_properties.append((TARGET_PROPERTY, callspec.params["gate_target"].id))


@pytest.fixture(scope="session")
def gate(pytestconfig: pytest.Config) -> GateSession:
    """The gate's shared state: settings, and the token blocks, sessions and evaluations made so far."""
    return pytestconfig.stash[gate_key]


@pytest.fixture
def gate_target(request: pytest.FixtureRequest) -> Target:
    """The (case, device, precision) of this test."""
    target = request.param
    if isinstance(target, BrokenCase):
        pytest.fail(str(target.error), pytrace=False)
    return target


@pytest.fixture
def gate_model(gate: GateSession, gate_target: Target):
    """The model of this test's case as an onnxruntime session on its device and precision (pplgate.runtime.LMSession), built once per pytest session."""
    return obtain(gate.settings.strict, lambda: gate.session(gate_target))


@pytest.fixture
def gate_blocks(gate: GateSession, gate_target: Target):
    """The case's token blocks (pplgate.blocks.Blocks)."""
    return obtain(gate.settings.strict, lambda: gate.blocks(gate_target.case)[1])


@pytest.fixture
def gate_result(gate: GateSession, gate_target: Target, gate_model) -> dict:
    """The Final report of this test's evaluation, computed once per pytest session."""
    report, _ = obtain(gate.settings.strict, lambda: gate.evaluation(gate_target))
    return report


@pytest.fixture
def perplexity_regression(gate: GateSession, gate_target: Target, request: pytest.FixtureRequest):
    """``perplexity_regression.check(report)`` compares with the golden file, or records with --gate-update-golden."""
    from pytest_pplgate.perplexity import PerplexityRegression

    return PerplexityRegression(gate, gate_target, request)


@pytest.fixture(scope="session")
def gate_history(pytestconfig: pytest.Config) -> list:
    """The throughput Timings of the runs pytest-benchmark saved (file or Elasticsearch storage), oldest first.

    A saved run that cannot be read (not JSON, text where numbers belong, a
    zero time) is set aside with a warning that names it: never a traceback,
    never a baseline.
    """
    import warnings

    from pplgate.history import SetAside, load_run, timings_of_run
    from pplgate.sources import shown
    from pplgate.verdicts import UnreadableRun

    bench = getattr(pytestconfig, "_benchmarksession", None)  # pytest-benchmark's session, as its own fixture finds it
    if bench is None or getattr(bench, "disabled", False):
        return []
    storage, runs, aside = bench.storage, [], []
    if hasattr(storage, "query"):  # file storage: the files pytest-benchmark would compare with, each read on its own
        for path in storage.query():
            try:
                runs.append((path, load_run(Path(path))))
            except UnreadableRun as err:
                aside.append(SetAside(Path(path), str(err)))
    else:
        runs = list(storage.load())
    timings = []
    for path, data in sorted(runs, key=lambda item: str(item[1].get("datetime", "")) if isinstance(item[1], dict) else ""):
        try:
            timings += timings_of_run(Path(str(path)).stem.split("_")[0], data)
        except UnreadableRun as err:
            aside.append(SetAside(Path(str(path)), str(err)))
    for run in aside:
        warnings.warn(pytest.PytestWarning(f"pplgate: {shown(run.line())}"))
    return timings


@pytest.fixture
def throughput_regression(gate: GateSession, gate_target: Target, request: pytest.FixtureRequest, gate_history: list):
    """``throughput_regression.check(benchmark, result, conditions)``: TEST01, then the verdict against the saved runs."""
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
