"""A sources folder: every file it holds listed and matching, nothing read from outside it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.sourcefolder import Sources
from test_modelfiles import save_external


@pytest.fixture
def folder(shared_data, tmp_path) -> Path:
    root = tmp_path / "sources"
    for name in ("wikitext", "gpt2"):
        shutil.copytree(shared_data / name, root / name)
    return root


def resolved(root: Path, tmp_path: Path, model: str = "builtin:tiny") -> Sources:
    return Sources(folder=root, cache_dir=tmp_path / "c", model=model).resolved()


def test_the_shared_layout_is_accepted(folder, tmp_path):
    """../shared/data lists its data files but not its README.md, as hub mirrors often do."""
    sources = resolved(folder, tmp_path)
    assert (sources.dataset, sources.tokenizer, sources.model) == (str(folder / "wikitext"), str(folder / "gpt2"), "builtin:tiny")


def test_a_damaged_file_is_named_with_both_hashes(folder, tmp_path, cli):
    parquet = folder / "wikitext" / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet"
    data = bytearray(parquet.read_bytes())
    data[100] ^= 0xFF
    parquet.write_bytes(bytes(data))
    sentence = (f"{parquet} does not match its checksum in {folder / 'wikitext' / 'SHA256SUMS'} "
                f"(sha256 {hashlib.sha256(bytes(data)).hexdigest()}, listed 66e41974d7d3bcd514713166739e9f43d04cb03480cb2cc51b3f95109216c5e0): "
                f"the copy is damaged or was changed; write it again with 'python -m pplgate fetch {folder}' on a machine with network.")
    with pytest.raises(PplgateError) as info:
        resolved(folder, tmp_path)
    assert str(info.value) == sentence
    ran = cli("--model", "builtin:tiny", "--sources", folder, "--no-progress", "--cache-dir", tmp_path / "c", "--model-dir", tmp_path / "m")
    assert ran.error == f"pplgate: error: {sentence}" and "Final report" not in ran.out


def test_a_model_not_in_the_folder_says_how_to_bring_it(shared_data, tmp_path):
    with pytest.raises(SourceUnavailable) as info:
        Sources(folder=shared_data, cache_dir=tmp_path / "c").resolved()
    assert str(info.value).startswith(
        "model https://topsmodel-1257133546.cos.ap-shanghai.myqcloud.com/topsmodel-1257133546/topsegc/local/model/GPT/"
        f"gpt2_small-huggingface-op13-fp32-seqN-nocache.onnx is not in the sources folder {shared_data} "
        f"(no {shared_data / 'model' / 'gpt2_small-huggingface-op13-fp32-seqN-nocache.onnx'}): write it there with 'python -m pplgate fetch {shared_data}'")


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


@pytest.mark.parametrize("before", ["\ufeff", "\n"], ids=["byte-order mark", "leading newline"])
def test_a_card_whose_header_does_not_start_the_file_is_read_as_datasets_reads_it(folder, tmp_path, before):
    """As found: a header after a byte-order mark or a blank line escaped the check, and datasets read a parquet from
    outside the folder (4,303 rows instead of 2,891)."""
    card = folder / "wikitext" / "README.md"
    card.write_text(before + card.read_text().replace("path: wikitext-2-raw-v1/test-*", "path: ../elsewhere/*.parquet"), encoding="utf-8")
    with pytest.raises(PplgateError, match=r"README\.md, which .*SHA256SUMS does not list, points datasets at '\.\./elsewhere/\*\.parquet'"):
        resolved(folder, tmp_path)


def test_a_card_that_lists_the_split_twice_is_refused(folder, tmp_path):
    """As found: a card naming the same parquet twice made datasets read 5,782 rows, not a word said."""
    card = folder / "wikitext" / "README.md"
    card.write_text(card.read_text().replace("    path: wikitext-2-raw-v1/test-*",
                                             "    path:\n    - wikitext-2-raw-v1/test-*\n    - wikitext-2-raw-v1/test-00000-of-00001.parquet"))
    with pytest.raises(PplgateError, match=r"makes datasets read wikitext-2-raw-v1/test-00000-of-00001\.parquet twice for the test split, "
                                           r"so every row of it would count twice: nothing was read"):
        resolved(folder, tmp_path)


def test_a_listing_with_two_hashes_for_one_file_is_refused(folder, tmp_path):
    """As found: the last of two lines for one file won."""
    sums = folder / "gpt2" / "SHA256SUMS"
    first = sums.read_text().splitlines()[0]
    sums.write_text(sums.read_text() + "0" * 64 + "  " + first.split("  ", 1)[1] + "\n")
    with pytest.raises(PplgateError, match=rf"SHA256SUMS lists {first.split('  ', 1)[1]} twice"):
        resolved(folder, tmp_path)


def test_a_listing_that_is_not_text_is_one_sentence(folder, tmp_path):
    (folder / "gpt2" / "SHA256SUMS").write_bytes(b"\xff\xfe garbage\n")
    with pytest.raises(PplgateError, match=r"SHA256SUMS is not UTF-8 text \(byte 0\)"):
        resolved(folder, tmp_path)


def test_the_model_folder_checks_every_weights_file_the_graph_names(folder, tmp_path):
    """Not only names that start with the model's: a weights file called anything is checked."""
    models = folder / "model"
    save_external(models, location="weights.bin")
    (models / "SHA256SUMS").write_text(f"{hashlib.sha256((models / 'model.onnx').read_bytes()).hexdigest()}  model.onnx\n")
    url = "https://example.com/x/model.onnx"
    with pytest.raises(PplgateError, match=r"weights\.bin is not listed in"):
        resolved(folder, tmp_path, model=url)
    (models / "SHA256SUMS").write_text((models / "SHA256SUMS").read_text() + f"{'0' * 64}  weights.bin\n")
    with pytest.raises(PplgateError, match=r"weights\.bin does not match its checksum"):
        resolved(folder, tmp_path, model=url)
