"""What a run trusts is what was checked: a model's weights files, where they are, and every file of a sources folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pplgate.errors import PplgateError
from pplgate.modelfiles import model_identity
from pplgate.sourcefolder import Sources
from pplgate.sources import resolve_model

pytest_plugins = ["pytester"]


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


# 1. A model's identity is its graph and its weights.

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
    import hashlib

    assert model_identity(tiny_model, tmp_path / "c").sha256 == hashlib.sha256(tiny_model.read_bytes()).hexdigest()


def test_the_report_pins_the_weights(external_model, dataset_dir, tokenizer_dir, token_cache, tmp_path):
    from pplgate.devices import parse_device
    from pplgate.method import Method
    from pplgate.options import RunSettings
    from pplgate.pipeline import run

    copy = tmp_path / "copy"
    shutil.copytree(external_model.parent, copy)
    sources = Sources(model=str(copy / "model.onnx"), dataset=dataset_dir, tokenizer=tokenizer_dir, model_dir=tmp_path / "m", cache_dir=token_cache)
    report, _ = run(sources, parse_device("cpu"), "fp32", Method(max_blocks=1), RunSettings(progress=False))
    assert report["model_sha256"] == model_identity(copy / "model.onnx", token_cache).sha256
    assert report["model_files"] == model_identity(copy / "model.onnx", token_cache).files
    assert report["model_bytes"] == sum(p.stat().st_size for p in copy.iterdir())


# 2. No weights are read from outside the model's folder.

@pytest.mark.parametrize("location", ["../outside.bin", "/proc/self/environ", "link.bin"])
def test_weights_outside_the_folder_are_refused_before_any_read(external_model, tmp_path, location):
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
        fetch_model_only(out, str(folder / "model.onnx"), tmp_path / "c")
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS"], "nothing is kept in the sources folder"


def fetch_model_only(root: Path, spec: str, cache_dir: Path) -> None:
    from pplgate.fetch import _fetch_model

    _fetch_model(spec, root / "model", cache_dir, progress=False)


def test_missing_weights_are_one_sentence(external_model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copyfile(external_model, folder / "model.onnx")
    with pytest.raises(PplgateError, match=r"^model model\.onnx keeps its weights in model\.onnx_data, which is not beside it in .*: copy the model's folder whole"):
        resolve_model(str(folder / "model.onnx"), tmp_path / "m", cache_dir=tmp_path / "c")


# 3. A sources folder: every file listed and matching, nothing outside it.

@pytest.fixture
def folder(shared_data, tmp_path) -> Path:
    root = tmp_path / "sources"
    for name in ("wikitext", "gpt2"):
        shutil.copytree(shared_data / name, root / name)
    return root


def resolved(root: Path, tmp_path: Path) -> Sources:
    return Sources(folder=root, cache_dir=tmp_path / "c", model="builtin:tiny").resolved()


def test_the_shared_layout_is_accepted(folder, tmp_path):
    """../shared/data lists its data files but not its README.md, as hub mirrors often do."""
    assert resolved(folder, tmp_path).dataset == str(folder / "wikitext")


def test_an_unlisted_shard_is_refused(folder, tmp_path):
    shard = folder / "wikitext" / "wikitext-2-raw-v1" / "test-00001-of-00001.parquet"
    shutil.copyfile(folder / "wikitext" / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet", shard)
    with pytest.raises(PplgateError, match=r"holds wikitext-2-raw-v1/test-00001-of-00001\.parquet, which .*SHA256SUMS does not list, so a run would read it unchecked"):
        resolved(folder, tmp_path)


def test_an_empty_listing_is_refused(folder, tmp_path):
    (folder / "gpt2" / "SHA256SUMS").write_text("")
    with pytest.raises(PplgateError, match=r"SHA256SUMS lists no file, so nothing in .*gpt2 can be checked"):
        resolved(folder, tmp_path)


@pytest.mark.parametrize("name", ["../wikitext/README.md", "/etc/hostname", "link.txt"])
def test_an_entry_outside_the_folder_is_refused(folder, tmp_path, name):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    (folder / "gpt2" / "link.txt").symlink_to(outside)
    import hashlib

    sums = folder / "gpt2" / "SHA256SUMS"
    sums.write_text(sums.read_text() + f"{hashlib.sha256(b'secret').hexdigest()}  {name}\n")
    with pytest.raises(PplgateError, match="outside") as err:
        resolved(folder, tmp_path)
    assert "secret" not in str(err.value) and "nothing was read" in str(err.value)


def test_an_unlisted_card_may_not_point_outside(folder, tmp_path):
    card = folder / "wikitext" / "README.md"
    card.write_text(card.read_text().replace("path: wikitext-2-raw-v1/test-*", "path: ../elsewhere/*.parquet"))
    with pytest.raises(PplgateError, match=r"README\.md, which .*SHA256SUMS does not list, points datasets at '\.\./elsewhere/\*\.parquet'"):
        resolved(folder, tmp_path)


def test_a_listing_that_is_not_text_is_one_sentence(folder, tmp_path):
    (folder / "gpt2" / "SHA256SUMS").write_bytes(b"\xff\xfe garbage\n")
    with pytest.raises(PplgateError, match=r"SHA256SUMS is not UTF-8 text \(byte 0\)"):
        resolved(folder, tmp_path)


def test_the_model_folder_checks_every_weights_file_the_graph_names(external_model, folder, tmp_path):
    """Not only names that start with the model's: a weights file called anything is checked."""
    models = folder / "model"
    save_external(models, location="weights.bin")
    import hashlib

    (models / "SHA256SUMS").write_text(f"{hashlib.sha256((models / 'model.onnx').read_bytes()).hexdigest()}  model.onnx\n")
    url = "https://example.com/x/model.onnx"
    with pytest.raises(PplgateError, match=r"weights\.bin is not listed in"):
        Sources(folder=folder, cache_dir=tmp_path / "c", model=url).resolved()
    (models / "SHA256SUMS").write_text((models / "SHA256SUMS").read_text() + f"{'0' * 64}  weights.bin\n")
    with pytest.raises(PplgateError, match=r"weights\.bin does not match its checksum"):
        Sources(folder=folder, cache_dir=tmp_path / "c", model=url).resolved()


def test_the_gate_fails_the_pin_of_changed_weights(scratch_gate, external_model, tmp_path):
    """As found: a golden pinned on model.onnx, its weights changed, and --gate-strict passed with the same model_sha256."""
    import json

    folder = tmp_path / "exported"
    shutil.copytree(external_model.parent, folder)
    scratch_gate.ini(devices="cpu")
    path = scratch_gate.case({}, model=str(folder / "model.onnx"), max_blocks=1)
    scratch_gate.run("--gate-update-golden").assert_outcomes(passed=1)
    pin = json.loads(path.read_text())["expected"]["cpu-fp32"]["model"]
    assert pin["sha256"] == model_identity(folder / "model.onnx", tmp_path / "c").sha256
    weights = folder / "model.onnx_data"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = scratch_gate.run("--gate-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*the model of mini-cpu-fp32 is not the one the value in {path} [[]expected.cpu-fp32[]] was measured on (recorded sha256 {pin['sha256']}*"])
