"""The vendor's data preparation, on the offline copy of wikitext-2-raw-v1 test."""

import shutil

import numpy as np
import pytest

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
