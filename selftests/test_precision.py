"""fp16 conversions: made once per source content, remade when changed, loaded by path, one sentence without a converter."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pplgate.digest import sha256_of
from pplgate.errors import PplgateError
from pplgate.precision import convert_fp16, fp16_path
from pplgate.runtime import open_session
from pplgate.target import Target
from pplgate.testmodel import PRESETS, write_model


def other_weights(tiny_model, folder):
    """The tiny model's architecture with other weights: the same size, another model."""
    import dataclasses

    path = write_model(dataclasses.replace(PRESETS["tiny"], seed=PRESETS["tiny"].seed + 1), folder / "other.onnx")
    assert path.stat().st_size == tiny_model.stat().st_size
    return path


def test_a_conversion_is_made_once(tiny_model, tmp_path):
    model = shutil.copy(tiny_model, tmp_path / "m.onnx")
    first = convert_fp16(model, tmp_path / "cache")
    mtime = first.stat().st_mtime_ns
    assert convert_fp16(model, tmp_path / "cache").stat().st_mtime_ns == mtime


def test_a_same_size_same_time_swap_of_the_source_is_another_conversion(tiny_model, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copyfile(tiny_model, model)
    cache = tmp_path / "cache"
    first_fp16 = sha256_of(convert_fp16(model, cache))
    other = other_weights(tiny_model, tmp_path)
    stat = model.stat()
    shutil.copyfile(other, model)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    converted = convert_fp16(model, cache)
    assert sha256_of(converted) != first_fp16
    assert sha256_of(converted) == sha256_of(convert_fp16(other, cache))


def test_a_truncated_conversion_is_made_again(tiny_model, tmp_path, caplog):
    model = tmp_path / "m.onnx"
    shutil.copyfile(tiny_model, model)
    good = sha256_of(convert_fp16(model, tmp_path / "cache"))
    target = fp16_path(model)
    with open(target, "r+b") as f:
        f.truncate(target.stat().st_size // 2)
    with caplog.at_level(logging.INFO, logger="pplgate"):
        again = convert_fp16(model, tmp_path / "cache")
    assert sha256_of(again) == good
    assert f"{target} is not the file made from m.onnx (changed or truncated since): converting it again" in caplog.text
    onnx.load(str(again))


def test_a_conversion_with_external_data_is_loaded_by_path(tiny_model, block_matrix, tmp_path):
    source = tmp_path / "m.onnx"
    source.write_bytes(tiny_model.read_bytes())
    converted = convert_fp16(source, external_over=0)  # as a model over protobuf's 2 GB is written
    assert (tmp_path / "m.fp16.onnx.data").stat().st_size > converted.stat().st_size
    ids = block_matrix[:1, :256]
    fp16 = open_session(converted, Target.parse("cpu-fp16"), "graph").token_losses(ids)  # as shipped: fp16 already
    fp32 = open_session(source, Target.parse("cpu-fp32"), "graph").token_losses(ids)
    np.testing.assert_allclose(fp16.mean(), fp32.mean(), rtol=1e-3)


def test_fp16_without_onnxruntime_transformers_is_one_sentence(tiny_model, tmp_path, monkeypatch):
    source = shutil.copy(tiny_model, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime.transformers", None)
    monkeypatch.setitem(sys.modules, "onnxruntime.transformers.float16", None)
    with pytest.raises(PplgateError) as info:
        convert_fp16(source, tmp_path / "c")
    assert str(info.value).startswith(f"fp16 needs onnxruntime's float16 converter (onnxruntime.transformers.float16), which this onnxruntime "
                                      f"{ort.__version__} cannot import")
    assert str(info.value).endswith("install an onnxruntime build that ships onnxruntime.transformers, or run fp32.")


def test_a_model_that_is_fp16_already_runs_as_shipped_at_fp16_only(tiny_model, block_matrix, tmp_path):
    """As found: an fp16 conversion given as the model reported "IEEE fp32" at fp32, and at fp16 was converted again
    into an invalid file that was kept."""
    cache = tmp_path / "cache"
    shipped = shutil.copy(convert_fp16(shutil.copy(tiny_model, tmp_path / "m.onnx"), cache), tmp_path / "shipped.onnx")
    for precision in ("fp32", "tf32"):
        with pytest.raises(PplgateError, match=rf"^model shipped.onnx is fp16 already \(most of its weights are float16\), "
                                               rf"so it cannot run at {precision}: pass the fp32 model for {precision}, or "
                                               r"run this one with --precision fp16\.$"):
            open_session(shipped, Target.parse(f"gpu-{precision}"), "graph", cache_dir=cache)
    session = open_session(shipped, Target.parse("cpu-fp16"), "graph", cache_dir=cache, vocab=50257)
    assert session.model_path == shipped and not fp16_path(shipped).exists()
    assert session.computed_as.startswith("the model's own fp16 weights, as shipped, most of whose operators CPUExecutionProvider")
    assert np.isfinite(session.token_losses(block_matrix[:1, :64])).all()


def test_an_invalid_conversion_is_never_kept(tiny_model, tmp_path, monkeypatch):
    import onnxruntime.transformers.float16 as float16

    def invalid(model, keep_io_types):
        model.graph.node[0].input[0] = "nowhere"  # a node reading a tensor nothing makes
        return model

    monkeypatch.setattr(float16, "convert_float_to_float16", invalid)
    source = shutil.copy(tiny_model, tmp_path / "m.onnx")
    with pytest.raises(PplgateError, match=r"^onnxruntime's float16 converter made an invalid model of m.onnx \(.*\): "
                                           r"nothing was kept; run fp32, or convert it with your own tools"):
        convert_fp16(source, tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["cache", "m.onnx"]


CONVERT = """
import logging, sys
from pathlib import Path
from pplgate.precision import convert_fp16
logging.basicConfig(level=logging.INFO, format="%(message)s")
print(convert_fp16(Path(sys.argv[1])))
"""


@pytest.mark.e2e
def test_concurrent_runs_convert_once(tiny_model, tmp_path):
    source = shutil.copy(tiny_model, tmp_path / "model.onnx")
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT, str(source)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(err.count("converting model.onnx into") for _, err in outs) == 1
    assert {out.strip() for out, _ in outs} == {str(tmp_path / "model.fp16.onnx")}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["model.fp16.onnx", "model.fp16.onnx.json", "model.onnx"]
    onnx.checker.check_model(str(tmp_path / "model.fp16.onnx"))
