"""The gate as its users meet it, run in a scratch project with pytester."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scratch import write_case


@pytest.fixture
def project(scratch_gate):
    """The scratch gate's golden folder and how to run it."""
    return scratch_gate.golden, scratch_gate.run


@pytest.fixture
def recorded(project):
    """The scratch case with its cpu-fp32 value recorded by --gate-update-golden."""
    golden, run = project
    path = write_case(golden, {"gcu-fp32": {"relative_to": "cpu-fp32", "rel_tol": 0.01, "why": "rule"}})
    run("--gate-update-golden", "-k", "cpu").assert_outcomes(passed=1)
    return path, run


def test_ids_select_by_device_and_precision(project, pytester):
    golden, run = project
    write_case(golden, {})
    pytester.makeini("[pytest]\npplgate_devices = cpu gpu gcu\n")
    assert sorted(run("--collect-only", "-q", "-k", "gcu").outlines[:2]) == [
        "test_gate.py::test_perplexity[mini-gcu-fp16]", "test_gate.py::test_perplexity[mini-gcu-fp32]"]
    assert run("--collect-only", "-q", "-k", "cpu and fp32").outlines[0] == "test_gate.py::test_perplexity[mini-cpu-fp32]"
    assert run("--collect-only", "-q", "-m", "gpu and fp16").outlines[0] == "test_gate.py::test_perplexity[mini-gpu-fp16]"


def test_missing_provider_skips_naming_it(recorded):
    _, run = recorded
    result = run("-k", "gcu", "-rs")
    result.assert_outcomes(skipped=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["SKIPPED*TopsInferenceExecutionProvider (device gcu) is not in this onnxruntime*CPUExecutionProvider*"])


