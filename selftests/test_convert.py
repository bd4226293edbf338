"""``python -m pplgate convert``: what was gated is what gets deployed."""

from __future__ import annotations

from pathlib import Path


def test_convert_writes_the_graph_the_gate_ran(base_args, tmp_path, cli):
    """The converted file's sha256 is the one the fp16 run reports."""
    out = tmp_path / "deploy.onnx"
    report = cli(*base_args, "--precision", "fp16", "--max-blocks", "1").report
    model_dir = base_args[base_args.index("--model-dir") + 1]
    ran = cli("convert", "builtin:tiny", "--precision", "fp16", "-o", out, "--model-dir", model_dir, "--cache-dir", tmp_path / "c")
    assert ran.code == 0, ran.err
    assert ran.out.startswith(f"wrote {out} (sha256 {report['converted_model_sha256']}): onnxruntime's fp16 conversion of builtin:tiny")
    assert out.read_bytes() == (Path(model_dir) / report["model_file"]).read_bytes()


def test_convert_onto_its_own_source_is_refused(tiny_model, tmp_path, cli):
    assert cli("convert", tiny_model, "--precision", "fp32", "-o", tiny_model, "--cache-dir", tmp_path).error == (
        f"pplgate: error: --output {tiny_model} is a file of the model it would be written from ({tiny_model.name}, its fp16 conversion, "
        "their weights or records): pass another path.")
