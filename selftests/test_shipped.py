"""The model as shipped: loaded by path, scored in a second session, any causal-LM export style."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import pplgate.runtime
from pplgate.cli import main
from pplgate.devices import parse_device
from pplgate.precision import convert_fp16
from pplgate.runtime import open_session
from pplgate.testmodel import PRESETS, build_model, load_weights, reference_token_losses

CPU = parse_device("cpu")


def _save(model: onnx.ModelProto, path, external: bool = False):
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def export_styles(tmp_path_factory):
    """builtin:tiny's weights in each interface of the field, and with its weights in a file of their own."""
    folder = tmp_path_factory.mktemp("styles")
    cfg = PRESETS["tiny"]
    return {
        "past": _save(build_model(cfg, style="past"), folder / "decoder_with_past_model.onnx"),
        "merged": _save(build_model(cfg, style="merged"), folder / "decoder_model_merged.onnx"),
        "external data": _save(build_model(cfg), folder / "external.onnx", external=True),
    }


@pytest.mark.parametrize("style", ["past", "merged", "external data"])
@pytest.mark.parametrize("scoring", ["graph", "host"])
def test_every_export_style_gives_the_reference_losses(export_styles, block_matrix, style, scoring):
    path = export_styles[style]
    session = open_session(path, CPU, "fp32", scoring)
    if style == "external data":
        assert path.with_name(path.name + ".data").stat().st_size > path.stat().st_size  # the weights are beside it
    else:
        assert "past_key_values.0.key" in session.iface.inputs and session.iface.past_shapes["past_key_values.0.key"] == (2, 32)
    assert ("use_cache_branch" in session.iface.inputs) == (style == "merged")
    cfg, weights = load_weights(path)
    obtained = session.token_losses(block_matrix[:2])  # [2, 1023]
    for row, block in zip(obtained, block_matrix[:2]):
        np.testing.assert_allclose(row, reference_token_losses(cfg, weights, block), rtol=1e-4)


def test_the_model_file_is_what_onnxruntime_loads(tiny_model, block_matrix, monkeypatch, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_model.read_bytes())
    created = []
    real = ort.InferenceSession

    def spy(what, *args, **kwargs):
        created.append(what)
        return real(what, *args, **kwargs)

    def no_load(*args, **kwargs):
        raise AssertionError("the evaluation path read the model into Python")

    monkeypatch.setattr(pplgate.runtime.ort, "InferenceSession", spy)
    monkeypatch.setattr(onnx, "load", no_load)
    monkeypatch.setattr(onnx, "load_model", no_load)
    session = open_session(model, CPU, "fp32", "graph")
    session.token_losses(block_matrix[:1])
    # The model by its path; the scorer is pplgate's own small graph, as bytes.
    assert created[0] == str(model)
    assert isinstance(created[1], bytes) and len(created[1]) < 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no rewritten copy on disk


def test_fp16_conversion_with_external_data_is_loaded_by_path(tiny_model, block_matrix, tmp_path):
    source = tmp_path / "m.onnx"
    source.write_bytes(tiny_model.read_bytes())
    converted = convert_fp16(source, external_over=0)  # as a model over protobuf's 2 GB is written
    assert (tmp_path / "m.fp16.onnx.data").stat().st_size > converted.stat().st_size
    fp16 = open_session(converted, CPU, "fp32", "graph").token_losses(block_matrix[:1])
    fp32 = open_session(source, CPU, "fp32", "graph").token_losses(block_matrix[:1])
    np.testing.assert_allclose(fp16.mean(), fp32.mean(), rtol=1e-3)


def test_block_size_512(base_args, tmp_path, capsys):
    report = tmp_path / "r.json"
    assert main(base_args + ["--block-size", "512", "--max-blocks", "3", "--report-json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert (r["blocks"], r["scored_tokens"]) == (3, 3 * 511)


def test_block_size_the_graph_cannot_take_is_refused(base_args, capsys):
    # builtin:tiny has learned positions up to 1024: its sequence axis is dynamic, its context is not.
    assert main(base_args + ["--block-size", "2048", "--max-blocks", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot take blocks of 2048 tokens" in err[0]
    assert err[0].endswith("pass --block-size (a case's method.block_size) no larger than its context.")

