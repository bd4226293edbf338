"""Precisions as a device computes them: built graphs fused as exports are, IEEE fp32, tf32, fp16 rows that say what computed them."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from pplgate.devices import DEVICES, Device, computed_as, precision_provider_options, refuse_precision_options
from pplgate.errors import GoldenError, PplgateError
from pplgate.golden import load_case
from pplgate.testmodel import PRESETS, build_model

pytest_plugins = ["pytester"]

GPU, CPU, GCU = Device(DEVICES["gpu"]), Device(DEVICES["cpu"]), Device(DEVICES["gcu"])


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2])


def optimized_ops(model: onnx.ModelProto, tmp_path: Path) -> collections.Counter:
    """The op types of ``model`` after onnxruntime's extended (level 2) optimizations on the CPU provider."""
    source, optimized = tmp_path / "m.onnx", tmp_path / "opt.onnx"
    onnx.save(model, str(source))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)


@pytest.mark.parametrize("preset", ["tiny"])
def test_the_built_graph_fuses_as_an_exported_one_does(preset, tmp_path):
    """2 layers: 5 LayerNormalization (two a layer and the final one) and one GELU a layer, as a torch export of GPT-2 fuses."""
    if _version(ort.__version__) < (1, 10):
        pytest.skip(f"onnxruntime {ort.__version__} fuses no LayerNorm or GELU of an opset-13 graph (measured on 1.9.0: "
                    "10 ReduceMean and 2 Tanh left), exported or built: nothing to compare; the newest environment checks it")
    cfg = PRESETS[preset]
    ops = optimized_ops(build_model(cfg), tmp_path)
    assert ops["LayerNormalization"] == 2 * cfg.n_layer + 1
    assert ops["FastGelu"] + ops["Gelu"] == cfg.n_layer
    assert ops["ReduceMean"] == 0 and ops["Tanh"] == 0 and ops["Pow"] == 0


def test_the_layer_norm_and_gelu_are_spelled_as_torch_exports_them():
    """The patterns of torch's opset-13 export of GPT2LMHeadModel, node for node, in every environment."""
    graph = build_model(PRESETS["tiny"]).graph
    ops = [n.op_type for n in graph.node if n.name.startswith("h.0.attn/")]
    # ln_1: mean, centre, square as Pow, mean, +eps, sqrt, divide, scale, shift
    start = ops.index("ReduceMean")
    assert ops[start : start + 9] == ["ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add"]
    mlp = [n.op_type for n in graph.node if n.name.startswith("h.0.mlp/")]
    gelu = mlp.index("Pow", mlp.index("Add", mlp.index("MatMul")) + 1)  # after c_fc's MatMul and bias
    assert mlp[gelu - 1 : gelu + 7] == ["Mul", "Pow", "Mul", "Add", "Mul", "Tanh", "Add", "Mul"]
    scale = [n for n in graph.node if n.name.startswith("h.0.attn/") and n.op_type == "Div" and "sqrt_head_dim" in "".join(n.input)]
    assert len(scale) == 1  # scores divided by sqrt(head_dim), as GPT-2's attention writes it


def test_fp32_is_ieee_on_cuda_and_tf32_is_its_own_precision():
    assert precision_provider_options(GPU, "fp32") == {"use_tf32": "0"}
    assert precision_provider_options(GPU, "fp16") == {"use_tf32": "0"}
    assert precision_provider_options(GPU, "tf32") == {"use_tf32": "1"}
    assert precision_provider_options(CPU, "fp32") == {} and precision_provider_options(GCU, "fp16") == {}
    assert computed_as(GPU, "fp32") == "IEEE fp32, TF32 off (use_tf32=0)"
    assert computed_as(GPU, "tf32") == "fp32 with TF32 matmuls (use_tf32=1)"
    assert computed_as(CPU, "fp32") == "IEEE fp32"


@pytest.mark.parametrize(("precision", "given", "other"), [("fp32", "1", "tf32"), ("tf32", "0", "fp32")])
def test_a_provider_option_that_changes_the_precision_is_refused(precision, given, other):
    with pytest.raises(PplgateError, match=rf"--provider-option use_tf32={given} contradicts precision {precision}, "
                                           rf"which pplgate runs with use_tf32=.: ask for precision {other} instead"):
        refuse_precision_options(GPU, precision, {"use_tf32": given})
    refuse_precision_options(GPU, precision, {"use_tf32": "0" if given == "1" else "1"})  # the precision's own value is fine