def test_strict_gate_turns_skips_into_failures(recorded):
    _, run = recorded
    result = run("-k", "gcu", "--gate-strict")
    result.assert_outcomes(errors=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*TopsInferenceExecutionProvider*--gate-strict*"])


def test_unreachable_model_skips_naming_the_option(project, tmp_path):
    golden, run = project
    write_case(golden, {}, model=str(tmp_path / "absent.onnx"))
    result = run("-k", "cpu", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*absent.onnx does not exist: pass --model*"])
    assert run("-k", "cpu", "--gate-strict").ret != 0


def test_model_option_replaces_real_models_but_not_built_ones(project, tiny_model, tmp_path):
    golden, run = project
    write_case(golden, {}, model=str(tmp_path / "absent.onnx"), name="real")
    write_case(golden, {"cpu-fp32": {"perplexity": 1.0, "rel_tol": 0.5}}, name="built")
    other = tmp_path / "other.onnx"
    other.write_bytes(tiny_model.read_bytes())
    result = run("-k", "cpu", "-rs", f"--gate-model={other}")
    # The built case says, in the header, that it keeps its own model.
    result.stdout.fnmatch_lines(["pplgate: case built ignores --gate-model: its model builtin:tiny is part of the case*"])
    result.stdout.fnmatch_lines(["*built-cpu-fp32*FAIL*"])
    result.stdout.fnmatch_lines(["*real-cpu-fp32*no golden*"])


@pytest.mark.parametrize("given", ["nope.onnx", "folder"])
def test_a_model_option_that_names_no_readable_file_is_a_usage_error(project, tmp_path, given):
    """Never a green run of the cases that do not use it."""
    golden, run = project
    write_case(golden, {"cpu-fp32": {"perplexity": 1.0, "rel_tol": 0.5}})
    (tmp_path / "folder").mkdir()
    result = run("-k", "cpu and fp32", f"--gate-model={tmp_path / given}", subprocess=True)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    why = "no such file" if given == "nope.onnx" else "a directory, not a file"
    assert f"ERROR: --gate-model {tmp_path / given}: {why}: pass the path of a readable ONNX file" in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_without_onnxruntime_the_gate_says_what_to_install(project, tmp_path):
    golden, _ = project
    write_case(golden, {})
    code = "import sys, pytest; sys.modules['onnxruntime'] = None; sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q']))"
    result = subprocess.run([sys.executable, "-c", code], cwd=golden.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert f"ERROR: onnxruntime cannot be imported in this Python ({sys.executable}: " in result.stderr
    assert f"install the build for this node's device, e.g. '{sys.executable} -m pip install onnxruntime'" in result.stderr


def test_collect_only_says_nothing_of_runs(project):
    golden, run = project
    write_case(golden, {})
    result = run("--co", "-q")
    assert "INCOMPLETE" not in result.stdout.str() and "not run" not in result.stdout.str()


def test_no_golden_value_fails_with_the_file_and_the_command(project, tmp_path):
    golden, run = project
    path = write_case(golden, {})
    result = run("-k", "cpu")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{path} has no expected perplexity for cpu-fp32*", "*pytest *--gate-update-golden*"])
    # A golden folder given on the command line is part of the command that records.
    other = tmp_path / "elsewhere"
    write_case(other, {})
    result = run("-k", "cpu", f"--gate-golden-dir={other}")
    result.stdout.fnmatch_lines([f"*--gate-update-golden*--gate-golden-dir={other}*"])
    assert json.loads(path.read_text())["expected"] == {}


def test_update_writes_only_the_selected_entry_then_the_gate_passes(recorded, pytester):
    path, run = recorded
    data = json.loads(path.read_text())
    entry = data["expected"]["cpu-fp32"]
    assert isinstance(entry["perplexity"], float) and entry["perplexity"] > 1
    assert entry["blocks"]["count"] == 2 and entry["blocks"]["scored_tokens"] == 2046 and len(entry["blocks"]["sha256"]) == 64
    assert entry["model"]["bytes"] > 0 and len(entry["model"]["sha256"]) == 64
    assert entry["provenance"]["grouping"] == "vendor" and entry["provenance"]["onnxruntime"]
    assert data["expected"]["gcu-fp32"] == {"relative_to": "cpu-fp32", "rel_tol": 0.01, "why": "rule"}
    assert data["method"] == {"max_blocks": 2}
    before = path.read_text()
    result = run("-k", "cpu")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*mini-cpu-fp32*pass*", "pplgate: 1 pass"])
    assert path.read_text() == before
    assert not list(path.parent.glob("*.tmp"))


def test_drift_fails_with_a_table_and_the_command(recorded):
    path, run = recorded
    data = json.loads(path.read_text())
    data["expected"]["cpu-fp32"]["perplexity"] *= 1.01
    path.write_text(json.dumps(data))
    result = run("-k", "cpu")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*perplexity of mini on cpu-fp32 is outside its tolerance*",
        "*obtained*expected*difference*tolerance*",
        "perplexity *-0.99*%*",
        f"*device cpu, precision fp32, golden {path} [[]expected.cpu-fp32[]]*",
        f"  {sys.executable} -m pytest 'test_gate.py::test_perplexity?mini-cpu-fp32?' --gate-update-golden --gate-dataset=*",
    ])
    result.stdout.fnmatch_lines(["*mini-cpu-fp32*FAIL*", "pplgate: 1 FAIL", f"To record the obtained values, if they are right: {sys.executable} -m pytest --gate-update-golden -k mini-cpu-fp32 --gate-dataset=*"])


def test_rule_entries_compare_against_the_entry_they_name(recorded, pytester):
    path, run = recorded
    pytester.makeini("[pytest]\npplgate_devices = cpu\npplgate_precisions = fp32 fp16\n")
    data = json.loads(path.read_text())
    data["expected"]["cpu-fp16"] = {"relative_to": "cpu-fp32", "rel_tol": 0.01, "why": "rule"}
    path.write_text(json.dumps(data))
    run("-k", "fp16").assert_outcomes(passed=1)
    data["expected"]["cpu-fp16"]["rel_tol"] = 1e-9
    path.write_text(json.dumps(data))
    run("-k", "fp16").stdout.fnmatch_lines(["*golden * [[]expected.cpu-fp32[]]*"])


def test_gate_report_and_junit_property(recorded, tmp_path):
    path, run = recorded
    report, junit = tmp_path / "gate.json", tmp_path / "junit.xml"
    run(f"--gate-report={report}", f"--junitxml={junit}").assert_outcomes(passed=1, skipped=1)
    data = json.loads(report.read_text())
    assert data["counts"] == {"pass": 1, "skip": 1}
    assert data["machine"]["cpu_count"] and "id" in data["commit"]
    passed = next(r for r in data["results"] if r["verdict"] == "pass")
    assert passed["id"] == "mini-cpu-fp32" and passed["blocks"] == 2 and passed["perplexity_expected"] > 1
    assert passed["perplexity"] == json.loads(path.read_text())["expected"]["cpu-fp32"]["perplexity"]
    skipped = next(r for r in data["results"] if r["verdict"] == "skip")
    assert "TopsInferenceExecutionProvider" in skipped["reason"]
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert float(props["perplexity"]) == passed["perplexity"]


def test_help_shows_options_with_defaults(pytester):
    pytester.makeconftest('pytest_plugins = ["pytest_pplgate.plugin"]')
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["pplgate: perplexity and throughput gate:", "*--gate-strict*", "*pplgate_strict*"])


