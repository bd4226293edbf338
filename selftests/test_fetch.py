"""``python -m pplgate fetch DIR``: a case's model, data and tokenizer in one folder for a node without network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import STAND_IN_COMMIT, ModelServer


def cli_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pplgate", *args], capture_output=True, text=True, timeout=300, env=env)


def offline(home: Path, **extra: str) -> dict:
    """The environment of a node without network: the hub refused, its cache at ``home``."""
    env = {k: v for k, v in os.environ.items() if k != "PPLGATE_SOURCES"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home), **extra)
    return env


def final_report(stdout: str) -> dict:
    return json.loads(stdout.split("Final report:\n", 1)[1])


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, hub_stand_in, tiny_model) -> tuple[Path, str]:
    """A folder fetched from the stand-in hub (a process of its own: huggingface_hub reads HF_HOME when imported) and a local HTTP server."""
    folder = tmp_path_factory.mktemp("node") / "sources"
    server = ModelServer(tiny_model.read_bytes())
    url = server.url("ok", "gpt2-like.onnx")
    try:
        result = cli_process("fetch", str(folder), "--model", url, "--no-progress", "--cache-dir", str(folder.parent / "c"), env=offline(hub_stand_in))
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    return folder, url


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_a_run_reads_everything_from_the_folder_offline(fetched, tmp_path, dataset_dir, tokenizer_dir, cli):
    folder, url = fetched
    args = ["--max-blocks", "2", "--no-progress", "--model-dir", str(tmp_path / "m"), "--cache-dir", str(tmp_path / "c")]
    # Nothing cached in an empty hub home: only the folder can serve the sources.
    via_folder = cli_process("--model", url, *args, env=offline(tmp_path / "no-cache", PPLGATE_SOURCES=str(folder)))
    assert via_folder.returncode == 0, via_folder.stderr
    report = final_report(via_folder.stdout)
    assert report["dataset"] == str(folder / "wikitext") and report["tokenizer"] == str(folder / "gpt2")
    assert report["model"] == str(folder / "model" / "gpt2-like.onnx")
    direct = cli("--model", folder / "model" / "gpt2-like.onnx", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, *args).report
    assert report["blocks_sha256"] == direct["blocks_sha256"] and report["perplexity"] == direct["perplexity"]


@pytest.mark.e2e
def test_fetch_without_network_says_so(tmp_path):
    result = cli_process("fetch", str(tmp_path / "s"), "--no-progress", env=offline(tmp_path / "empty"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("pplgate: error: dataset Salesforce/wikitext cannot be reached")
    assert not (tmp_path / "s" / "wikitext").exists()


@pytest.fixture(scope="module")
def hub_model_with_external_data(hub_stand_in) -> str:
    """builtin:tiny's weights saved beside its graph (model.onnx + model.onnx_data), in the stand-in hub's gpt2 repository."""
    import onnx

    from pplgate.testmodel import PRESETS, build_model

    folder = hub_stand_in / "hub" / "models--openai-community--gpt2" / "snapshots" / STAND_IN_COMMIT / "onnx"
    folder.mkdir(exist_ok=True)
    onnx.save_model(build_model(PRESETS["tiny"]), str(folder / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx_data")
    return "hf://openai-community/gpt2/onnx/model.onnx"


@pytest.mark.e2e
def test_a_model_with_external_data_comes_with_its_weights(hub_stand_in, hub_model_with_external_data, tmp_path, dataset_dir, tokenizer_dir, cli):
    folder = tmp_path / "sources"
    spec = hub_model_with_external_data
    fetched = cli_process("fetch", str(folder), "--model", spec, "--no-progress", "--cache-dir", str(tmp_path / "c"), env=offline(hub_stand_in))
    assert fetched.returncode == 0, fetched.stderr
    assert "and its weights in model.onnx_data" in fetched.stdout
    assert sorted(line.split()[1] for line in (folder / "model" / "SHA256SUMS").read_text().splitlines()) == ["model.onnx", "model.onnx_data"]
    # The folder serves the hub model in this process too: no hub is asked.
    args = ["--model", spec, "--max-blocks", "2", "--no-progress", "--cache-dir", str(tmp_path / "c"), "--model-dir", str(tmp_path / "m")]
    via_folder = cli(*args, "--sources", folder).report
    direct = cli("--model", "builtin:tiny", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, *args[2:]).report
    assert via_folder["perplexity"] == direct["perplexity"]
    weights = folder / "model" / "model.onnx_data"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert cli(*args, "--sources", folder).error.startswith(f"pplgate: error: {weights} does not match its checksum in {folder / 'model' / 'SHA256SUMS'}")


def test_an_error_page_saved_as_the_model_is_not_kept(tmp_path, dataset_dir, tokenizer_dir, cli):
    server = ModelServer(b"<html><body>Access denied</body></html>")
    try:
        ran = cli("fetch", tmp_path / "s", "--model", server.url("ok", "gpt2.onnx"), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
                  "--no-progress", "--cache-dir", tmp_path / "c")
    finally:
        server.close()
    assert ran.error.startswith(f"pplgate: error: {server.url('ok', 'gpt2.onnx')} sent an HTML page, not an ONNX model, so nothing was kept: check the address")
    assert not list((tmp_path / "s").rglob("gpt2.onnx"))


def test_a_fetch_that_breaks_off_leaves_no_lock_in_the_folder(model_server, dataset_dir, tokenizer_dir, tmp_path, cli):
    """The folder is copied to nodes: a failed download's lock must not go with it."""
    folder = tmp_path / "s"
    cli("fetch", folder, "--model", model_server.url("status-503"), "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
        "--no-progress", "--cache-dir", tmp_path / "c").error
    assert [p.name for p in (folder / "model").iterdir() if p.name.endswith((".lock", ".pid"))] == []


