"""One folder for a node without network: fetch writes it, --sources reads it, checksums guard it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pplgate.fileio import default_model_dir

pytest_plugins = ["pytester"]



def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pplgate", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def offline(home: Path, **extra: str) -> dict:
    """The environment of a node without network: the hub refused, its cache at ``home``."""
    env = {k: v for k, v in os.environ.items() if k != "PPLGATE_SOURCES"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home), **extra)
    return env


def final_report(stdout: str) -> dict:
    return json.loads(stdout.split("Final report:\n", 1)[1])


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, hub_stand_in, tiny_model) -> tuple[Path, str]:
    """A folder fetched from the stand-in hub and a local HTTP server, and the model URL it was fetched from."""
    from selftests.conftest import ModelServer

    folder = tmp_path_factory.mktemp("node") / "sources"
    server = ModelServer(tiny_model.read_bytes())
    url = server.url("ok", "gpt2-like.onnx")
    try:
        result = cli("fetch", str(folder), "--model", url, "--no-progress", "--cache-dir", str(folder.parent / "c"),
                     env=offline(hub_stand_in))
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    return folder, url


def test_fetch_writes_the_shared_layout_with_checksums(fetched, shared_data):
    folder, _ = fetched
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".onnx.json")) == [
        "gpt2/SHA256SUMS", "gpt2/config.json", "gpt2/merges.txt", "gpt2/tokenizer_config.json", "gpt2/vocab.json",
        "model/SHA256SUMS", "model/gpt2-like.onnx",
        "wikitext/README.md", "wikitext/SHA256SUMS", "wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet",
    ]
    # The same bytes as the copies they came from: ../shared/data's own checksums hold for them.
    for name in ("wikitext", "gpt2"):
        theirs = set((shared_data / name / "SHA256SUMS").read_text().splitlines())
        assert theirs <= set((folder / name / "SHA256SUMS").read_text().splitlines())


def test_a_run_reads_everything_from_the_folder_offline(fetched, tmp_path, dataset_dir, tokenizer_dir):
    folder, url = fetched
    empty_hub = tmp_path / "no-cache"  # nothing cached: only the folder can serve the sources
    args = ["--max-blocks", "2", "--no-progress", "--model-dir", str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c")]
    via_folder = cli("--model", url, *args, env=offline(empty_hub, PPLGATE_SOURCES=str(folder)))
    assert via_folder.returncode == 0, via_folder.stderr
    report = final_report(via_folder.stdout)
    assert report["dataset"] == str(folder / "wikitext") and report["tokenizer"] == str(folder / "gpt2")
    assert report["model"] == str(folder / "model" / "gpt2-like.onnx")
    direct = final_report(cli("--model", str(folder / "model" / "gpt2-like.onnx"), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, *args,
                              env=offline(empty_hub)).stdout)
    assert report["blocks_sha256"] == direct["blocks_sha256"] and report["perplexity"] == direct["perplexity"]


def test_a_damaged_file_in_the_folder_is_named(fetched, tmp_path):
    folder, url = fetched
    copy = tmp_path / "sources"
    shutil.copytree(folder, copy)
    parquet = copy / "wikitext" / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet"
    data = bytearray(parquet.read_bytes())
    data[100] ^= 0xFF
    parquet.write_bytes(bytes(data))
    result = cli("--model", url, "--sources", str(copy), "--no-progress", "--cache-dir", str(tmp_path / "c"), env=offline(tmp_path / "hf"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"pplgate: error: {parquet} does not match its checksum in {copy / 'wikitext' / 'SHA256SUMS'} "
        f"(sha256 {__import__('hashlib').sha256(bytes(data)).hexdigest()}, listed 66e41974d7d3bcd514713166739e9f43d04cb03480cb2cc51b3f95109216c5e0): "
        f"the copy is damaged or was changed; write it again with 'python -m pplgate fetch {copy}' on a machine with network.")
    assert "Traceback" not in result.stderr and "Final report" not in result.stdout


def test_a_model_not_in_the_folder_says_how_to_bring_it(shared_data, tmp_path):
    result = cli("--sources", str(shared_data), "--no-progress", "--cache-dir", str(tmp_path / "c"), env=offline(tmp_path / "hf"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "pplgate: error: model https://topsmodel-1257133546.cos.ap-shanghai.myqcloud.com/topsmodel-1257133546/topsegc/local/model/GPT/"
        f"gpt2_small-huggingface-op13-fp32-seqN-nocache.onnx is not in the sources folder {shared_data} "
        f"(no {shared_data / 'model' / 'gpt2_small-huggingface-op13-fp32-seqN-nocache.onnx'}): write it there with 'python -m pplgate fetch {shared_data}'")


def test_fetch_without_network_says_so(tmp_path):
    result = cli("fetch", str(tmp_path / "s"), "--no-progress", env=offline(tmp_path / "empty"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("pplgate: error: dataset Salesforce/wikitext cannot be reached")
    assert not (tmp_path / "s" / "wikitext").exists()


@pytest.fixture
def gate(scratch_gate):
    scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5}})
    # Without --dataset and --tokenizer: the case's hub ids, read from the sources folder.
    return lambda *args: scratch_gate.run(*args, sources=False)


def test_the_gate_reads_the_folder_from_pytest_ini(gate, pytester, shared_data, monkeypatch):
    monkeypatch.delenv("PPLGATE_SOURCES", raising=False)
    pytester.makeini(f"[pytest]\npplgate_devices = cpu gcu\npplgate_precisions = fp32\npplgate_sources = {shared_data}\n")
    result = gate("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([f"pplgate: *remote sources from {shared_data}*"])


def test_the_gate_fails_on_a_damaged_folder(gate, pytester, shared_data, tmp_path, monkeypatch):
    copy = tmp_path / "sources"
    shutil.copytree(shared_data, copy)
    (copy / "gpt2" / "vocab.json").write_text("{}")
    monkeypatch.setenv("PPLGATE_SOURCES", str(copy))  # the environment variable is the third way to say it
    pytester.makeini("[pytest]\npplgate_devices = cpu\npplgate_precisions = fp32\n")
    result = gate("--strict-gate")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{copy / 'gpt2' / 'vocab.json'} does not match its checksum*"])


def test_a_missing_provider_is_named_before_any_source(gate, pytester, tmp_path, monkeypatch):
    """No data options, no network, no cache: the gcu case says what is missing first, the provider."""
    monkeypatch.delenv("PPLGATE_SOURCES", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    pytester.makeini("[pytest]\npplgate_devices = gcu\npplgate_precisions = fp32\n")
    result = gate("-rs", "--gate-cache-dir", str(tmp_path / "cold"))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*TopsInferenceExecutionProvider (device gcu) is not in this onnxruntime*"])
    result.stdout.no_fnmatch_line("*cannot be reached*")


def test_progress_lines_when_output_is_not_a_terminal(base_args, tmp_path):
    args = [a for a in base_args if a != "--no-progress"]
    result = cli(*args, "--max-blocks", "6", "--batchsize", "2")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("pplgate: cpu-fp32: ")]
    assert [line.split(", ")[0] for line in lines] == ["pplgate: cpu-fp32: 2/6 blocks", "pplgate: cpu-fp32: 4/6 blocks", "pplgate: cpu-fp32: 6/6 blocks"]
    assert all(" tokens/s, perplexity so far " in line for line in lines)
    assert "ETA " in lines[0] and "ETA" not in lines[-1]
    assert "\r" not in result.stderr  # no bar redrawn into the log
    assert json.loads(result.stdout.split("Final report:\n", 1)[1])["perplexity"] == pytest.approx(
        float(lines[-1].rsplit("perplexity so far ", 1)[1]), rel=1e-5)


def test_the_cli_builds_models_where_the_gate_does_whatever_the_folder(dataset_dir, tokenizer_dir, tmp_path):
    result = cli("--model", "builtin:tiny", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, "--max-blocks", "1", "--no-progress",
                 "--cache-dir", str(tmp_path / "c"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "model").exists()
    assert (default_model_dir() / final_report(result.stdout)["model_file"]).is_file()


def test_the_gate_default_model_folder_is_the_cli_default(pytester):
    pytester.makeconftest('pytest_plugins = ["pytest_pplgate.plugin"]')
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_where="""
        def test_where(gate):
            print("MODEL_DIR", gate.settings.model_dir)
    """)
    result = pytester.runpytest("-s", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([f"*MODEL_DIR {default_model_dir()}"])


@pytest.fixture(scope="module")
def hub_model_with_external_data(hub_stand_in) -> str:
    """builtin:tiny's weights saved beside its graph (model.onnx + model.onnx_data), in the stand-in hub's gpt2 repository."""
    import onnx

    from pplgate.testmodel import PRESETS, build_model
    from selftests.conftest import STAND_IN_COMMIT

    folder = hub_stand_in / "hub" / "models--openai-community--gpt2" / "snapshots" / STAND_IN_COMMIT / "onnx"
    folder.mkdir(exist_ok=True)
    onnx.save_model(build_model(PRESETS["tiny"]), str(folder / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx_data")
    return "hf://openai-community/gpt2/onnx/model.onnx"


def test_a_model_with_external_data_comes_with_its_weights(hub_stand_in, hub_model_with_external_data, tmp_path, dataset_dir, tokenizer_dir):
    folder = tmp_path / "sources"
    spec = hub_model_with_external_data
    fetched = cli("fetch", str(folder), "--model", spec, "--no-progress", "--cache-dir", str(tmp_path / "c"), env=offline(hub_stand_in))
    assert fetched.returncode == 0, fetched.stderr
    assert "and its weights in model.onnx_data" in fetched.stdout
    assert sorted(line.split()[1] for line in (folder / "model" / "SHA256SUMS").read_text().splitlines()) == ["model.onnx", "model.onnx_data"]
    args = ["--model", spec, "--max-blocks", "2", "--no-progress", "--cache-dir", str(tmp_path / "c")]
    offline_run = cli(*args, "--sources", str(folder), env=offline(tmp_path / "no-cache"))
    assert offline_run.returncode == 0, offline_run.stderr
    direct = cli("--model", "builtin:tiny", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, *args[2:], env=offline(tmp_path / "no-cache"))
    assert final_report(offline_run.stdout)["perplexity"] == final_report(direct.stdout)["perplexity"]
    weights = folder / "model" / "model.onnx_data"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    damaged = cli(*args, "--sources", str(folder), env=offline(tmp_path / "no-cache"))
    assert damaged.returncode == 1
    assert f"pplgate: error: {weights} does not match its checksum in {folder / 'model' / 'SHA256SUMS'}" in damaged.stderr


def test_an_error_page_saved_as_the_model_is_not_kept(tmp_path, dataset_dir, tokenizer_dir):
    from selftests.conftest import ModelServer

    server = ModelServer(b"<html><body>Access denied</body></html>")
    try:
        result = cli("fetch", str(tmp_path / "s"), "--model", server.url("ok", "gpt2.onnx"), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
                     "--no-progress", "--cache-dir", str(tmp_path / "c"))
    finally:
        server.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"pplgate: error: {server.url('ok', 'gpt2.onnx')} sent an HTML page, not an ONNX model, so nothing was kept: check the address")
    assert not list((tmp_path / "s").rglob("gpt2.onnx"))
    assert not (tmp_path / "s" / "model" / "gpt2.onnx").exists()


def test_a_fetch_that_breaks_off_leaves_no_lock_in_the_folder(model_server, dataset_dir, tokenizer_dir, tmp_path):
    """The folder is copied to nodes: a failed download's lock must not go with it."""
    folder = tmp_path / "s"
    result = cli("fetch", str(folder), "--model", model_server.url("status-503"), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
                 "--no-progress", "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [p.name for p in (folder / "model").iterdir() if p.name.endswith((".lock", ".pid"))] == []


def test_fetch_of_a_misspelt_case_names_the_cases(tmp_path):
    golden = Path(__file__).resolve().parents[1] / "golden"
    result = cli("fetch", str(tmp_path / "s"), "--case", str(golden / "gpt2-smal.json"))
    assert result.returncode == 1
    cases = ", ".join(str(golden / name) for name in sorted(p.name for p in golden.glob("*.json")))
    assert result.stderr.strip() == f"pplgate: error: --case {golden / 'gpt2-smal.json'}: no such golden file; pass the path of a case file: one of {cases}."


def test_no_advice_about_pytorch_in_a_run(base_args, tmp_path):
    """transformers advises at import that PyTorch is absent; pplgate uses its tokenizers only."""
    args = list(base_args)
    args[args.index("--cache-dir") + 1] = str(tmp_path / "cold")  # a cold cache: the tokenizer is loaded
    result = cli(*args, "--max-blocks", "1")
    assert result.returncode == 0, result.stderr
    assert "PyTorch" not in result.stderr + result.stdout