def test_limits_against_a_reference_session(recorded, pytester):
    path, run = recorded
    pytester.makeini("[pytest]\npplgate_devices = cpu\npplgate_precisions = fp16\n")
    limits = {"reference": "cpu-fp32", "blocks": 1, "kl_mean_max": 0.01, "top1_agreement_min": 95.0, "perplexity_ratio_max": 1.01}

    def set_limits():
        data = json.loads(path.read_text())
        data["expected"]["cpu-fp16"] = {"relative_to": "cpu-fp32", "rel_tol": 0.01, "limits": limits}
        path.write_text(json.dumps(data))

    set_limits()
    run("-k", "fp16").assert_outcomes(passed=1)
    limits["kl_mean_max"] = 1e-9
    set_limits()
    result = run("-k", "fp16")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*mini-cpu-fp16 against cpu-fp32 on 1 blocks breaks its limits*",
        "*obtained*limit*",
        "kl_mean *max 1e-09*",
        f"limits: {path} [[]expected.cpu-fp16.limits[]]",
    ])


def test_sources_from_pytest_ini_relative_to_it(scratch_gate, shared_data):
    pytester = scratch_gate.pytester
    (pytester.path / "data").symlink_to(shared_data)
    scratch_gate.ini(devices="cpu", extra="pplgate_dataset = ./data/wikitext\npplgate_tokenizer = ./data/gpt2\n")
    scratch_gate.case({})
    sub = pytester.mkdir("sub")  # run from elsewhere: ./ paths are the ini file's, not the cwd's
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        result = scratch_gate.run(str(pytester.path), "--gate-update-golden", sources=False)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"pplgate: model per golden file, dataset {pytester.path}/data/wikitext, tokenizer {pytester.path}/data/gpt2"])


