import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from moderation.core.errors import ModelError
from moderation.pipeline.tokenize import (
    TextTokenizer,
    bucket_for,
    group_by_bucket,
    normalize_buckets,
    pad_batch,
)

BUCKETS = (16, 32, 64, 128)


@pytest.mark.parametrize(
    ("length", "bucket"),
    [(0, 16), (1, 16), (16, 16), (17, 32), (32, 32), (33, 64), (64, 64), (65, 128), (128, 128)],
)
def test_bucket_is_smallest_that_fits(length, bucket):
    assert bucket_for(length, BUCKETS) == bucket


def test_longer_than_largest_bucket_is_an_error():
    with pytest.raises(ValueError, match=r"longer than the largest bucket 128"):
        bucket_for(129, BUCKETS)


def test_buckets_are_capped_and_end_at_max_length():
    assert normalize_buckets([64, 16, 512, 16, 0, -3], 128) == (16, 64, 128)
    assert normalize_buckets([16, 32, 64, 128], 48) == (16, 32, 48)
    assert normalize_buckets([], 128) == (128,)


def test_pad_batch_pads_to_bucket_of_longest_with_mask():
    batch = pad_batch([[5, 6, 7], [8] * 20], BUCKETS, pad_id=0)
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, 32)
    assert batch.input_ids[0, :4].tolist() == [5, 6, 7, 0]
    assert batch.attention_mask.sum(axis=1).tolist() == [3, 20]
    assert batch.input_ids[1, 20:].tolist() == [0] * 12


def test_pad_batch_uses_the_pad_id():
    batch = pad_batch([[5]], BUCKETS, pad_id=9)
    assert batch.input_ids[0].tolist() == [5] + [9] * 15


def test_empty_batch_has_zero_rows():
    batch = pad_batch([], BUCKETS)
    assert batch.input_ids.shape == (0, 16) and batch.attention_mask.shape == (0, 16)


def test_group_by_bucket_keeps_row_indices():
    assert group_by_bucket([3, 100, 20, 10, 64], BUCKETS) == {16: [0, 3], 32: [2], 64: [4], 128: [1]}
    assert group_by_bucket([], BUCKETS) == {}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> TextTokenizer:
    return TextTokenizer(tiny_model_dir / "tokenizer.json", max_length=128, buckets=BUCKETS)


def test_shipped_fixed_padding_is_disabled(tokenizer):
    # tokenizer.json pads to 128 (as all-MiniLM's does); our output is per batch instead.
    assert [len(ids) for ids in tokenizer.token_ids(["you are an idiot", "hello"])] == [6, 3]
    assert tokenizer.encode(["you are an idiot"]).input_ids.shape == (1, 16)


def test_padding_is_per_batch(tokenizer):
    short = tokenizer.encode(["what a lovely day"])
    mixed = tokenizer.encode(["what a lovely day", " ".join(["team"] * 40)])
    assert short.input_ids.shape == (1, 16)
    assert mixed.input_ids.shape == (2, 64)
    # the short post's real tokens are identical in both batches
    n = int(short.attention_mask[0].sum())
    assert mixed.input_ids[0, :n].tolist() == short.input_ids[0, :n].tolist()
    assert mixed.attention_mask[0].sum() == n


def test_truncates_to_max_length_keeping_special_tokens(tiny_model_dir):
    tok = TextTokenizer(tiny_model_dir / "tokenizer.json", max_length=24, buckets=BUCKETS)
    assert tok.buckets == (16, 24)
    ids = tok.token_ids([" ".join(["park"] * 500)])[0]
    assert len(ids) == 24
    vocab_cls, vocab_sep = 2, 3  # [PAD], [UNK], [CLS], [SEP] are the first specials
    assert ids[0] == vocab_cls and ids[-1] == vocab_sep
    assert tok.encode([" ".join(["park"] * 500)]).input_ids.shape == (1, 24)


def test_empty_list_and_empty_text(tokenizer):
    assert tokenizer.token_ids([]) == []
    assert tokenizer.encode([]).input_ids.shape == (0, 16)
    assert tokenizer.token_ids([""]) == [[2, 3]]


def test_pad_id_comes_from_tokenizer_json(tokenizer):
    assert tokenizer.pad_id == 0


def test_concurrent_encoding_matches_sequential(tokenizer):
    texts = [f"click here to win {'a free prize ' * (i % 9)}" for i in range(64)]
    expected = tokenizer.token_ids(texts)
    barrier = threading.Barrier(4)

    def work(_: int) -> list[list[int]]:
        barrier.wait()
        return [ids for _ in range(20) for ids in tokenizer.token_ids(texts)][: len(texts)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    assert all(r == expected for r in results)


def test_unreadable_or_corrupt_tokenizer_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match=r"cannot read tokenizer"):
        TextTokenizer(tmp_path / "nope.json", 128)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match=r"not a valid tokenizers JSON.*git checkout"):
        TextTokenizer(bad, 128)
