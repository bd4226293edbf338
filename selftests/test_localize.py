"""``python -m pplgate localize``: the first node where a run departs from its reference."""

from __future__ import annotations

import json

import onnx
import pytest

import math
import subprocess
import sys
from pathlib import Path

from onnx import TensorProto, helper

from pplgate.blocks import Blocks
from pplgate.errors import PplgateError
from pplgate.localize import DEFAULT_THRESHOLD, Side, localize, render
from pplgate.target import Target
from pplgate.testmodel import PRESETS, build_model, init_weights

FP32, FP16 = Target.parse("cpu-fp32"), Target.parse("cpu-fp16")


@pytest.fixture(scope="module")
def short(block_matrix):
    """Two blocks of 128 tokens: every node's arithmetic, at an eighth of a block's cost."""
    return Blocks.from_matrix(block_matrix[:2, :128])


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory):
    """builtin:tiny with layer 1's first MLP weight (c_fc) 0.1% larger."""
    cfg = PRESETS["tiny"]
    weights = init_weights(cfg)
    weights["h.1.mlp.c_fc.weight"] = weights["h.1.mlp.c_fc.weight"] * 1.001
    path = tmp_path_factory.mktemp("perturbed") / "perturbed.onnx"
    onnx.save(build_model(cfg, weights), str(path))
    return path


def test_a_perturbed_weight_is_found_at_its_matrix_product(perturbed, tiny_model, short):
    loc = localize(Side.of(perturbed, FP32), Side.of(tiny_model, FP32), short.head(1))
    first = loc.first_divergence
    assert (first.op_type, first.node.split("/")[0]) == ("MatMul", "h.1.mlp")
    assert first.weights == ["h.1.mlp.c_fc.weight"]
    assert first.rel_l2 == pytest.approx(1e-3, rel=1e-3)
    before = loc.tensors[: loc.tensors.index(first)]
    assert len(before) > 50 and all(t.rel_l2 <= loc.threshold for t in before)
    assert all(t.rel_l2 == 0 for t in before)  # the same kernels on the same inputs: exact


def test_a_model_against_itself_has_no_divergence(tiny_model, short):
    loc = localize(Side.of(tiny_model, FP32), Side.of(tiny_model, FP32), short.head(1))
    assert loc.first_divergence is None
    assert all(t.rel_l2 == 0 and t.max_abs == 0 and t.cosine == 1 for t in loc.tensors)
    assert loc.only_run == loc.only_reference == []


def test_fp16_against_fp32_reports_errors_without_a_false_divergence(tiny_model, short):
    loc = localize(Side.of(tiny_model, FP16), Side.of(tiny_model, FP32), short)
    assert loc.threshold == DEFAULT_THRESHOLD[True]
    assert loc.first_divergence is None
    assert max(t.rel_l2 for t in loc.tensors) > 1e-3  # fp16 rounding, reported
    assert loc.only_run == ["graph_output_cast_0"]  # the converter's cast back to float32 logits


def _renamed(tiny_model, path, count: int | None):
    """A copy whose first ``count`` node outputs (all for None) have other names."""
    model = onnx.load(str(tiny_model))
    renames = {}
    for node in model.graph.node[:count]:
        for i, name in enumerate(node.output):
            if name != "logits":
                renames[name] = node.output[i] = "other/" + name
    for node in model.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
    onnx.save(model, str(path))
    return path


def test_tensors_on_one_side_only_are_listed(tiny_model, short, tmp_path):
    other = _renamed(tiny_model, tmp_path / "renamed.onnx", count=10)
    loc = localize(Side.of(tiny_model, FP32), Side.of(other, FP32), short.head(1))
    assert len(loc.only_run) == len(loc.only_reference) > 0
    assert all(name.startswith("other/") for name in loc.only_reference)
    assert loc.tensors and loc.first_divergence is None


def test_nothing_in_common_is_one_sentence(tiny_model, short, tmp_path):
    other = _renamed(tiny_model, tmp_path / "renamed.onnx", count=None)
    with pytest.raises(PplgateError, match="names its tensors differently|name their tensors differently"):
        localize(Side.of(tiny_model, FP32), Side.of(other, FP32), short.head(1))


