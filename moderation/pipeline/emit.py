"""Stage 6 — emit: pipeline results → the Kafka records to produce (pure; the producer is elsewhere).

Routing: every post gets one audit record on the decisions topic and one record on the topic of its
action (allowed / review / blocked); escalated posts also get an LLM-review record; rejected messages
get a DLQ record carrying the original bytes untouched. All keyed by post id, so consumers of an
at-least-once stream can dedupe.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from moderation import __version__
from moderation.core.errors import OutputError, OutputTooLarge
from moderation.core.settings import Settings
from moderation.pipeline.batch import BatchResult, Message, Moderated, Rejected, now_ms

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Topics:
    decisions: str
    allowed: str
    review: str
    blocked: str
    llm_review: str
    dlq: str
    per_action: bool = True  # also write each decision, with its post, to the topic of its action

    @classmethod
    def from_settings(cls, s: Settings) -> Topics:
        return cls(
            decisions=s.decisions_topic,
            allowed=s.allowed_topic,
            review=s.review_topic,
            blocked=s.blocked_topic,
            llm_review=s.llm_review_topic,
            dlq=s.dlq_topic,
            per_action=s.action_topics,
        )

    def for_action(self, action: str) -> str:
        return {"allow": self.allowed, "review": self.review, "block": self.blocked}[action]

    def all(self) -> list[str]:
        return [self.decisions, self.allowed, self.review, self.blocked, self.llm_review, self.dlq]


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes | None  # None only for the DLQ copy of a tombstone
    headers: Headers


def iso_ms(epoch_ms: int | None) -> str | None:
    """RFC 3339 UTC with milliseconds; the part down to the second is cached, since a batch's timestamps
    share a few seconds (formatting a datetime per timestamp was a visible cost of every post)."""
    if epoch_ms is None:
        return None
    seconds, millis = divmod(epoch_ms, 1000)
    head = _iso_seconds(seconds)
    return None if head is None else f"{head}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_seconds(seconds: int) -> str | None:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, ValueError, OSError):  # decode bounds created_at; never let a time crash a batch
        return None


def decision_document(item: Moderated, model: dict[str, Any], worker_id: str) -> dict[str, Any]:
    """The audit record: everything about the decision, but not the post text (privacy)."""
    d = item.decision
    origin = item.message.origin
    return {
        "post_id": d.post_id,
        "action": d.action,
        "labels": list(d.labels),
        "reasons": list(d.reasons),
        "triggers": list(d.triggers),
        "confidence": d.confidence,
        # effective / detected / confidence / declared / supported (moderation.pipeline.language)
        "language": d.language.as_dict() if d.language is not None else None,
        "scores": {task: {label: round(p, 4) for label, p in probs.items()} for task, probs in d.scores.items()},
        "policy_version": d.policy_version,
        "model": model,
        "created_at": iso_ms(item.post.created_at_ms),
        "received_at": iso_ms(item.message.received_ms),
        "decided_at": iso_ms(item.decided_ms),
        "latency_ms": item.decided_ms - item.message.received_ms if item.message.received_ms else None,
        "origin": {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset},
        "worker": {"id": worker_id, "version": __version__},
    }


def post_document(item: Moderated) -> dict[str, Any]:
    """The post as outputs carry it; a context over MODERATION_MAX_CONTEXT_BYTES is replaced by its size
    and SHA-256 so that no record outgrows the broker's limit."""
    p = item.post
    doc: dict[str, Any] = {
        "id": p.id,
        "text": p.text,
        "author_id": p.author_id,
        "lang": p.lang,
        "created_at": iso_ms(p.created_at_ms),
        "context": p.context,
    }
    if p.context_omitted is not None:
        doc["context"] = None
        doc["context_omitted"] = {"bytes": p.context_omitted.size_bytes, "sha256": p.context_omitted.sha256}
    return doc


def llm_review_document(item: Moderated, audit: dict[str, Any]) -> dict[str, Any]:
    """Everything an LLM reviewer needs without another lookup, and the thresholds the decision was made
    with, so that the LLM consumer can refuse an answer that contradicts it (``moderation.review.guard``)."""
    return {
        **audit,
        "thresholds": {name: dict(limits) for name, limits in item.decision.thresholds.items()},
        "post": post_document(item),
        "question": (
            "The automatic moderator was not sure enough. Read the post, its scores and the triggers, "
            "and answer allow, review (human) or block, with a one-line reason."
        ),
    }


# Room left in a DLQ record for the key, headers and the record's framing.
_DLQ_MAX_KEY_BYTES = 1024
_DLQ_HEADROOM_BYTES = 8192


