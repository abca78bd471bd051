import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation.core.errors import (
    EmptyText,
    InputError,
    InvalidJSON,
    InvalidSchema,
    InvalidUTF8,
    TextTooLarge,
)
from moderation.pipeline.decode import decode_post, parse_created_at


def test_minimal_post():
    post = decode_post(b'{"id": "p1", "text": "hello"}')
    assert post.id == "p1" and post.text == "hello" and post.context == {}


def test_all_fields():
    raw = orjson.dumps(
        {
            "id": "p2",
            "text": "hi",
            "author_id": "a",
            "lang": "en",
            "created_at": "2026-11-28T10:00:00Z",
            "context": {"verified_author": True},
        }
    )
    post = decode_post(raw)
    assert post.author_id == "a" and post.lang == "en"
    assert post.created_at_ms == 1795860000000
    assert post.context == {"verified_author": True}


def test_key_stands_in_for_missing_id():
    assert decode_post(b'{"text": "x"}', key=b"k-9").id == "k-9"


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        (b"", InvalidJSON, "empty"),
        (None, InvalidJSON, "tombstone"),
        (b"{not json", InvalidJSON, "not valid JSON"),
        (b'{"id": "x", "text": "\xff\xfe bad"}', InvalidUTF8, "UTF-8"),
        (b"[1, 2]", InvalidSchema, "JSON object"),
        (b'{"text": "no id"}', InvalidSchema, "'id'"),
        (b'{"id": 5, "text": "x"}', InvalidSchema, "'id'"),
        (b'{"id": "x", "text": 7}', InvalidSchema, "'text' must be a string, got int"),
        (b'{"id": "x"}', InvalidSchema, "'text'"),
        (b'{"id": "x", "text": "   \\n "}', EmptyText, "empty"),
        (b'{"id": "x", "text": "a", "lang": 3}', InvalidSchema, "'lang'"),
        (b'{"id": "x", "text": "a", "context": [1]}', InvalidSchema, "'context'"),
        (b'{"id": "x", "text": "a", "created_at": "yesterday"}', InvalidSchema, "RFC 3339"),
        (b'{"id": "x", "text": "a", "created_at": true}', InvalidSchema, "boolean"),
    ],
)
def test_bad_input_gets_a_clear_error(raw, error, fragment):
    with pytest.raises(error) as info:
        decode_post(raw)
    assert fragment in info.value.message


def test_huge_text_and_message():
    with pytest.raises(TextTooLarge, match="MODERATION_MAX_TEXT_CHARS"):
        decode_post(orjson.dumps({"id": "x", "text": "a" * 101}), max_text_chars=100)
    with pytest.raises(TextTooLarge, match="MODERATION_MAX_MESSAGE_BYTES"):
        decode_post(b"x" * 2000, max_message_bytes=1000)


def test_created_at_forms():
    assert parse_created_at(1_700_000_000_000) == 1_700_000_000_000
    assert parse_created_at("2026-11-28T10:00:00+01:00") == 1795856400000
    with pytest.raises(InvalidSchema, match="UTC offset"):
        parse_created_at("2026-11-28T10:00:00")


@given(st.binary(max_size=300))
def test_any_bytes_either_decode_or_raise_input_error(raw):
    try:
        post = decode_post(raw)
    except InputError as exc:
        assert exc.code and exc.message
    else:
        assert post.text.strip()


@pytest.mark.parametrize(
    ("raw", "error", "fragment"),
    [
        # the real cause, not orjson's "surrogates not allowed" for every bad byte
        (b'{"id": "x", "text": "caf\xc3\x28"}', InvalidUTF8, "byte 0xc3 at offset 24"),
        (b'\xef\xbb\xbf{"id": "x", "text": "a"}', InvalidJSON, "byte-order mark"),
        (b'{"id": "x", "text": "\\ud800"}', InvalidJSON, "lone UTF-16 surrogate"),
        (b'{"id": "x", "text": "a\\udc00b"}', InvalidJSON, "lone UTF-16 surrogate"),
        (b'{"id": "x", "text": NaN}', InvalidJSON, "not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, InvalidJSON, "depth"),
    ],
)
def test_encoding_problems_are_named_for_what_they_are(raw, error, fragment):
    with pytest.raises(error) as info:
        decode_post(raw)
    assert fragment in info.value.message, info.value.message


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z"]
)
def test_created_at_outside_the_epoch_range_is_a_schema_error(stamp):
    with pytest.raises(InvalidSchema, match="out of range"):
        decode_post(orjson.dumps({"id": "x", "text": "a", "created_at": stamp}))


def test_created_at_bounds_agree_for_text_and_epoch():
    assert parse_created_at("5138-11-16T09:46:39Z") == 10**14 - 1000
    assert parse_created_at("1970-01-01T00:00:00Z") == 0
    with pytest.raises(InvalidSchema, match="out of range"):
        parse_created_at(10**14)


def with_nested_context(depth: int, open_: bytes = b'{"a":', close: bytes = b"}") -> bytes:
    """A post whose context is ``depth`` levels deep (built as text: orjson cannot write it)."""
    inner = open_ * (depth - 1) + b"1" + close * (depth - 1)
    return b'{"id": "x", "text": "a", "context": {"k":' + inner + b"}}"


def test_context_too_deep_to_write_back_is_rejected():
    with pytest.raises(InvalidSchema, match="nested more than 32 levels"):
        decode_post(with_nested_context(300))
    with pytest.raises(InvalidSchema, match="nested more than 32"):
        decode_post(with_nested_context(300, b"[", b"]"))
    assert decode_post(with_nested_context(32)).context_omitted is None


def test_huge_context_is_kept_for_the_policy_but_summarised_for_outputs():
    context = {"verified_author": True, "blob": "x" * 980_000}
    post = decode_post(orjson.dumps({"id": "x", "text": "a", "context": context}), max_context_bytes=65_536)
    assert post.context["verified_author"] is True
    assert post.context_omitted is not None and post.context_omitted.size_bytes == len(orjson.dumps(context))
    assert len(post.context_omitted.sha256) == 64
    small = decode_post(orjson.dumps({"id": "x", "text": "a", "context": {"k": 1}}), max_context_bytes=65_536)
    assert small.context_omitted is None


@pytest.mark.parametrize("field", ["author_id", "lang"])
def test_optional_strings_are_bounded(field):
    with pytest.raises(InvalidSchema, match=f"'{field}' is 10,000 characters"):
        decode_post(orjson.dumps({"id": "x", "text": "a", field: "z" * 10_000}))
