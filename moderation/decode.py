"""Stage 1 — decode: raw Kafka bytes → a validated :class:`Post`, or an :class:`InputError`.

Pure and total: every input either becomes a post or raises an ``InputError`` subclass whose ``code``
and message end up in the DLQ headers. Nothing here may raise anything else, because one poison
message must never stop a worker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from moderation.errors import (
    EmptyText,
    InputError,
    InvalidJSON,
    InvalidSchema,
    InvalidUTF8,
    TextTooLarge,
)
from moderation.records import Post

_OPTIONAL_STR_FIELDS = ("author_id", "lang")


def decode_post(
    raw: bytes | None,
    *,
    key: bytes | None = None,
    max_message_bytes: int = 1_000_000,
    max_text_chars: int = 20_000,
) -> Post:
    """Parse and validate one message; the Kafka key stands in for a missing ``id``."""
    if raw is None or len(raw) == 0:
        raise InvalidJSON("message value is empty (tombstone or empty bytes); expected a JSON object")
    if len(raw) > max_message_bytes:
        raise TextTooLarge(
            f"message is {len(raw):,} bytes, above the {max_message_bytes:,}-byte limit "
            "(MODERATION_MAX_MESSAGE_BYTES)"
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "utf-8" in str(exc).lower() or "surrogate" in str(exc).lower():
            raise InvalidUTF8(f"message is not valid UTF-8: {exc}") from None
        raise InvalidJSON(f"message is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidSchema(f"expected a JSON object, got {type(doc).__name__}")
    return _validate(doc, key=key, max_text_chars=max_text_chars)


def _validate(doc: dict[str, Any], *, key: bytes | None, max_text_chars: int) -> Post:
    post_id = doc.get("id")
    if post_id is None and key:
        try:
            post_id = key.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidUTF8("field 'id' is missing and the message key is not valid UTF-8") from None
    if not isinstance(post_id, str) or not post_id.strip():
        raise InvalidSchema(f"field 'id' must be a non-empty string, got {_describe(post_id)}")
    if len(post_id) > 256:
        raise InvalidSchema(f"field 'id' is {len(post_id)} characters; at most 256 are allowed")

    text = doc.get("text")
    if not isinstance(text, str):
        raise InvalidSchema(f"field 'text' must be a string, got {_describe(text)}")
    if not text.strip():
        raise EmptyText("field 'text' is empty or whitespace only; nothing to moderate")
    if len(text) > max_text_chars:
        raise TextTooLarge(
            f"field 'text' has {len(text):,} characters, above the {max_text_chars:,} limit "
            "(MODERATION_MAX_TEXT_CHARS)"
        )

    optional: dict[str, str | None] = {}
    for name in _OPTIONAL_STR_FIELDS:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidSchema(f"field '{name}' must be a string when present, got {_describe(value)}")
        optional[name] = value

    context = doc.get("context")
    if context is None:
        context = {}
    elif not isinstance(context, dict):
        raise InvalidSchema(f"field 'context' must be an object when present, got {_describe(context)}")

    return Post(
        id=post_id,
        text=text,
        author_id=optional["author_id"],
        lang=optional["lang"],
        created_at_ms=parse_created_at(doc.get("created_at")),
        context=context,
    )


def parse_created_at(value: object) -> int | None:
    """``created_at`` as epoch milliseconds; accepts RFC 3339 strings or epoch-ms integers."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidSchema("field 'created_at' must be RFC 3339 text or epoch milliseconds, got a boolean")
    if isinstance(value, int | float):
        if not 0 <= value < 10**14:
            raise InvalidSchema(f"field 'created_at' epoch milliseconds out of range: {value}")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidSchema(f"field 'created_at' is not RFC 3339: {value[:64]!r}") from None
        if parsed.tzinfo is None:
            raise InvalidSchema(f"field 'created_at' needs a UTC offset (RFC 3339): {value[:64]!r}")
        return int(parsed.timestamp() * 1000)
    raise InvalidSchema(
        f"field 'created_at' must be RFC 3339 text or epoch milliseconds, got {_describe(value)}"
    )


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    return type(value).__name__


def error_code(exc: InputError) -> str:
    return exc.code