@pytest.fixture(scope="session")
def wikitext_with_empty_rows(tmp_path_factory, dataset_dir) -> Path:
    """The shared rows with empty rows put back: 990 before the first, one after every second.

    Another faithful copy of the split: the same token stream, other 1,000-row
    batches, so other blocks under the vendor's grouping.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(next(Path(dataset_dir).rglob("*.parquet"))).column("text").to_pylist()
    padded = [""] * 990
    for i, row in enumerate(rows):
        padded += [row, ""] if i % 2 else [row]
    folder = tmp_path_factory.mktemp("wikitext-with-empty-rows")
    (folder / "wikitext-2-raw-v1").mkdir()
    (folder / "README.md").write_text((Path(dataset_dir) / "README.md").read_text())
    pq.write_table(pa.table({"text": padded}), folder / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet")
    return folder


def test_value_recorded_on_other_blocks_fails_naming_the_blocks(recorded, wikitext_with_empty_rows):
    path, run = recorded
    result = run("-k", "cpu", f"--gate-dataset={wikitext_with_empty_rows}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*the blocks of mini-cpu-fp32 differ from those the value in {path} [[]expected.cpu-fp32[]] was recorded on "
        "(recorded: 2 blocks, 2046 scored tokens, sha256 *; now: 2 blocks, 1789 scored tokens, sha256 *), "
        "so the data, the tokenizer or the grouping changed, not the model*",
    ])
    result.stdout.no_fnmatch_line("*obtained*expected*difference*")


def test_swapped_model_fails_naming_both_hashes(project, tiny_model, tmp_path):
    import dataclasses

    from pplgate.testmodel import PRESETS, write_model

    golden, run = project
    original, other = tmp_path / "original.onnx", tmp_path / "other.onnx"
    original.write_bytes(tiny_model.read_bytes())
    write_model(dataclasses.replace(PRESETS["tiny"], seed=1), other)  # same architecture, other weights
    path = write_case(golden, {}, model=str(original))
    run("-k", "cpu", "--gate-update-golden").assert_outcomes(passed=1)
    pin = json.loads(path.read_text())["expected"]["cpu-fp32"]["model"]
    assert pin == {"sha256": hashlib.sha256(original.read_bytes()).hexdigest(), "bytes": original.stat().st_size}
    run("-k", "cpu").assert_outcomes(passed=1)
    result = run("-k", "cpu", f"--gate-model={other}")
    result.assert_outcomes(failed=1)
    other_sha = hashlib.sha256(other.read_bytes()).hexdigest()
    result.stdout.fnmatch_lines([
        f"*the model of mini-cpu-fp32 is not the one the value in {path} [[]expected.cpu-fp32[]] was measured on "
        f"(recorded sha256 {pin['sha256']}, {pin['bytes']} bytes; now {other_sha}, *): point --model at the original, or re-record with*",
    ])
    result.stdout.no_fnmatch_line("*obtained*expected*difference*")


def test_unpinned_model_shows_the_hash_that_ran(recorded, tiny_model):
    path, run = recorded
    data = json.loads(path.read_text())
    del data["expected"]["cpu-fp32"]["model"]  # as the vendor's figures are: a value, no hash
    path.write_text(json.dumps(data))
    result = run("-k", "cpu")
    result.assert_outcomes(passed=1)
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    result.stdout.fnmatch_lines([f"mini-cpu-fp32: ran model sha256 {sha}, which its golden entry does not pin yet",
                                 "To pin the models that ran*-m pytest --gate-update-golden -k mini-cpu-fp32 --gate-dataset=*"])


def test_tiny_case_holds_on_any_faithful_copy(project, dataset_dir, wikitext_with_empty_rows, tmp_path):
    golden, run = project
    case = json.loads((Path(__file__).resolve().parents[1] / "golden" / "tiny.json").read_text())
    # The copy's first batch holds 10 rows, one short block: its blocks differ from the first one on.
    case["method"]["max_blocks"] = 8
    (golden / "tiny.json").write_text(json.dumps(case))
    reports = []
    for data in (dataset_dir, wikitext_with_empty_rows):
        report = tmp_path / f"{len(reports)}.json"
        result = run("-k", "cpu and fp32", f"--gate-dataset={data}", f"--gate-report={report}")
        result.assert_outcomes(passed=1)
        reports.append(json.loads(report.read_text())["results"][0])
    assert reports[0]["blocks_sha256"] != reports[1]["blocks_sha256"]
    # The expected value follows the blocks: each run is checked against its own.
    assert reports[0]["perplexity_expected"] != reports[1]["perplexity_expected"]
    for r in reports:
        assert r["perplexity"] == pytest.approx(r["perplexity_expected"], rel=1e-5)


@pytest.mark.parametrize("selection", [["-k", "gcu"], ["-m", "gcu"], ["-k", "cpu and fp32"]])
def test_broken_golden_file_fails_whatever_selects_its_tests(project, selection):
    golden, run = project
    write_case(golden, {"cpu-fp32": {"perplexity": "12872064119.34", "rel_tol": 0.01}})
    result = run(*selection)
    assert result.ret == 1
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 1 and "passed" not in outcomes
    result.stdout.fnmatch_lines([f'*{golden / "mini.json"}: key expected.cpu-fp32.perplexity must be a number, not "12872064119.34"*'])
    result.stdout.no_fnmatch_line("*Every gate case skipped*")


def test_broken_golden_file_keeps_its_test_ids(project, pytester):
    golden, run = project
    (golden / "mini.json").write_text("{not json")
    pytester.makeini("[pytest]\npplgate_devices = cpu gcu\npplgate_precisions = fp32 fp16\n")
    ids = run("--collect-only", "-q").outlines
    assert [line for line in ids if "::" in line] == [f"test_gate.py::test_perplexity[mini-{k}]" for k in ("cpu-fp32", "cpu-fp16", "gcu-fp32", "gcu-fp16")]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_golden_folder_without_cases_is_a_usage_error(project, tmp_path, make):
    _, run = project
    folder = tmp_path / "golden"
    if make == "empty":
        folder.mkdir()
    result = run(f"--gate-golden-dir={folder}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: golden folder {folder} {'does not exist' if make == 'missing' else 'holds no case'}*"])


@pytest.mark.parametrize("option", ["--gate-dataset", "--gate-tokenizer", "--gate-model", "--gate-golden-dir"])
def test_path_option_with_a_space(project, pytester, shared_data, tiny_model, token_cache, option, tmp_path):
    golden, _ = project
    write_case(golden, {})
    (pytester.path / "data").symlink_to(shared_data / "wikitext")
    (pytester.path / "tok").symlink_to(shared_data / "gpt2")
    (pytester.path / "m.onnx").symlink_to(tiny_model)
    (tmp_path / "m.onnx").symlink_to(tiny_model)  # pytest looks for its rootdir only from paths that exist
    outside = {"--gate-dataset": shared_data / "wikitext", "--gate-tokenizer": shared_data / "gpt2",
               "--gate-model": tmp_path / "m.onnx", "--gate-golden-dir": tmp_path}[option]
    # Outside the project: pytest takes the path for a test path and misses the ini file; one sentence, exit 4.
    result = pytester.runpytest("-k", "gcu", option, str(outside), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest did not read {pytester.path / 'tox.ini'}: it took the path after {option} for a test path *"
                                 f"write path options with '=', e.g. {option}=PATH."])
    result.stdout.no_fnmatch_line("*unrecognized arguments*")
    # Inside it: the same run as the = form.
    inside = {"--gate-dataset": "data", "--gate-tokenizer": "tok", "--gate-model": "m.onnx", "--gate-golden-dir": "golden"}[option]
    common = ["-k", "gcu", "-rs", f"--gate-cache-dir={token_cache}", "-p", "no:cacheprovider"]
    spaced = pytester.runpytest(*common, option, inside)
    joined = pytester.runpytest(*common, f"{option}={inside}")
    assert spaced.ret == joined.ret == 0
    spaced.assert_outcomes(skipped=1)
    assert [line for line in spaced.outlines if "SKIPPED" in line] == [line for line in joined.outlines if "SKIPPED" in line]


def test_the_readme_example_case_works_as_written(project, tmp_path):
    """docs/gate.md's golden/gpt2-hub.json, its model swapped for a local merged decoder (the hub is out of reach)."""
    from pplgate.testmodel import PRESETS, write_model

    golden, run = project
    readme = (Path(__file__).resolve().parents[1] / "docs" / "gate.md").read_text()
    example = json.loads(readme.split("`golden/gpt2-hub.json`:\n\n```json\n", 1)[1].split("```", 1)[0])
    example["method"]["max_blocks"] = 2  # the whole split is the same code, 137 times longer
    (golden / "gpt2-hub.json").write_text(json.dumps(example))
    merged = write_model(PRESETS["tiny"], tmp_path / "decoder_model_merged.onnx", style="merged")
    result = run("-k", "gpt2-hub and cpu and fp32", f"--gate-model={merged}", "--gate-update-golden")
    result.assert_outcomes(passed=1)
    entry = json.loads((golden / "gpt2-hub.json").read_text())["expected"]["cpu-fp32"]
    assert entry["blocks"]["count"] == 2 and entry["model"]["sha256"]
    run("-k", "gpt2-hub and cpu and fp32", f"--gate-model={merged}").assert_outcomes(passed=1)


