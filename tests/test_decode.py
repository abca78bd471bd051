import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation.decode import decode_post, parse_created_at
from moderation.errors import (
    EmptyText,
    InputError,
    InvalidJSON,
    InvalidSchema,
    InvalidUTF8,
    TextTooLarge,
)


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
        (None, InvalidJSON, "empty"),
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