def test_the_cli_refuses_use_tf32_with_fp32_before_any_source(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pplgate", "--model", str(tmp_path / "absent.onnx"), "--device", "gpu",
                             "--provider-option", "use_tf32=1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("pplgate: error: --provider-option use_tf32=1 contradicts precision fp32")


@pytest.mark.parametrize("device", ["cpu", "gcu"])
def test_tf32_off_cuda_is_one_sentence(device, tmp_path):
    result = subprocess.run([sys.executable, "-m", "pplgate", "--model", "builtin:tiny", "--device", device, "--precision", "tf32",
                             "--model-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    provider = DEVICES[device].provider
    assert result.stderr.strip() == (f"pplgate: error: tf32 is CUDA's TensorFloat-32 matmul mode, which {provider} does not have: "
                                     f"{device} computes fp32 as IEEE fp32; run tf32 on gpu.")


def test_tf32_tests_skip_off_cuda_even_when_strict(scratch_gate):
    scratch_gate.ini(devices="cpu", precisions="tf32")
    scratch_gate.case({})
    result = scratch_gate.run("--strict-gate", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*tf32 is CUDA's TensorFloat-32 matmul mode, which CPUExecutionProvider does not have*"])


def test_a_cpu_fp16_row_says_what_computed_it(scratch_gate):
    scratch_gate.ini(devices="cpu", precisions="fp16")
    scratch_gate.case({"cpu-fp32": {"computed": "numpy-reference", "rel_tol": 1e-5},
                       "cpu-fp16": {"relative_to": "cpu-fp32", "rel_tol": 0.01}}, max_blocks=1)
    result = scratch_gate.run(f"--gate-report={scratch_gate.path / 'r.json'}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mini-cpu-fp16: the CPU provider computes most fp16 operators in fp32: no evidence for a device that computes in fp16"])
    (record,) = json.loads((scratch_gate.path / "r.json").read_text())["results"]
    assert record["computed_as"].startswith("onnxruntime's fp16 conversion, most of whose operators CPUExecutionProvider computes in fp32")


def test_an_accelerators_fp16_rule_is_never_relative_to_cpu_fp16(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"case": "c", "sources": {"model": "builtin:tiny", "dataset": "d", "tokenizer": "t"},
                                "expected": {"cpu-fp16": {"perplexity": 10.0, "rel_tol": 0.01},
                                             "gpu-fp16": {"relative_to": "cpu-fp16", "rel_tol": 0.01}}}))
    with pytest.raises(GoldenError, match=r"expected.gpu-fp16 is relative to cpu-fp16, which the CPU provider computes mostly in fp32: "
                                          r"it is no evidence for gpu-fp16; make gpu-fp16 relative to cpu-fp32, or record it on its device\."):
        load_case(path)


def test_convert_writes_the_graph_the_gate_ran(base_args, tmp_path):
    """The converted file's sha256 is the one the fp16 run reports: what was gated is what gets deployed."""
    report_path, out = tmp_path / "r.json", tmp_path / "deploy.onnx"
    run = subprocess.run([sys.executable, "-m", "pplgate", *base_args, "--precision", "fp16", "--max-blocks", "1", "--report-json", str(report_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(report_path.read_text())
    model_dir = base_args[base_args.index("--model-dir") + 1]
    convert = subprocess.run([sys.executable, "-m", "pplgate", "convert", "builtin:tiny", "--precision", "fp16", "-o", str(out),
                              "--model-dir", model_dir, "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert convert.returncode == 0, convert.stderr
    assert convert.stdout.startswith(f"wrote {out} (sha256 {report['converted_model_sha256']}): onnxruntime's fp16 conversion of builtin:tiny")
    assert out.read_bytes() == (Path(model_dir) / report["model_file"]).read_bytes()


def test_fp16_without_onnxruntime_transformers_is_one_sentence(tiny_model, tmp_path):
    source = tmp_path / "m.onnx"
    source.write_bytes(tiny_model.read_bytes())
    code = ("import sys; sys.modules['onnxruntime.transformers'] = None\n"
            "from pplgate.errors import PplgateError\nfrom pplgate.precision import convert_fp16\n"
            f"try:\n    convert_fp16({str(source)!r}, {str(tmp_path / 'c')!r})\nexcept PplgateError as err:\n    print(err)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith(f"fp16 needs onnxruntime's float16 converter (onnxruntime.transformers.float16), which this onnxruntime {ort.__version__} cannot import")
    assert result.stdout.strip().endswith("install an onnxruntime build that ships onnxruntime.transformers, or run fp32.")