def test_method_block_size_of_a_case(project):
    golden, run = project
    path = write_case(golden, {})
    data = json.loads(path.read_text())
    data["method"]["block_size"] = 512
    path.write_text(json.dumps(data))
    run("-k", "cpu", "--gate-update-golden").assert_outcomes(passed=1)
    assert json.loads(path.read_text())["expected"]["cpu-fp32"]["blocks"]["scored_tokens"] == 2 * 511


def test_a_failure_ends_with_a_runnable_localize_command(recorded, pytester, cli):
    import shlex

    path, run = recorded
    pytester.makeini("[pytest]\npplgate_devices = cpu\npplgate_precisions = fp16\n")
    data = json.loads(path.read_text())
    data["expected"]["cpu-fp16"] = {"relative_to": "cpu-fp32", "rel_tol": 0.01,
                                    "limits": {"reference": "cpu-fp32", "blocks": 1, "kl_mean_max": 1e-9}}
    path.write_text(json.dumps(data))
    result = run("-k", "fp16")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*To find the first node where mini-cpu-fp16 departs from cpu-fp32:",
                                 f"  {sys.executable} -m pplgate localize --model=builtin:tiny --dataset=* --device=cpu --precision=fp16 --reference=cpu-fp32 *"])
    command = next(line.strip() for line in result.outlines if line.startswith(f"  {sys.executable} -m pplgate localize"))
    ran = cli(*shlex.split(command)[3:], "--block-size=128")  # the command as given, on shorter blocks
    assert ran.code == 0 and "no divergence" in ran.out  # fp16 rounding only: the limit, not the model, is what is tight


# Broken cases: each file fails its own tests, the others run.

def test_each_broken_golden_file_fails_its_own_tests(scratch_gate):
    """Every kind at once, in one gate run: each file its own errors (its sentence is test_golden.py's), the good case runs."""
    from test_golden import BROKEN

    scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}}, name="good", max_blocks=1)
    files = {kind: scratch_gate.golden / f"bad{i:02d}.json" for i, kind in enumerate(BROKEN)}
    for kind, path in files.items():
        path.write_text(BROKEN[kind][0].replace('"case": "bad"', f'"case": "{path.stem}"'))
    (scratch_gate.golden / "loop.json").symlink_to(scratch_gate.golden / "loop.json")
    result = scratch_gate.run()
    result.assert_outcomes(passed=1, skipped=1, errors=2 * (len(BROKEN) + 1))  # each bad file on cpu and on gcu (whose provider is missing)
    for kind, path in files.items():
        if kind != "name unlike the file":
            result.stdout.fnmatch_lines([f"*{path}*{BROKEN[kind][1]}*"])
    result.stdout.fnmatch_lines([f"*golden file {scratch_gate.golden / 'loop.json'} cannot be read (Too many levels of symbolic links)*"])


def test_a_case_of_rules_only_says_which_entry_to_record_first(scratch_gate):
    """docs/gate.md's gpt2-hub example as written: every entry a rule relative to cpu-fp32, which is not recorded yet."""
    scratch_gate.ini(devices="cpu", precisions="fp16")
    scratch_gate.case({"gpu-fp32": {"relative_to": "cpu-fp32", "rel_tol": 0.0002}, "cpu-fp16": {"relative_to": "cpu-fp32", "rel_tol": 0.01}},
                      max_blocks=1)
    result = scratch_gate.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*expected.cpu-fp16 is a rule relative to cpu-fp32, which holds no value yet: record cpu-fp32 first, on a node that has its device, "
        f"with: {sys.executable} -m pytest 'test_gate.py::test_perplexity?mini-cpu-fp32?' --gate-update-golden*",
    ])
    assert "Traceback" not in result.stdout.str() and "GoldenError" not in result.stdout.str()


