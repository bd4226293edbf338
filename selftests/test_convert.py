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


def test_convert_onto_a_weights_file_or_a_record_of_its_model_is_refused(tmp_path, cli):
    """As found: ``-o`` onto the model's own external weights file overwrote it, exit 0, and the source no longer loaded."""
    from test_modelfiles import save_external

    model = save_external(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in model.parent.iterdir()}
    for name in ("model.onnx_data", "model.fp16.onnx", "model.fp16.onnx.json", "model.scored.onnx"):
        out = model.parent / name
        assert cli("convert", model, "--precision", "fp16", "-o", out, "--cache-dir", tmp_path / "c").error == (
            f"pplgate: error: --output {out} is a file of the model it would be written from (model.onnx, its fp16 conversion, "
            "their weights or records): pass another path."), name
    assert {p.name: p.read_bytes() for p in model.parent.iterdir() if p.name in before} == before


def test_convert_of_a_model_with_external_data_into_another_folder_brings_its_weights(tmp_path, cli):
    """As found: the graph was written without its weights, then the command failed, leaving an unusable file."""
    import numpy as np
    import onnxruntime as ort

    from test_modelfiles import save_external

    model = save_external(tmp_path / "m")
    out = tmp_path / "deploy" / "gpt.onnx"
    out.parent.mkdir()
    ran = cli("convert", model, "--precision", "fp32", "-o", out, "--cache-dir", tmp_path / "c")
    assert ran.code == 0, ran.err
    assert (out.parent / "model.onnx_data").read_bytes() == (model.parent / "model.onnx_data").read_bytes()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.ones((1, 8), np.int64) for i in session.get_inputs()}
    assert np.isfinite(session.run(None, feeds)[0]).all()


def test_convert_never_writes_over_a_golden_case(tiny_model, tmp_path, cli):
    golden = tmp_path / "golden"
    golden.mkdir()
    case = golden / "tiny.json"
    case.write_text('{"case": "tiny", "expected": {}}')
    assert cli("convert", tiny_model, "--precision", "fp32", "-o", case, "--cache-dir", tmp_path / "c").error.startswith(
        f"pplgate: error: --output {case} is in a folder of golden case files ({golden}), where it would replace or add a case")
    assert case.read_text() == '{"case": "tiny", "expected": {}}'
