"""The vendor's data preparation, on the offline copy of wikitext-2-raw-v1 test."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import replaced, wikitext_folder
from pplgate.data import load_tokens
from pplgate.errors import PplgateError


def test_token_and_row_counts_of_the_test_split(tokens):
    assert len(tokens.ids) == 283_287
    assert tokens.rows == 2891 and tokens.row_lengths.sum() == 283_287 and (tokens.row_lengths > 0).all()
    assert tokens.vocab_size == 50257


def test_rows_are_tokenized_separately_and_concatenated(tokens):
    # The first row is " = Robert Boulter = \n"; its ids open the stream.
    assert tokens.ids[:8].tolist() == [796, 5199, 347, 2852, 353, 796, 220, 198]


def test_contiguous_blocks_are_consecutive_and_the_remainder_dropped(tokens):
    np.testing.assert_array_equal(tokens.blocks("contiguous").ids, tokens.ids[: 276 * 1024])


def test_vocabulary_bytes_spell_the_text(tokens):
    # Rows end in "\n" exactly as upstream; the ids spell the first row back byte for byte.
    first = tokens.ids[: tokens.row_lengths[0]]
    assert tokens.text_bytes(first) == " = Robert Boulter = \n".encode()


def test_second_load_hits_the_cache(dataset_dir, tokenizer_dir, tmp_path):
    first = load_tokens(dataset_dir, tokenizer_dir, tmp_path)
    second = load_tokens(dataset_dir, tokenizer_dir, tmp_path)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    np.testing.assert_array_equal(first.ids, second.ids)


def test_cache_is_keyed_by_the_tokenizer_files(dataset_dir, tokenizer_dir, tmp_path):
    load_tokens(dataset_dir, tokenizer_dir, tmp_path / "cache")
    changed = tmp_path / "gpt2"
    shutil.copytree(tokenizer_dir, changed)
    (changed / "tokenizer_config.json").chmod(0o644)
    (changed / "tokenizer_config.json").write_text('{"model_max_length": 1024, "note": "changed"}')
    assert not load_tokens(dataset_dir, str(changed), tmp_path / "cache").cache_hit


def test_a_same_size_same_time_change_of_the_data_is_new_data(tokenizer_dir, tmp_path):
    """As found: a changed parquet of the same size with its old mtime (``cp -p``, ``rsync -t``) reused the old ids."""
    import os

    folder = wikitext_folder(tmp_path / "wikitext", [" The cat sat on the mat .\n"] * 50)
    parquet = folder / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet"
    first = load_tokens(str(folder), tokenizer_dir, tmp_path / "cache", progress=False)
    stat = parquet.stat()
    other = wikitext_folder(tmp_path / "other", [" The dog sat on the mat .\n"] * 50)
    changed = (other / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet").read_bytes()
    assert len(changed) == stat.st_size
    with parquet.open("r+b") as f:  # in place, as cp -p over it: the same inode
        f.write(changed)
    os.utime(parquet, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (parquet.stat().st_size, parquet.stat().st_mtime_ns, parquet.stat().st_ino) == (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    second = load_tokens(str(folder), tokenizer_dir, tmp_path / "cache", progress=False)
    assert not second.cache_hit and not np.array_equal(first.ids, second.ids)


def test_missing_dataset_folder_is_one_sentence(tokenizer_dir, tmp_path):
    with pytest.raises(PplgateError, match=r"dataset folder .* does not exist: pass --dataset"):
        load_tokens(str(tmp_path / "nowhere"), tokenizer_dir, tmp_path)


def test_folder_without_the_split_is_refused(tokenizer_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PplgateError, match="has no wikitext-2-raw-v1 test split"):
        load_tokens(str(tmp_path / "empty"), tokenizer_dir, tmp_path)


def test_tokenizer_folder_without_files_is_refused(dataset_dir, tmp_path):
    (tmp_path / "tok").mkdir()
    with pytest.raises(PplgateError, match="holds neither tokenizer.json nor vocab.json"):
        load_tokens(dataset_dir, str(tmp_path / "tok"), tmp_path)


@pytest.mark.parametrize("column", [[" = A = \n", None, " b .\n"], [1, 7, 2]], ids=["null", "numbers"])
def test_dataset_rows_that_are_not_text(base_args, tmp_path, cli, column):
    folder = wikitext_folder(tmp_path / "wikitext", column)
    line = cli(*replaced(replaced(base_args, "--dataset", str(folder)), "--cache-dir", str(tmp_path / "c"))).error
    assert line.startswith(f"pplgate: error: dataset {folder}'s text column holds ") and "values that are not text" in line


def test_a_dataset_file_with_no_rows(base_args, tmp_path, cli):
    import pyarrow as pa

    folder = wikitext_folder(tmp_path / "wikitext", pa.array([], type=pa.string()))
    line = cli(*replaced(replaced(base_args, "--dataset", str(folder)), "--cache-dir", str(tmp_path / "c"))).error
    # datasets >= 3 fails reading the file, 2.x finds no split in it: one sentence either way.
    assert line.startswith(f"pplgate: error: dataset {folder}") and "pass --dataset with a" in line and "copy of Salesforce/wikitext." in line, line


def test_a_split_shorter_than_one_block(base_args, tmp_path, cli):
    folder = wikitext_folder(tmp_path / "wikitext", [" = Title = \n", " A short row .\n", ""])
    args = replaced(replaced(base_args, "--dataset", str(folder)), "--cache-dir", str(tmp_path / "c"))
    # The vendor's grouping scores a batch shorter than a block as one short block.
    report = cli(*args).report
    assert (report["blocks"], report["scored_tokens"], report["rows"]) == (1, 9, 3)
    # Cut contiguously, the same split has no whole block.
    assert cli(*args, "--grouping", "contiguous").error.endswith(
        "gives 10 tokens, no block to score: pass --dataset with the full wikitext-2-raw-v1 test split.")


def test_a_corrupt_merges_file(base_args, tokenizer_dir, tmp_path, cli):
    folder = tmp_path / "gpt2"
    shutil.copytree(tokenizer_dir, folder)
    (folder / "merges.txt").write_text("#version: 0.2\nthis line has three\n")
    line = cli(*replaced(replaced(base_args, "--tokenizer", str(folder)), "--cache-dir", str(tmp_path / "c"))).error
    assert line.startswith(f"pplgate: error: tokenizer in {folder} cannot be loaded (") and "--tokenizer with a complete copy" in line


def test_a_cache_folder_that_is_a_file(base_args, tmp_path, cli):
    afile = tmp_path / "cache"
    afile.write_text("")
    line = cli(*replaced(base_args, "--cache-dir", str(afile)), "--max-blocks", "1").error
    assert str(afile) in line and "--cache-dir" in line


def test_a_truncated_token_cache_is_rebuilt(dataset_dir, tokenizer_dir, tmp_path, caplog):
    import logging

    first = load_tokens(dataset_dir, tokenizer_dir, tmp_path)
    (cached,) = (tmp_path / "tokens").glob("*.npz")
    with open(cached, "r+b") as f:
        f.truncate(cached.stat().st_size // 3)
    with caplog.at_level(logging.INFO, logger="pplgate"):
        again = load_tokens(dataset_dir, tokenizer_dir, tmp_path)
    assert not again.cache_hit and np.array_equal(again.ids, first.ids)
    assert f"token cache {cached} cannot be used" in caplog.text
    assert load_tokens(dataset_dir, tokenizer_dir, tmp_path).cache_hit


def process(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.e2e
def test_a_cache_hit_needs_neither_datasets_nor_transformers(dataset_dir, tokenizer_dir, token_cache, tokens):
    code = (f"import sys; from pplgate.data import load_tokens; t = load_tokens({dataset_dir!r}, {tokenizer_dir!r}, {str(token_cache)!r}); "
            "print(t.cache_hit, 'datasets' in sys.modules, 'transformers' in sys.modules)")
    assert process("-c", code).stdout.split() == ["True", "False", "False"]


@pytest.mark.e2e
@pytest.mark.parametrize(("option", "source", "said"), [
    ("--dataset", "nobody/no-such-dataset",
     "pplgate: error: dataset nobody/no-such-dataset cannot be reached: it is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
     "pass --dataset with a local copy of Salesforce/wikitext, or --sources DIR (in the gate --gate-sources=DIR, or $PPLGATE_SOURCES) "
     "with a folder 'python -m pplgate fetch DIR' wrote."),
    ("--tokenizer", "nobody/no-such-tokenizer", "pplgate: error: tokenizer nobody/no-such-tokenizer cannot be reached (*): *pass --tokenizer*"),
])
def test_an_unknown_hub_id_offline_names_the_option(base_args, tmp_path, option, source, said):
    """huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when imported: a process of its own."""
    import fnmatch
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = process("-m", "pplgate", *replaced(replaced(base_args, option, source), "--cache-dir", str(tmp_path / "c")), env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("pplgate: error:")]
    assert fnmatch.fnmatchcase(line, said), line


@pytest.mark.e2e
def test_a_file_size_limit_while_datasets_prepares_is_one_sentence(base_args, tmp_path):
    import os
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # ulimit -f: Python ignores SIGXFSZ, so writes fail with EFBIG

    result = process("-m", "pplgate", *replaced(base_args, "--cache-dir", str(tmp_path / "c")), "--max-blocks", "1", preexec_fn=limit,
                     env=dict(os.environ, HF_HOME=str(tmp_path / "hf")))
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and line.startswith("pplgate: error: dataset ") and "(File too large)" in line
    assert "raise the file-size limit (ulimit -f)" in line, line


@pytest.mark.e2e
def test_no_advice_about_pytorch_in_a_run(base_args, tmp_path):
    """transformers advises at import that PyTorch is absent; pplgate uses its tokenizers only."""
    result = process("-m", "pplgate", *replaced(base_args, "--cache-dir", str(tmp_path / "cold")), "--max-blocks", "1")
    assert result.returncode == 0, result.stderr
    assert "PyTorch" not in result.stderr + result.stdout
