"""Stage 1 — decode: raw Kafka bytes → a validated :class:`Post`, or an :class:`InputError`.

Pure and total: every input either becomes a post or raises an ``InputError`` subclass whose ``code``
and message end up in the DLQ headers. Nothing here may raise anything else, because one poison
message must never stop a worker.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from moderation.core.errors import (
    EmptyText,
    InputError,
    InvalidJSON,
    InvalidSchema,
    InvalidUTF8,
    TextTooLarge,
)
from moderation.pipeline.records import ContextSummary, Post

_OPTIONAL_STR_FIELDS = ("author_id", "lang")
MAX_ID_CHARS = 256
MAX_CONTEXT_DEPTH = 32
# created_at must lie in [1970-01-01, 5138-11-16): what epoch milliseconds and RFC 3339 can share
MAX_EPOCH_MS = 10**14
_BOM = b"\xef\xbb\xbf"


def decode_post(
    raw: bytes | None,
    *,
    key: bytes | None = None,
    max_message_bytes: int = 1_000_000,
    max_text_chars: int = 20_000,
    max_context_bytes: int = 65_536,
) -> Post:
    """Parse and validate one message; the Kafka key stands in for a missing ``id``."""
    if raw is None:
        raise InvalidJSON("message value is null (a tombstone); expected a JSON object")
    if len(raw) == 0:
        raise InvalidJSON("message value is empty; expected a JSON object")
    if len(raw) > max_message_bytes:
        raise TextTooLarge(
            f"message is {len(raw):,} bytes, above the {max_message_bytes:,}-byte limit "
            "(MODERATION_MAX_MESSAGE_BYTES)"
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _json_error(raw, exc) from None
    if not isinstance(doc, dict):
        raise InvalidSchema(f"expected a JSON object, got {type(doc).__name__}")
    return _validate(doc, key=key, max_text_chars=max_text_chars, max_context_bytes=max_context_bytes)


def _json_error(raw: bytes, exc: orjson.JSONDecodeError) -> InputError:
    """Name the real cause: orjson's own wording blames surrogates for plain bad UTF-8 bytes."""
    if raw.startswith(_BOM):
        return InvalidJSON(
            "message starts with a UTF-8 byte-order mark (EF BB BF), which JSON does not allow; "
            "have the producer write UTF-8 without a BOM"
        )
    if str(exc).startswith("str is not valid UTF-8"):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            return InvalidUTF8(
                f"message is not valid UTF-8: byte 0x{raw[bad.start]:02x} at offset {bad.start} ({bad.reason})"
            )
        return InvalidUTF8(f"message is not valid UTF-8: {exc}")
    if "surrogate" in str(exc):
        return InvalidJSON(
            f"message has a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without its pair) at char {exc.pos}; "
            "it encodes no character, so the text cannot be represented"
        )
    return InvalidJSON(f"message is not valid JSON: {exc}")


def _validate(doc: dict[str, Any], *, key: bytes | None, max_text_chars: int, max_context_bytes: int) -> Post:
    post_id = doc.get("id")
    if post_id is None and key:
        try:
            post_id = key.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidUTF8("field 'id' is missing and the message key is not valid UTF-8") from None
    if not isinstance(post_id, str) or not post_id.strip():
        raise InvalidSchema(f"field 'id' must be a non-empty string, got {_describe(post_id)}")
    if len(post_id) > MAX_ID_CHARS:
        raise InvalidSchema(f"field 'id' is {len(post_id):,} characters; at most {MAX_ID_CHARS} are allowed")

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
        if value is not None and len(value) > MAX_ID_CHARS:
            raise InvalidSchema(f"field '{name}' is {len(value):,} characters; at most {MAX_ID_CHARS} are allowed")
        optional[name] = value

    context = doc.get("context")
    if context is None:
        context = {}
    elif not isinstance(context, dict):
        raise InvalidSchema(f"field 'context' must be an object when present, got {_describe(context)}")
    omitted = _check_context(context, max_context_bytes)

    return Post(
        id=post_id,
        text=text,
        author_id=optional["author_id"],
        lang=optional["lang"],
        created_at_ms=parse_created_at(doc.get("created_at")),
        context=context,
        context_omitted=omitted,
    )


def _check_context(context: dict[str, Any], max_bytes: int) -> ContextSummary | None:
    """Reject what no output could carry (too deep to serialise); summarise what is merely too big.

    A context over ``max_bytes`` stays available to the policy but is left out of every output record,
    which carries its size and SHA-256 instead: that keeps each record far below the broker's limit.
    """
    if not context:  # most posts: nothing to measure
        return None
    depth = nesting_depth(context, MAX_CONTEXT_DEPTH + 1)
    if depth > MAX_CONTEXT_DEPTH:
        raise InvalidSchema(f"field 'context' is nested more than {MAX_CONTEXT_DEPTH} levels deep")
    try:
        encoded = orjson.dumps(context)
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise InvalidSchema(f"field 'context' cannot be written back as JSON: {exc}") from None
    if len(encoded) <= max_bytes:
        return None
    return ContextSummary(size_bytes=len(encoded), sha256=hashlib.sha256(encoded).hexdigest())


def nesting_depth(value: object, limit: int) -> int:
    """Depth of nested objects/arrays (a scalar is 0), counted iteratively and up to ``limit`` only."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest >= limit:
                return deepest
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def parse_created_at(value: object) -> int | None:
    """``created_at`` as epoch milliseconds; accepts RFC 3339 strings or epoch-ms integers."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidSchema("field 'created_at' must be RFC 3339 text or epoch milliseconds, got a boolean")
    if isinstance(value, int | float):
        if not 0 <= value < MAX_EPOCH_MS:  # NaN fails this too
            raise InvalidSchema(f"field 'created_at' epoch milliseconds out of range: {value}")
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidSchema(f"field 'created_at' is not RFC 3339: {value[:64]!r}") from None
        if parsed.tzinfo is None:
            raise InvalidSchema(f"field 'created_at' needs a UTC offset (RFC 3339): {value[:64]!r}")
        try:
            epoch_ms = int(parsed.timestamp() * 1000)
        except (OverflowError, ValueError):
            epoch_ms = -1
        if not 0 <= epoch_ms < MAX_EPOCH_MS:
            raise InvalidSchema(
                f"field 'created_at' is out of range (1970-01-01 to 5138-11-16 UTC): {value[:64]!r}"
            )
        return epoch_ms
    raise InvalidSchema(
        f"field 'created_at' must be RFC 3339 text or epoch milliseconds, got {_describe(value)}"
    )


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    return type(value).__name__


def error_code(exc: InputError) -> str:
    return exc.code