def test_precisions_and_devices_are_normalized_or_refused(scratch_gate):
    scratch_gate.case({}, max_blocks=1)
    ids = scratch_gate.run("--collect-only", "-q", "--gate-precisions=FP32", "--gate-devices=CPU").outlines
    assert "test_gate.py::test_perplexity[mini-cpu-fp32]" in ids
    result = scratch_gate.run("--collect-only", "-q", "--gate-precisions=fp8")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--gate-precisions: unknown precision 'fp8': use one of fp32, fp16, tf32.*"])
    result = scratch_gate.run("--gate-devices=cpu CPU")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "names the device cpu twice: name each once" in result.stderr.str()


@pytest.mark.parametrize("how", ["pytest.ini", "-o"])
def test_an_empty_device_or_precision_list_means_the_default(scratch_gate, how):
    """As found: an empty ``pplgate_devices =`` was an INTERNALERROR; empty on the command line, it means the default."""
    scratch_gate.case({})
    if how == "pytest.ini":
        scratch_gate.ini(devices="", precisions="")
    args = ["-o", "pplgate_devices=", "-o", "pplgate_precisions= "] if how == "-o" else []
    result = scratch_gate.run("--collect-only", "-q", *args)
    assert result.ret == pytest.ExitCode.OK
    ids = [line.split("[")[1].rstrip("]") for line in result.outlines if line.startswith("test_gate.py::")]
    assert ids == [f"mini-{d}-{p}" for d in ("cpu", "gpu", "gcu") for p in ("fp32", "fp16", "tf32")]


def test_tf32_tests_skip_off_cuda_even_when_strict(scratch_gate):
    scratch_gate.ini(devices="cpu", precisions="fp32 tf32")
    scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}}, max_blocks=1)
    result = scratch_gate.run("--gate-strict", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == 0
    result.stdout.re_match_lines([r"SKIPPED \[1\] test_gate\.py:\d+: tf32 is CUDA's TensorFloat-32 matmul mode, which CPUExecutionProvider does not have"])


@pytest.mark.parametrize("option, module, skipped", [
    ("--benchmark-only", "test_gate.py::test_perplexity", "Skipping non-benchmark (--benchmark-only active)."),
    ("--benchmark-skip", "test_bench.py::test_throughput", "Skipping benchmark (--benchmark-skip active)."),
    ("-o", "test_gate.py::test_perplexity", "a conftest's skip mark"),
])
def test_strict_fails_a_gate_test_anyone_skipped(scratch_gate, option, module, skipped):
    """As found: --benchmark-only skipped the accuracy test of a model 1.8e8 times off, and --gate-strict exited 0.
    The case is right: only the skip fails it."""
    conftest = 'pytest_plugins = ["pytest_pplgate.plugin"]\n'
    if option == "-o":  # a skip mark put on the gate's test by someone else
        conftest += ("import pytest\ndef pytest_collection_modifyitems(items):\n    for item in items:\n"
                     "        item.add_marker(pytest.mark.skip(reason=\"a conftest's skip mark\"))\n")
    scratch_gate.tests("test_perplexity.py", "test_throughput.py", conftest=conftest)
    scratch_gate.ini(devices="cpu")
    scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}}, max_blocks=1)
    args = [option] if option != "-o" else []
    result = scratch_gate.run("-k", "cpu", "--gate-strict", *args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"skipped ({skipped}), and --gate-strict fails every selected gate test that does not run: "
                                 "drop what skipped it, or choose the tests with -k or -m instead.",
                                 f"ERROR {module}[[]mini-cpu-fp32[]]*"])
    assert scratch_gate.run("-k", "cpu", *args).ret == pytest.ExitCode.OK  # not strict: a skip stays a skip


def test_the_gate_report_never_replaces_a_case_file(scratch_gate):
    case = scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}})
    before = case.read_text()
    result = scratch_gate.run(f"--gate-report={case}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --gate-report {case} is in a folder of golden case files (*), where it would replace or add a case: write it elsewhere*"])
    assert case.read_text() == before


