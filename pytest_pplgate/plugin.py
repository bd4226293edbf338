"""Options, fixtures and hooks of the pplgate gate.  The work is done in pplgate/."""

from __future__ import annotations

import argparse
from pathlib import Path

import onnxruntime as ort
import pytest

from pplgate.argtypes import device_list, key_value, non_negative_int, percent, positive_int, precision_list
from pplgate.devices import DEVICES, PRECISIONS
from pplgate import sourcefolder
from pplgate.fileio import default_model_dir, user_cache_dir
from pplgate.golden import GoldenError
from pplgate.report import onnxruntime_distribution
from pplgate.runtime import SCORINGS, RuntimeOptions
from pytest_pplgate.check import PerplexityRegression, obtain
from pytest_pplgate.session import BrokenCase, GateSession, GateSettings, Target
from pytest_pplgate.summary import TARGET_PROPERTY, GateSummary
from pytest_pplgate.throughput import ThroughputRegression

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
    group.addoption("--model", dest="pplgate_model", default=None, metavar="SOURCE",
                    help="model for every case that is not a built model: path, https URL, hf://<repo>/<file> (default: each golden file's sources.model; ini: pplgate_model)")
    group.addoption("--dataset", dest="pplgate_dataset", default=None, metavar="SOURCE",
                    help="wikitext hub id or local folder (default: each golden file's sources.dataset, Salesforce/wikitext; ini: pplgate_dataset)")
    group.addoption("--tokenizer", dest="pplgate_tokenizer", default=None, metavar="SOURCE",
                    help="tokenizer hub id or local folder (default: each golden file's sources.tokenizer, openai-community/gpt2; ini: pplgate_tokenizer)")
    group.addoption("--sources", dest="pplgate_sources", default=None, metavar="DIR",
                    help=f"read remote sources from DIR, a folder written by 'python -m pplgate fetch DIR' (default: none; ini: pplgate_sources; env: {sourcefolder.ENV})")
    group.addoption("--strict-gate", dest="pplgate_strict", action="store_true", default=None,
                    help="fail, rather than skip, cases whose provider, model, dataset or tokenizer is missing (default: skip; ini: pplgate_strict)")
    group.addoption("--update-golden", dest="pplgate_update", action="store_true", default=False,
                    help="record the obtained perplexities of the selected tests in their golden files (default: off, goldens are never changed)")
    group.addoption("--gate-report", dest="pplgate_report", default=None, type=Path, metavar="PATH",
                    help="write the gate's results as JSON to PATH (default: none)")
    group.addoption("--gate-devices", dest="pplgate_devices", default=None, type=device_list, metavar="LIST",
                    help=f"devices to parametrize over, e.g. 'cpu gcu:1' (default: cpu gpu gcu; ini: pplgate_devices; known: {', '.join(DEVICES)})")
    group.addoption("--gate-precisions", dest="pplgate_precisions", default=None, type=precision_list, metavar="LIST",
                    help=f"precisions to parametrize over (default: {' '.join(PRECISIONS)}; ini: pplgate_precisions)")
    group.addoption("--gate-batch-size", dest="pplgate_batch_size", default=1, type=positive_int, metavar="N",
                    help="blocks per session.run (default: 1)")
    group.addoption("--gate-bench-blocks", dest="pplgate_bench_blocks", default=4, type=positive_int, metavar="N",
                    help="blocks each throughput test times per round (default: 4)")
    group.addoption("--gate-bench-rounds", dest="pplgate_bench_rounds", default=3, type=positive_int, metavar="N",
                    help="timed rounds of each throughput test, after one warm-up round (default: 3)")
    group.addoption("--gate-throughput-fail", dest="pplgate_throughput_fail", default=None, type=percent, metavar="PCT",
                    help="fail a throughput test whose tokens/s fell by more than PCT percent and beyond the noise of its saved runs "
                    "(default: such slowdowns beyond 10%% are only reported)")
    group.addoption("--gate-drift-fail", dest="pplgate_drift_fail", action="store_true", default=False,
                    help="fail a throughput test whose perplexity moved from the last saved run on the same model, blocks and method (default: a warning)")
    group.addoption("--gate-scoring", dest="pplgate_scoring", default="auto", choices=SCORINGS,
                    help="graph: cross-entropy in a second onnxruntime session reading the logits where the model made them; host: the vendor's numpy scoring; auto: graph, but host where the provider lowers precision itself, gcu fp16 (default: auto)")
    group.addoption("--provider-option", dest="pplgate_provider_options", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                    help="passed to every session's execution provider; repeatable (default: none)")
    group.addoption("--intra-op-threads", dest="pplgate_threads", default=0, type=non_negative_int, metavar="N",
                    help="onnxruntime intra-op threads per session (default: 0, onnxruntime's choice)")
    group.addoption("--gate-cards", dest="pplgate_cards", default=None, type=positive_int, metavar="N",
                    help="cards per device on this node: pytest-xdist worker n uses card n mod N (default: the number of workers; ini: pplgate_cards)")
    group.addoption("--golden-dir", dest="pplgate_golden_dir", default=None, type=Path, metavar="DIR",
                    help="folder of golden JSON files (default: <rootdir>/golden; ini: pplgate_golden_dir)")
    group.addoption("--model-dir", dest="pplgate_model_dir", default=None, type=Path, metavar="DIR",
                    help=f"where downloaded, built and converted models go, the CLI's too (default: {default_model_dir()}; ini: pplgate_model_dir)")
    group.addoption("--token-cache-dir", dest="pplgate_cache_dir", default=None, type=Path, metavar="DIR",
                    help=f"where tokenized data is cached (default: {user_cache_dir()})")
    parser.addini("pplgate_model", "default for --model", default="")
    parser.addini("pplgate_dataset", "default for --dataset (relative paths: from the rootdir)", default="")
    parser.addini("pplgate_tokenizer", "default for --tokenizer (relative paths: from the rootdir)", default="")
    parser.addini("pplgate_sources", "default for --sources (relative paths: from the rootdir)", default="")
    parser.addini("pplgate_strict", "default for --strict-gate", type="bool", default=False)
    parser.addini("pplgate_devices", "default for --gate-devices", default="cpu gpu gcu")
    parser.addini("pplgate_precisions", "default for --gate-precisions", default="fp32 fp16")
    parser.addini("pplgate_cards", "default for --gate-cards", default="")
    parser.addini("pplgate_golden_dir", "default for --golden-dir", default="golden")
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
    return Path(value) if value else sourcefolder.default_folder()


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
        cache_dir=config.getoption("pplgate_cache_dir") or user_cache_dir(),
        devices=config.getoption("pplgate_devices") or _ini(config, "pplgate_devices", device_list),
        precisions=config.getoption("pplgate_precisions") or _ini(config, "pplgate_precisions", precision_list),
        model=_source(config, "model"),
        dataset=_source(config, "dataset"),
        tokenizer=_source(config, "tokenizer"),
        sources=_sources_folder(config),
        strict=bool(strict if strict is not None else config.getini("pplgate_strict")),
        update=config.getoption("pplgate_update"),
        report_path=config.getoption("pplgate_report"),
        batch_size=config.getoption("pplgate_batch_size"),
        scoring=config.getoption("pplgate_scoring"),
        options=RuntimeOptions(config.getoption("pplgate_threads"), dict(config.getoption("pplgate_provider_options"))),
        bench_blocks=config.getoption("pplgate_bench_blocks"),
        bench_rounds=config.getoption("pplgate_bench_rounds"),
        throughput_fail=config.getoption("pplgate_throughput_fail"),
        drift_fail=config.getoption("pplgate_drift_fail"),
        worker=worker,
        cards=cards,
    )