def dlq_headers(rejected: Rejected, worker_id: str) -> Headers:
    origin = rejected.message.origin
    return [
        ("error.class", rejected.error.code.encode()),
        ("error.type", type(rejected.error).__name__.encode()),
        ("error.message", rejected.error.message[:1000].encode("utf-8", "replace")),
        ("origin.topic", origin.topic.encode()),
        ("origin.partition", str(origin.partition).encode()),
        ("origin.offset", str(origin.offset).encode()),
        ("worker.id", worker_id.encode()),
        ("worker.version", __version__.encode()),
        ("failed_at", str(now_ms()).encode()),
    ]


def dlq_record(rejected: Rejected, topics: Topics, worker_id: str, max_record_bytes: int) -> OutRecord:
    """The original bytes untouched (a tombstone stays null) — unless they would not fit in one record:
    then a prefix, with headers ``original.size`` / ``original.sha256`` (and the same for an oversized
    key) so the original can still be matched and found at its origin offset."""
    headers = dlq_headers(rejected, worker_id)
    key, value = rejected.message.key, rejected.message.value
    if key is not None and len(key) > _DLQ_MAX_KEY_BYTES:
        headers += [
            ("original.key.size", str(len(key)).encode()),
            ("original.key.sha256", hashlib.sha256(key).hexdigest().encode()),
        ]
        key = key[:_DLQ_MAX_KEY_BYTES]
    budget = max_record_bytes - _DLQ_HEADROOM_BYTES - len(key or b"")
    if value is not None and len(value) > budget:
        headers += [
            ("original.size", str(len(value)).encode()),
            ("original.sha256", hashlib.sha256(value).hexdigest().encode()),
            ("payload.truncated", b"true"),
        ]
        value = value[: max(0, budget)]
    return OutRecord(topics.dlq, key, value, headers)


def record_size(record: OutRecord) -> int:
    """Bytes the record takes against the broker's limit, near enough (framing is in the headroom)."""
    return (
        len(record.key or b"")
        + len(record.value or b"")
        + sum(len(name) + len(value) for name, value in record.headers)
    )


@dataclass(frozen=True, slots=True)
class OutputGroup:
    """The records produced for one input message. ``rejected`` is set when they are its DLQ record:
    either the input was rejected, or its decided outputs could not be written."""

    message: Message
    records: list[OutRecord]
    rejected: Rejected | None = None
    moderated: Moderated | None = None


def moderated_records(
    item: Moderated, topics: Topics, model: dict[str, Any], worker_id: str, max_record_bytes: int
) -> list[OutRecord]:
    """Audit + action (+ LLM-review) records of one decided post; raises :class:`OutputError` when they
    cannot be serialised or one would exceed ``max_record_bytes``."""
    key = item.post.id.encode()
    headers: Headers = [("action", item.decision.action.encode())]
    try:
        audit = decision_document(item, model, worker_id)
        out = [OutRecord(topics.decisions, key, orjson.dumps(audit), headers)]
        if topics.per_action:
            out.append(
                OutRecord(
                    topics.for_action(item.decision.action),
                    key,
                    orjson.dumps({**audit, "post": post_document(item)}),
                    headers,
                )
            )
        if item.decision.escalate:
            trig = [("triggers", ",".join(item.decision.triggers).encode())]
            out.append(
                OutRecord(topics.llm_review, key, orjson.dumps(llm_review_document(item, audit)), headers + trig)
            )
    except (orjson.JSONEncodeError, TypeError, ValueError) as exc:
        raise OutputError(f"the decision for post {item.post.id[:64]!r} could not be serialised: {exc}") from None
    for record in out:
        size = record_size(record)
        if size > max_record_bytes:
            raise OutputTooLarge(
                f"the {record.topic} record would be {size:,} bytes, above MODERATION_MAX_RECORD_BYTES "
                f"({max_record_bytes:,})"
            )
    return out


def plan_outputs(
    result: BatchResult,
    topics: Topics,
    model: dict[str, Any],
    worker_id: str,
    max_record_bytes: int = 1_000_000,
) -> list[OutputGroup]:
    """Every record of the batch, grouped by input message. A decided post whose records cannot be
    built becomes a DLQ group instead (error class ``output_unwritable`` / ``output_too_large``)."""
    groups: list[OutputGroup] = []
    for item in result.moderated:
        try:
            records = moderated_records(item, topics, model, worker_id, max_record_bytes)
        except OutputError as exc:
            rejected = Rejected(item.message, exc)
            groups.append(
                OutputGroup(item.message, [dlq_record(rejected, topics, worker_id, max_record_bytes)], rejected, item)
            )
        else:
            groups.append(OutputGroup(item.message, records, None, item))
    for rejected in result.rejected:
        groups.append(
            OutputGroup(rejected.message, [dlq_record(rejected, topics, worker_id, max_record_bytes)], rejected)
        )
    return groups


def records_for(
    result: BatchResult, topics: Topics, model: dict[str, Any], worker_id: str, max_record_bytes: int = 1_000_000
) -> list[OutRecord]:
    """All records of a batch, flat, in produce order."""
    return [r for group in plan_outputs(result, topics, model, worker_id, max_record_bytes) for r in group.records]
