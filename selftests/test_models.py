"""A model source resolved to a whole local file: a path, a file:// URL, an address, a built model."""

from __future__ import annotations

import shutil

import pytest

import pplgate.artifacts
from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.fileio import WriteFailed
from pplgate.models import beside, build_builtin, resolve_model


def test_a_path_and_a_file_url_are_the_file(tiny_model, tmp_path):
    assert resolve_model(str(tiny_model), tmp_path) == tiny_model
    assert resolve_model(tiny_model.as_uri(), tmp_path) == tiny_model


@pytest.mark.parametrize(("spec", "error", "message"), [
    ("", PplgateError, "--model is empty: pass the path of an ONNX file, an https URL, hf://<repo>/<file> or builtin:tiny."),
    ("{tmp}/absent.onnx", SourceUnavailable, "model file {tmp}/absent.onnx does not exist: pass --model with the path of an ONNX file, "
                                             "an https URL or hf://<repo>/<file>."),
    ("{tmp}", PplgateError, "model path {tmp} is a directory, not a file: pass --model with the path of the .onnx file inside it."),
    ("/dev/null", PplgateError, "model path /dev/null is not a regular file but a device, pipe or socket: pass --model with the path of an .onnx file."),
    ("builtin:huge", PplgateError, "there is no built model named 'huge': use one of builtin:tiny, builtin:gpt2-small."),
])
def test_a_model_that_cannot_be_had_is_one_sentence(tmp_path, spec, error, message):
    with pytest.raises(error) as info:
        resolve_model(spec.format(tmp=tmp_path), tmp_path / "m")
    assert str(info.value) == message.format(tmp=tmp_path)


def test_the_weights_beside_a_model_come_from_beside_its_source():
    assert beside("https://h/a/model.onnx?sig=1#sha256=x", "model.onnx_data") == "https://h/a/model.onnx_data?sig=1"
    assert beside("hf://o/r/onnx/model.onnx", "model.onnx_data") == "hf://o/r/onnx/model.onnx_data"
    assert beside("/data/m/model.onnx", "w.bin") == "/data/m/w.bin"


def test_a_built_model_is_built_once_and_used_without_its_lock(tmp_path, monkeypatch):
    """A read-only checkout (or model folder) with the model already there runs: no lock file needs to be made."""
    path = build_builtin("tiny", tmp_path)

    def no_locks(_):
        raise WriteFailed("cannot lock: the folder is read-only")

    monkeypatch.setattr(pplgate.artifacts, "locked", no_locks)
    assert build_builtin("tiny", tmp_path) == path


def test_a_built_model_changed_since_is_built_again(tmp_path):
    path = build_builtin("tiny", tmp_path)
    good = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(1000)
    assert build_builtin("tiny", tmp_path).read_bytes() == good


def test_a_model_folder_that_is_a_file_is_one_sentence(tmp_path):
    (tmp_path / "models").write_text("")
    with pytest.raises(WriteFailed) as info:
        build_builtin("tiny", tmp_path / "models")
    assert str(info.value) == f"cannot make the folder {tmp_path / 'models'} (File exists): pass --model-dir with a writable folder with room for the model."


def test_a_copy_of_a_model_folder_is_used_where_it_is(tiny_model, tmp_path):
    shutil.copy(tiny_model, tmp_path / "m.onnx")
    assert resolve_model(str(tmp_path / "m.onnx"), tmp_path / "models") == tmp_path / "m.onnx"
    assert not (tmp_path / "models").exists()