@pytest.mark.parametrize("option", ["--junitxml", "--benchmark-json"])
def test_no_output_option_writes_over_a_golden_case(scratch_gate, option):
    """As found: --junitxml and --benchmark-json overwrote golden files."""
    case = scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}})
    before = case.read_text()
    for path in (case, scratch_gate.golden / "new.json"):
        result = scratch_gate.run(f"{option}={path}", "-k", "cpu")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {option} {path} is in a folder of golden case files (*), where it would replace or add a case*"])
    import pytest_benchmark

    if option == "--benchmark-json" and pytest_benchmark.__version__.startswith("4."):
        # pytest-benchmark 4 opens --benchmark-json while it parses the options, before any plugin can refuse it.
        result.stderr.fnmatch_lines(["*(pytest-benchmark 4 has already emptied it: restore it with git checkout)*"])
        return
    assert case.read_text() == before and not (scratch_gate.golden / "new.json").exists()


def test_the_usage_error_names_the_option_written_with_a_space(scratch_gate, shared_data):
    scratch_gate.case({})
    result = scratch_gate.pytester.runpytest(f"--gate-dataset={shared_data / 'wikitext'}", "--gate-tokenizer", str(shared_data / "gpt2"), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*it took the path after --gate-tokenizer for a test path*write path options with '=', e.g. --gate-tokenizer=PATH."])


# Sources: a fetched folder from the option, pytest.ini or the environment; the first cause named first.

@pytest.fixture
def case_sources(scratch_gate):
    scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}})
    # Without --gate-dataset and --gate-tokenizer: the case's hub ids, read from the sources folder.
    return lambda *args: scratch_gate.run(*args, sources=False)


def test_the_gate_reads_the_folder_from_pytest_ini(case_sources, pytester, shared_data, monkeypatch):
    monkeypatch.delenv("PPLGATE_SOURCES", raising=False)
    pytester.makeini(f"[pytest]\npplgate_devices = cpu gcu\npplgate_precisions = fp32\npplgate_sources = {shared_data}\n")
    result = case_sources("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([f"pplgate: *remote sources from {shared_data}*"])


def test_the_gate_fails_on_a_damaged_folder(case_sources, pytester, shared_data, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "sources"
    shutil.copytree(shared_data, copy)
    (copy / "gpt2" / "vocab.json").write_text("{}")
    monkeypatch.setenv("PPLGATE_SOURCES", str(copy))  # the environment variable is the third way to say it
    pytester.makeini("[pytest]\npplgate_devices = cpu\npplgate_precisions = fp32\n")
    result = case_sources("--gate-strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{copy / 'gpt2' / 'vocab.json'} does not match its checksum*"])


def test_a_missing_provider_is_named_before_any_source(case_sources, pytester, tmp_path, monkeypatch):
    """No data options, no network, no cache: the gcu case says what is missing first, the provider."""
    monkeypatch.delenv("PPLGATE_SOURCES", raising=False)
    pytester.makeini("[pytest]\npplgate_devices = gcu\npplgate_precisions = fp32\n")
    result = case_sources("-rs", f"--gate-cache-dir={tmp_path / 'cold'}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*TopsInferenceExecutionProvider (device gcu) is not in this onnxruntime*"])
    result.stdout.no_fnmatch_line("*cannot be reached*")


def test_the_gate_default_model_folder_is_the_cli_default(pytester):
    from pplgate.fileio import default_model_dir

    pytester.makeconftest('pytest_plugins = ["pytest_pplgate.plugin"]')
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_where="""
        def test_where(gate):
            print("MODEL_DIR", gate.settings.model_dir)
    """)
    result = pytester.runpytest("-s", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([f"*MODEL_DIR {default_model_dir()}"])


# Pins: what a recorded value was measured on.

def test_the_gate_fails_the_pin_of_changed_weights(scratch_gate, tmp_path):
    """As found: a golden pinned on model.onnx, its weights changed, and --gate-strict passed with the same model_sha256."""
    from pplgate.modelfiles import model_identity
    from test_modelfiles import save_external

    model = save_external(tmp_path / "exported")
    scratch_gate.ini(devices="cpu")
    path = scratch_gate.case({}, model=str(model), max_blocks=1)
    scratch_gate.run("--gate-update-golden").assert_outcomes(passed=1)
    pin = json.loads(path.read_text())["expected"]["cpu-fp32"]["model"]
    assert pin["sha256"] == model_identity(model, tmp_path / "c").sha256
    weights = model.with_name("model.onnx_data")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = scratch_gate.run("--gate-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*the model of mini-cpu-fp32 is not the one the value in {path} [[]expected.cpu-fp32[]] was measured on (recorded sha256 {pin['sha256']}*"])


# Secrets: used, never shown.

TOKEN = "tok-9d8e7f"


def everything_written(*folders: Path) -> str:
    """Every file's text below the folders, binary files included as far as they decode."""
    return "".join(p.read_bytes().decode("utf-8", "replace") for f in folders for p in Path(f).rglob("*") if p.is_file())