PATH_OPTIONS = ("model", "dataset", "tokenizer", "sources", "golden_dir", "model_dir", "cache_dir")


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
    given = [f"--{name.replace('_', '-')}" for name in PATH_OPTIONS if config.getoption(f"pplgate_{name}") is not None]
    folder = config.invocation_params.dir
    missed = next((ini for d in (folder, *folder.parents) for ini in _ini_files(d)), None)
    if given and missed is not None:
        raise pytest.UsageError(
            f"pytest did not read {missed}: it took the path after {given[0]} for a test path and chose its rootdir "
            f"{config.rootpath} from it (pytest-dev/pytest#8846); write path options with '=', e.g. {given[0]}=PATH."
        )


def pytest_configure(config: pytest.Config) -> None:
    for name, kind in DEVICES.items():
        config.addinivalue_line("markers", f"{name}: a pplgate case on {kind.provider}")
    for precision in PRECISIONS:
        config.addinivalue_line("markers", f"{precision}: a pplgate case at {precision}")
    _refuse_missed_ini(config)
    gate = GateSession(_settings(config))
    config.stash[gate_key] = gate
    config.pluginmanager.register(GateSummary(config, gate.settings.report_path), "pplgate-summary")


def pytest_report_header(config: pytest.Config) -> list[str]:
    s = config.stash[gate_key].settings
    return [
        f"pplgate: onnxruntime {ort.__version__} ({onnxruntime_distribution()}), providers: {', '.join(ort.get_available_providers())}",
        f"pplgate: model {s.model or 'per golden file'}, dataset {s.dataset or 'per golden file'}, tokenizer {s.tokenizer or 'per golden file'}"
        + (f", remote sources from {s.sources}" if s.sources else ""),
        f"pplgate: golden {s.golden_dir}, devices {' '.join(s.devices)}, precisions {' '.join(s.precisions)}"
        + (", strict" if s.strict else "") + (", UPDATING GOLDEN FILES" if s.update else ""),
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
    """The gate's shared state: settings, token blocks, sessions and evaluations."""
    return pytestconfig.stash[gate_key]


@pytest.fixture
def gate_target(request: pytest.FixtureRequest) -> Target:
    """The (case, device, precision) of this test."""
    target = request.param
    if isinstance(target, BrokenCase):
        pytest.fail(str(target.error), pytrace=False)
    return target


@pytest.fixture
def gate_session(gate: GateSession, gate_target: Target):
    """The onnxruntime session of this test's case, device and precision, built once per pytest session."""
    return obtain(gate, lambda: gate.session(gate_target))


@pytest.fixture
def gate_blocks(gate: GateSession, gate_target: Target):
    """The case's token blocks (pplgate.blocks.Blocks)."""
    return obtain(gate, lambda: gate.blocks(gate_target.case)[1])


@pytest.fixture
def gate_result(gate: GateSession, gate_target: Target, gate_session) -> dict:
    """The Final report of this test's evaluation, computed once per pytest session."""
    report, _ = obtain(gate, lambda: gate.evaluation(gate_target))
    return report


@pytest.fixture
def perplexity_regression(gate: GateSession, gate_target: Target, request: pytest.FixtureRequest) -> PerplexityRegression:
    """``perplexity_regression.check(report)`` compares with the golden file, or records with --update-golden."""
    return PerplexityRegression(gate, gate_target, request)


@pytest.fixture(scope="session")
def gate_history(pytestconfig: pytest.Config) -> list:
    """The throughput Timings of the runs pytest-benchmark saved (file or Elasticsearch storage), oldest first."""
    from pplgate.history import timings_of_run

    bench = getattr(pytestconfig, "_benchmarksession", None)  # pytest-benchmark's session, as its own fixture finds it
    if bench is None or getattr(bench, "disabled", False):
        return []
    runs = sorted(bench.storage.load(), key=lambda item: item[1].get("datetime", ""))
    return [t for path, data in runs for t in timings_of_run(Path(str(path)).stem.split("_")[0], data)]


@pytest.fixture
def throughput_regression(gate: GateSession, gate_target: Target, request: pytest.FixtureRequest, gate_history: list) -> ThroughputRegression:
    """``throughput_regression.check(benchmark, result, conditions)``: TEST01, then the verdict against the saved runs."""
    return ThroughputRegression(gate, gate_target, request, gate_history)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Settings that change speed, in pytest-benchmark's machine_info.

    pytest-benchmark warns when a compared run's machine_info differs, so runs
    under another onnxruntime build, thread count or provider options are not
    compared as if they were the same.
    """
    s = config.stash[gate_key].settings
    machine_info["pplgate"] = {
        "onnxruntime": ort.__version__,
        "onnxruntime_distribution": onnxruntime_distribution(),
        "available_providers": ort.get_available_providers(),
        "intra_op_threads": s.options.intra_op_threads,
        "provider_options": s.options.provider_options,
        "batch_size": s.batch_size,
        "scoring": s.scoring,
    }
