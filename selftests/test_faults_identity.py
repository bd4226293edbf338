"""What is derived from a model belongs to its content; broken artifacts are remade; dead processes' leftovers go."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import pytest

from pplgate.devices import parse_device
from pplgate.digest import file_digest, sha256_of
from pplgate.fileio import locked, write_atomic
from pplgate.precision import convert_fp16, fp16_path
from pplgate.sources import resolve_model
from pplgate.testmodel import PRESETS, write_model

pytest_plugins = ["pytester"]

CPU = parse_device("cpu")


def other_weights(tiny_model, folder):
    """The tiny model's architecture with other weights: the same size, another model."""
    import dataclasses

    path = write_model(dataclasses.replace(PRESETS["tiny"], seed=PRESETS["tiny"].seed + 1), folder / "other.onnx")
    assert path.stat().st_size == tiny_model.stat().st_size
    return path


def test_same_size_same_mtime_swap_is_another_model(tiny_model, tmp_path):
    """A model replaced by one of the same size that keeps the old time (cp -p, rsync -t): hash and fp16 follow the content."""
    model = tmp_path / "m.onnx"
    shutil.copyfile(tiny_model, model)
    cache = tmp_path / "cache"
    first = file_digest(model, cache).sha256
    first_fp16 = sha256_of(convert_fp16(model, cache))

    other = other_weights(tiny_model, tmp_path)
    stat = model.stat()
    shutil.copyfile(other, model)
    subprocess.run(["touch", "-r", str(other), str(model)], check=True)  # the swap keeps a recorded-looking time...
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...exactly the old one
    assert model.stat().st_size == stat.st_size and model.stat().st_mtime_ns == stat.st_mtime_ns

    assert file_digest(model, cache).sha256 == sha256_of(other) != first
    converted = convert_fp16(model, cache)
    assert sha256_of(converted) != first_fp16
    assert sha256_of(converted) == sha256_of(convert_fp16(other, cache))


def test_gate_reports_the_swapped_model_and_fails_its_pin(scratch_gate, tiny_model, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copyfile(tiny_model, model)
    scratch_gate.ini(devices="cpu", precisions="fp16")
    scratch_gate.case({"cpu-fp16": {"perplexity": 2.0, "rel_tol": 0.5}}, model=str(model), max_blocks=1)
    scratch_gate.run("--update-golden").assert_outcomes(passed=1)
    stat = model.stat()
    shutil.copyfile(other_weights(tiny_model, tmp_path), model)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = scratch_gate.run("--strict-gate")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*the model of mini-cpu-fp16 is not the one the value*now {sha256_of(model)}*"])


def test_truncated_fp16_conversion_is_made_again(tiny_model, tmp_path, caplog):
    model = tmp_path / "m.onnx"
    shutil.copyfile(tiny_model, model)
    good = sha256_of(convert_fp16(model, tmp_path / "cache"))
    target = fp16_path(model)
    with open(target, "r+b") as f:
        f.truncate(target.stat().st_size // 2)
    with caplog.at_level(logging.INFO, logger="pplgate"):
        again = convert_fp16(model, tmp_path / "cache")
    assert sha256_of(again) == good
    assert "is not the file written for it (changed or truncated since): converting m.onnx again" in caplog.text
    onnx.load(str(again))


def test_html_saved_as_model_by_an_old_run_is_removed_and_downloaded_again(model_server, tmp_path, caplog, tiny_model):
    url = model_server.url("ok")
    (tmp_path / "model.onnx").write_bytes(b"<!DOCTYPE html><html>expired</html>")
    with caplog.at_level(logging.INFO, logger="pplgate"):
        path = resolve_model(url, tmp_path, progress=False)
    assert path.read_bytes() == tiny_model.read_bytes()
    assert "model.onnx in " in caplog.text and "is an HTML page, not an ONNX model: removed, downloading it again" in caplog.text


def test_html_answer_to_a_model_url_is_one_sentence_and_nothing_kept(model_server, tmp_path):
    from pplgate.errors import PplgateError

    with pytest.raises(PplgateError, match=r"sent an HTML page, not an ONNX model, so nothing was kept: check the address"):
        resolve_model(model_server.url("html"), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []


def test_truncated_token_cache_is_rebuilt(dataset_dir, tokenizer_dir, tmp_path, caplog):
    from pplgate.data import load_tokens

    first = load_tokens(dataset_dir, tokenizer_dir, tmp_path)
    (cached,) = (tmp_path / "tokens").glob("*.npz")
    with open(cached, "r+b") as f:
        f.truncate(cached.stat().st_size // 3)
    with caplog.at_level(logging.INFO, logger="pplgate"):
        again = load_tokens(dataset_dir, tokenizer_dir, tmp_path)
    assert not again.cache_hit and np.array_equal(again.ids, first.ids)
    assert f"token cache {cached} cannot be used" in caplog.text
    assert load_tokens(dataset_dir, tokenizer_dir, tmp_path).cache_hit


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    left = tmp_path / f".r.json.{pid}.deadbeef.tmp"
    left.write_text("half")
    alive = tmp_path / f".r.json.{os.getppid()}.cafef00d.tmp"  # a live process's: not ours to remove
    alive.write_text("busy")
    write_atomic(tmp_path / "r.json", lambda f: f.write(b"{}"))
    assert not left.exists() and alive.exists()


def test_localize_folders_of_a_killed_run_are_removed(tiny_model, blocks, tmp_path):
    from pplgate.localize import Side, localize

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
    left = tmp_path / f"pplgate-localize-{dead}.x1y2z3w4"  # as tempfile names it: 8 characters
    left.mkdir()
    (left / "tap.onnx").write_bytes(b"x" * 1000)
    side = Side.of(tiny_model, CPU, "fp32")
    localize(side, side, blocks.head(1), workdir=tmp_path)
    assert not left.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_long_lock_wait_names_the_holder(tmp_path, caplog, monkeypatch):
    import pplgate.fileio

    monkeypatch.setattr(pplgate.fileio, "QUIET_WAIT_S", 0.2)
    target = tmp_path / "model.onnx"
    holding = threading.Event()

    def hold():
        with locked(target):
            holding.set()
            time.sleep(1.0)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(5)
    with caplog.at_level(logging.INFO, logger="pplgate"), locked(target):
        pass
    thread.join()
    assert f"waiting for {target}, which process {os.getpid()} is making" in caplog.text


def test_another_address_with_the_same_file_name_is_downloaded_again(model_server, tmp_path, caplog):
    first = resolve_model(model_server.url("ok"), tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="pplgate"):
        again = resolve_model(model_server.url("norange"), tmp_path, progress=False)
    assert again == first
    assert f"model.onnx in {tmp_path} was downloaded from {model_server.url('ok')}, not {model_server.url('norange')}: downloading it again" in caplog.text
    assert [p for p, _ in model_server.requests] == ["/ok/model.onnx", "/norange/model.onnx"]