def test_the_gate_masks_tokens_in_failures_commands_and_reports(scratch_gate, model_server):
    url = model_server.url("ok") + f"?token={TOKEN}&sig=abc123sig"
    scratch_gate.ini(devices="cpu")
    scratch_gate.case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1}}, model="https://example.invalid/x.onnx", max_blocks=1)
    report, junit = scratch_gate.path / "gate.json", scratch_gate.path / "junit.xml"
    result = scratch_gate.run(f"--gate-model={url}", f"--gate-report={report}", f"--junitxml={junit}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*outside its tolerance*", "*-m pplgate localize '--model=http://127.0.0.1:*/ok/model.onnx?token=???&sig=???' *"])
    assert TOKEN not in result.stdout.str() + result.stderr.str()
    assert "abc123sig" not in result.stdout.str()
    assert TOKEN not in everything_written(scratch_gate.golden) + report.read_text() + junit.read_text()


def test_an_unreachable_url_with_a_password_skips_without_it(scratch_gate):
    url = "http://user:s3cret-pw@127.0.0.1:9/unreachable.onnx"  # the discard port: nothing listens
    scratch_gate.ini(devices="cpu")
    scratch_gate.case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1}}, model="https://example.invalid/x.onnx", max_blocks=1)
    report = scratch_gate.path / "gate.json"
    result = scratch_gate.run(f"--gate-model={url}", "-rs", f"--gate-report={report}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*model URL http://127.0.0.1:9/unreachable.onnx cannot be reached*"])
    assert "s3cret-pw" not in result.stdout.str() + result.stderr.str() + report.read_text()


def test_a_hub_token_in_the_address_is_never_shown(scratch_gate, tmp_path, cli):
    spec = f"hf://owner/repo/onnx/model.onnx?token={TOKEN}"
    scratch_gate.ini(devices="cpu")
    scratch_gate.case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1}}, model="https://example.invalid/x.onnx", max_blocks=1)
    report, junit = scratch_gate.path / "gate.json", scratch_gate.path / "junit.xml"
    (tmp_path / "empty-sources").mkdir()
    for extra in ([], [f"--gate-sources={tmp_path / 'empty-sources'}"]):
        result = scratch_gate.run(f"--gate-model={spec}", "-rs", f"--gate-report={report}", f"--junitxml={junit}", *extra)
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*model hf://owner/repo/onnx/model.onnx *"])
        assert TOKEN not in result.stdout.str() + result.stderr.str() + report.read_text() + junit.read_text()
    shown = cli("--model", spec, "--dataset", "/nonexistent", "--max-blocks", "1")
    assert shown.code != 0 and TOKEN not in shown.out + shown.err


def test_basic_auth_in_the_url_is_sent_as_a_header_and_never_shown(model_server, base_args, tmp_path, cli):
    url = model_server.url("auth").replace("http://", "http://user:s3cret-pw@")
    ran = cli(*base_args, "--model", url, "--model-dir", tmp_path / "models", "--max-blocks", "1", "--report-json", tmp_path / "r.json",
              "--save-losses", tmp_path / "l.npz")
    assert ran.code == 0, ran.err
    assert json.loads((tmp_path / "r.json").read_text())["model"] == model_server.url("auth")
    assert "s3cret-pw" not in ran.out + ran.err + everything_written(tmp_path)
    wrong = cli(*base_args, "--model", url.replace("s3cret-pw", "wrong-pw"), "--model-dir", tmp_path / "other", "--max-blocks", "1")
    assert wrong.error == (f"pplgate: error: download of {model_server.url('auth')} failed: the server answered HTTP 401 Unauthorized; "
                           "check the URL (signed links expire) or pass --model with a local copy.")
    assert "wrong-pw" not in wrong.out + wrong.err + everything_written(tmp_path)


def test_the_gate_fails_models_it_cannot_evaluate_with_the_sentence(scratch_gate, tiny_model, tmp_path):
    from test_pipeline import bad_models

    models = bad_models(tiny_model, tmp_path)
    scratch_gate.ini(devices="cpu", precisions="fp32 fp16")
    for case in ("truncated", "no logits", "fp16 impossible"):
        path, _, _ = models[case]
        scratch_gate.case({"cpu-fp32": {"perplexity": 2.0, "rel_tol": 0.1}}, model=str(path), name=case.replace(" ", "_"), max_blocks=1)
    result = scratch_gate.run("-k", "truncated-cpu-fp32 or no_logits-cpu-fp32 or impossible-cpu-fp16")
    result.assert_outcomes(errors=3)
    for case in ("truncated", "no logits", "fp16 impossible"):
        result.stdout.fnmatch_lines([f"*{models[case][2]}*"])
    assert "Traceback" not in result.stdout.str()