def test_command_line_writes_the_report_and_the_plot(perturbed, dataset_dir, tokenizer_dir, token_cache, model_dir, tmp_path, cli):
    report, png = tmp_path / "loc.json", tmp_path / "loc.png"
    ran = cli("localize", "--model", perturbed, "--reference-model", "builtin:tiny", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
              "--cache-dir", token_cache, "--model-dir", model_dir, "--report-json", report, "--plot", png, "--block-size", "128")
    assert ran.code == 0, ran.err
    out = ran.out
    assert "first divergence:" in out and "h.1.mlp.c_fc.weight" in out
    data = json.loads(report.read_text())
    assert set(data["first_divergence"]) >= {"node", "op_type", "output", "rel_l2", "max_abs", "cosine"}
    compared, seen = {t["output"] for t in data["tensors"]}, set()
    for t in data["tensors"]:  # topological order: every compared input comes before the tensor made from it
        assert {i for i in t["inputs"] if i in compared} <= seen
        seen.add(t["output"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_provider_is_one_sentence(dataset_dir, tokenizer_dir, token_cache, model_dir, cli):
    assert "TopsInferenceExecutionProvider (device gcu) is not in this onnxruntime" in cli(
        "localize", "--model", "builtin:tiny", "--device", "gcu", "--dataset", dataset_dir, "--tokenizer", tokenizer_dir,
        "--cache-dir", token_cache, "--model-dir", model_dir).error


def test_the_sessions_as_they_run_are_compared_first(tiny_model, short):
    """fp16 on the CPU: the tapped graphs lose the LayerNorm and GELU fusions, and localize says so."""
    loc = localize(Side.of(tiny_model, FP16), Side.of(tiny_model, FP32), short.head(1))
    assert loc.session_logits is not None and 0 < loc.session_logits.rel_l2 < loc.threshold
    assert loc.session_diverges is False
    assert loc.tapping_changed  # measured 4.3e-5 here: fusions lost in the tapped graphs
    report = loc.report()
    assert report["session_diverges"] is False and report["tapping_changed_the_graph"] is True
    text = render(loc)
    assert "the run's session as it runs, nothing exposed: logits rel_l2" in text and "agrees within the threshold" in text
    assert "exposing tensors changed the run's graph" in text


def test_a_divergence_only_in_the_tapped_graphs_is_not_reported_as_the_sessions(tiny_model, short):
    """With a threshold below fp16's rounding, the tapped graphs diverge; the session's logits, judged at the same threshold, too."""
    loc = localize(Side.of(tiny_model, FP16), Side.of(tiny_model, FP32), short.head(1), threshold=5e-3)
    assert loc.first_divergence is not None
    loc.session_logits.rel_l2 = 1e-3  # as a session whose fused kernels kept it within the threshold would be
    text = render(loc)
    assert "first divergence in the tapped graphs only, NOT in the run's session" in text
    assert "\nfirst divergence:" not in text


def test_a_model_against_itself_taps_without_changing_it(tiny_model, short):
    loc = localize(Side.of(tiny_model, FP32), Side.of(tiny_model, FP32), short.head(1))
    assert loc.session_logits.rel_l2 == 0 and not loc.tapping_changed


def _all_nan(tiny_model: Path, path: Path) -> Path:
    """The tiny model whose logits are multiplied by NaN."""
    model = onnx.load(str(tiny_model))
    for node in model.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    model.graph.initializer.append(helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]))
    model.graph.node.append(helper.make_node("Mul", ["logits_raw", "nan"], ["logits"], name="head/poison"))
    onnx.save(model, str(path))
    return path


def test_localize_finds_where_nan_starts(tiny_model, short, tmp_path):
    loc = localize(Side.of(_all_nan(tiny_model, tmp_path / "nan.onnx"), FP32), Side.of(tiny_model, FP32), short.head(1))
    assert loc.session_diverges is True
    first = loc.first_divergence
    assert first is not None and first.node == "head/poison" and not math.isfinite(first.rel_l2)


def test_the_folders_of_a_killed_run_are_removed(tiny_model, short, tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
    left = tmp_path / f"pplgate-localize-{dead}.x1y2z3w4"  # as tempfile names it: 8 characters
    left.mkdir()
    (left / "tap.onnx").write_bytes(b"x" * 1000)
    side = Side.of(tiny_model, FP32)
    localize(side, side, short.head(1), workdir=tmp_path)
    assert not left.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_nan_model_against_itself_is_equal_and_says_so(tiny_model, short, tmp_path):
    """As found: a model whose logits hold NaN, against itself: "DIVERGES" and "exposing tensors changed the graph",
    though both sessions were bit-identical."""
    side = Side.of(_all_nan(tiny_model, tmp_path / "nan.onnx"), FP32)
    loc = localize(side, side, short.head(1))
    assert loc.session_diverges is False and loc.first_divergence is None and not loc.tapping_changed
    text = render(loc)
    assert "non-finite logits in both" in text and "DIVERGES" not in text and "changed the graph" not in text
