import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import emoji
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation.core.errors import ModelError
from moderation.core.settings import DEFAULT_MODEL_DIR
from moderation.pipeline.tokenize import (
    TextTokenizer,
    bucket_for,
    group_by_bucket,
    normalize_buckets,
    pad_batch,
    prepare_text,
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


# --- prepare_text: emoji → words ------------------------------------------------------------------


def words(text: str) -> list[str]:
    return prepare_text(text).split()


def test_emoji_become_their_names_as_words():
    assert words("I would love to \N{HOCHO} some \N{MAN WITH TURBAN}") == (
        ["I", "would", "love", "to", "kitchen", "knife", "some", "person", "wearing", "turban"]
    )
    # between spaces, so a name never glues onto a neighbouring word
    assert prepare_text("go\N{HOCHO}now") == "go kitchen knife now"
    assert prepare_text("\N{FACE WITH TEARS OF JOY}\N{PILE OF POO}") == " face with tears of joy  pile of poo "


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", "family man woman girl boy"),  # ZWJ family
        ("\U0001f3f3\ufe0f\u200d\U0001f308", "rainbow flag"),  # ZWJ + variation selector
        ("\U0001f469\U0001f3fe\u200d\u2695\ufe0f", "woman health worker"),  # ZWJ + skin tone
        ("\U0001f9d1\U0001f3fb\u200d\U0001f91d\u200d\U0001f9d1\U0001f3ff", "people holding hands"),  # two tones
        ("\U0001f44d\U0001f3ff", "thumbs up"),
        ("\U0001f473\U0001f3fe", "person wearing turban"),
        ("\U0001f1eb\U0001f1f7", "France"),  # flag: regional indicator pair
        ("1\ufe0f\u20e3", "keycap 1"),  # keycap: ASCII + U+FE0F + U+20E3
        ("\u2764\ufe0f \u2764", "red heart red heart"),  # with and without the emoji presentation selector
    ],
)
def test_sequences_are_one_name_and_skin_tones_are_dropped(text, expected):
    assert words(text) == expected.split()


def test_a_lone_skin_tone_modifier_becomes_a_space():
    assert prepare_text("ok\U0001f3feok") == "ok ok"


@pytest.mark.parametrize(
    "text",
    ["", "you are an idiot", "x" * 20_000, "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \u0434\u0443\u0440\u0430\u043a"],
)
def test_text_without_emoji_is_returned_as_is(text):
    assert prepare_text(text) is text


def test_ascii_fast_path_skips_the_emoji_package(monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("emoji.replace_emoji called")

    monkeypatch.setattr(emoji, "replace_emoji", boom)
    assert prepare_text("hello :) <3 :knife:") == "hello :) <3 :knife:"
    assert prepare_text("caf\u00e9") == "caf\u00e9"


def test_a_failing_emoji_package_leaves_the_text_unchanged(monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("bug")

    monkeypatch.setattr(emoji, "replace_emoji", boom)
    assert prepare_text("\N{HOCHO}") == "\N{HOCHO}"


_EMOJI_SEQUENCES = sorted(emoji.EMOJI_DATA)
# any code point, lone surrogates included (st.characters leaves category Cs out by default), mixed
# with whole emoji sequences and their loose parts (ZWJ, selectors, skin-tone modifiers)
_ANY_TEXT = st.lists(
    st.one_of(
        st.characters(),
        st.characters(categories=["Cs"]),
        st.sampled_from(_EMOJI_SEQUENCES),
        st.sampled_from(["\u200d", "\ufe0f", "\u20e3", "\U0001f3fb", "\U0001f3ff", "\U0001f1eb", "\ud83d"]),
    ),
    max_size=60,
).map("".join)


@given(_ANY_TEXT)
def test_prepare_text_never_raises(text):
    out = prepare_text(text)
    assert isinstance(out, str)
    assert prepare_text(out) == out  # names are plain text: a second pass changes nothing


@given(_ANY_TEXT)
def test_same_as_the_emoji_package_on_the_whole_text(text):
    # prepare_text hands the package only the runs of emoji characters, for speed
    from moderation.pipeline.tokenize import _emoji_name

    assert prepare_text(text) == emoji.replace_emoji(text, replace=_emoji_name)


def test_a_long_post_pays_for_its_emoji_only():
    text = "word " * 4_000 + "\N{HOCHO}"
    assert prepare_text(text) == "word " * 4_000 + " kitchen knife "


def test_every_known_emoji_becomes_words():
    for seq in _EMOJI_SEQUENCES:
        out = prepare_text(f"a{seq}b")
        assert out.startswith("a ") and out.endswith(" b"), ascii(seq)
        assert "_" not in out and ":" not in out, (ascii(seq), out)


@pytest.fixture(scope="module")
def shipped_tokenizer() -> TextTokenizer:
    return TextTokenizer(DEFAULT_MODEL_DIR / "tokenizer.json", max_length=128, buckets=BUCKETS)


def test_emoji_are_no_longer_unknown_tokens(shipped_tokenizer):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(DEFAULT_MODEL_DIR / "tokenizer.json"))
    unk = raw.token_to_id("[UNK]")
    text = "I would love to \N{HOCHO} some \U0001f473\U0001f3fe"
    assert unk in raw.encode(text).ids  # what the model saw before
    ids = shipped_tokenizer.token_ids([text])[0]
    assert unk not in ids
    vocab = shipped_tokenizer.vocabulary()
    assert vocab["knife"] in ids and vocab["kitchen"] in ids
    assert shipped_tokenizer.encode([text]).input_ids[0].tolist()[: len(ids)] == ids


def test_ascii_token_ids_are_unchanged(shipped_tokenizer):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(DEFAULT_MODEL_DIR / "tokenizer.json"))
    raw.no_padding()
    texts = ["you are an idiot", "click here to win a free prize", ""]
    assert shipped_tokenizer.token_ids(texts) == [e.ids for e in raw.encode_batch(texts)]