def test_fetch_of_a_misspelt_case_names_the_cases(tmp_path, cli):
    golden = Path(__file__).resolve().parents[1] / "golden"
    cases = ", ".join(str(golden / name) for name in sorted(p.name for p in golden.glob("*.json")))
    assert cli("fetch", tmp_path / "s", "--case", golden / "gpt2-smal.json").error == (
        f"pplgate: error: --case {golden / 'gpt2-smal.json'}: no such golden file; pass the path of a case file: one of {cases}.")


def test_fetch_never_deletes_a_file_it_did_not_write(dataset_dir, tokenizer_dir, tmp_path, cli):
    folder = tmp_path / "s"
    args = ["fetch", folder, "--model", "builtin:tiny", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir, "--no-progress", "--cache-dir", tmp_path / "c"]
    assert cli(*args).code == 0
    mine = folder / "gpt2" / "notes.txt"
    mine.write_text("the user's")
    assert cli(*args).error == (f"pplgate: error: {folder / 'gpt2'} holds files fetch did not write (notes.txt), which replacing the folder "
                                "would delete: move them out, or fetch into another folder.")
    assert mine.read_text() == "the user's"


def test_a_second_model_of_the_same_name_never_replaces_the_first(tiny_model, dataset_dir, tokenizer_dir, tmp_path, cli):
    """As found: fetching a second case whose model had the same file name replaced the first and rewrote its
    SHA256SUMS line, so the first case verified and measured another model.  Hub exports share names."""
    from test_precision import other_weights

    first, second = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"
    first.parent.mkdir()
    first.write_bytes(tiny_model.read_bytes())
    second.parent.mkdir()
    second.write_bytes(other_weights(tiny_model, tmp_path).read_bytes())
    folder = tmp_path / "s"
    args = ["--dataset", dataset_dir, "--tokenizer", tokenizer_dir, "--no-progress", "--cache-dir", tmp_path / "c"]
    assert cli("fetch", folder, "--model", first, *args).code == 0
    sums = (folder / "model" / "SHA256SUMS").read_text()
    error = cli("fetch", folder, "--model", second, *args).error
    assert error.startswith(f"pplgate: error: {folder / 'model' / 'model.onnx'} ") and str(second) in error, error
    assert (folder / "model" / "model.onnx").read_bytes() == first.read_bytes()
    assert (folder / "model" / "SHA256SUMS").read_text() == sums
    assert cli("fetch", folder, "--model", first, *args).code == 0  # the same source again: fine
