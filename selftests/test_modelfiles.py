"""A model is its graph and every file its tensors name: identity, and nothing read from outside its folder."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from pplgate.errors import PplgateError
from pplgate.modelfiles import model_identity
from pplgate.models import resolve_model


def save_external(folder: Path, location: str = "model.onnx_data") -> Path:
    """builtin:tiny as a graph with its weights in ``folder/location``."""
    import onnx

    from pplgate.testmodel import PRESETS, build_model

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(build_model(PRESETS["tiny"]), str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location)
    return path


def relocate(model: Path, location: str) -> None:
    """Rewrites every external-data location of ``model``'s graph to ``location``, as a hostile file would name it."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    model.write_bytes(proto.SerializeToString())


@pytest.fixture(scope="module")
def external_model(tmp_path_factory) -> Path:
    return save_external(tmp_path_factory.mktemp("external"))


def test_changed_weights_are_another_model(external_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(external_model.parent, copy)
    before = model_identity(copy / "model.onnx", tmp_path / "c")
    assert set(before.files) == {"model.onnx", "model.onnx_data"}
    assert before.bytes == sum(p.stat().st_size for p in copy.iterdir())
    # The identity the module's docstring tells a user to recompute with sha256sum.
    shell = subprocess.run("{ sha256sum < model.onnx; sha256sum model.onnx_data; } | sha256sum", shell=True, cwd=copy,
                           capture_output=True, text=True, check=True).stdout.split()[0]
    assert before.sha256 == shell
    weights = copy / "model.onnx_data"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    after = model_identity(copy / "model.onnx", tmp_path / "c")
    assert after.sha256 != before.sha256 and after.files["model.onnx"] == before.files["model.onnx"]


def test_a_model_without_external_data_keeps_its_file_hash(tiny_model, tmp_path):
    assert model_identity(tiny_model, tmp_path / "c").sha256 == hashlib.sha256(tiny_model.read_bytes()).hexdigest()


@pytest.mark.parametrize("location", ["../outside.bin", "/proc/self/environ", "link.bin"])
def test_weights_outside_the_folder_are_refused_before_any_read(external_model, tmp_path, location):
    from pplgate.fetch import fetch_model

    folder = tmp_path / "model"
    shutil.copytree(external_model.parent, folder)
    secret = tmp_path / "outside.bin"
    shutil.copyfile(folder / "model.onnx_data", secret)
    secret.chmod(0o600)
    (folder / "link.bin").symlink_to(secret)
    relocate(folder / "model.onnx", location)
    expected = f"model model.onnx keeps tensors in {location!r}, which is outside its folder"
    with pytest.raises(PplgateError, match="^" + expected.replace("(", r"\(").replace(".", r"\.")):
        resolve_model(str(folder / "model.onnx"), tmp_path / "m", cache_dir=tmp_path / "c")
    out = tmp_path / "sources"
    with pytest.raises(PplgateError, match="nothing was read"):
        fetch_model(str(folder / "model.onnx"), out / "model", tmp_path / "c", progress=False)
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS"], "nothing is kept in the sources folder"


def test_missing_weights_are_one_sentence(external_model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copyfile(external_model, folder / "model.onnx")
    with pytest.raises(PplgateError, match=r"^model model\.onnx keeps its weights in model\.onnx_data, which is not beside it in .*: copy the model's folder whole"):
        resolve_model(str(folder / "model.onnx"), tmp_path / "m", cache_dir=tmp_path / "c")


def _externalize(tensor, folder: Path, name: str) -> None:
    """Moves ``tensor``'s values into ``folder/name``, as ONNX external data."""
    import onnx
    from onnx import numpy_helper

    raw = numpy_helper.to_array(tensor).tobytes()
    (folder / name).write_bytes(raw)
    for field in ("raw_data", "float_data", "int64_data"):
        tensor.ClearField(field)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", name), ("offset", "0"), ("length", str(len(raw)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def hidden_weights_model(folder: Path) -> Path:
    """A graph whose only external data is a sparse initializer's values and a Constant inside a local function."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    values = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w_values")
    _externalize(values, folder, "sparse.bin")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0, 2, 5, 7], np.int64), "w_indices"), [8])
    constant = helper.make_tensor("c", TensorProto.FLOAT, [8], np.ones(8, np.float32))
    _externalize(constant, folder, "function.bin")
    function = helper.make_function("local", "AddC", ["x"], ["y"],
                                    [helper.make_node("Constant", [], ["c"], value=constant), helper.make_node("Add", ["x", "c"], ["y"])],
                                    [helper.make_opsetid("", 13)])
    sparse.values.name = "w"
    graph = helper.make_graph([helper.make_node("AddC", ["x"], ["t"], domain="local"), helper.make_node("Add", ["t", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])],
                              sparse_initializer=[sparse])
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("local", 1)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("weights", ["sparse.bin", "function.bin"])
def test_weights_of_a_sparse_initializer_or_a_local_function_are_the_model_too(tmp_path, weights):
    """As found: changed weights behind a sparse initializer or a Constant in a local function moved the perplexity
    2.4x under an unchanged model_sha256, and fetch left the file behind."""
    from pplgate.fetch import fetch_model

    model = hidden_weights_model(tmp_path / "m")
    before = model_identity(model, tmp_path / "c")
    assert set(before.files) == {"model.onnx", "sparse.bin", "function.bin"}
    fetch_model(str(model), tmp_path / "sources" / "model", tmp_path / "c", progress=False)
    assert {"sparse.bin", "function.bin"} <= {p.name for p in (tmp_path / "sources" / "model").iterdir()}
    data = bytearray((model.parent / weights).read_bytes())
    data[0] ^= 0xFF
    (model.parent / weights).write_bytes(bytes(data))
    assert model_identity(model, tmp_path / "c").sha256 != before.sha256
    (model.parent / weights).rename(tmp_path / weights)
    (model.parent / weights).symlink_to(tmp_path / weights)
    with pytest.raises(PplgateError, match=rf"^model model\.onnx keeps tensors in '{weights}', which is outside its folder"):
        model_identity(model, tmp_path / "c2")
