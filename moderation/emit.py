"""Stage 6 — emit: pipeline results → the Kafka records to produce (pure; the producer is elsewhere).

Routing: every post gets one audit record on the decisions topic and one record on the topic of its
action (allowed / review / blocked); escalated posts also get an LLM-review record; rejected messages
get a DLQ record carrying the original bytes untouched. All keyed by post id, so consumers of an
at-least-once stream can dedupe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from moderation import __version__
from moderation.pipeline import BatchResult, Moderated, Rejected, now_ms
from moderation.settings import Settings

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Topics:
    decisions: str
    allowed: str
    review: str
    blocked: str
    llm_review: str
    dlq: str

    @classmethod
    def from_settings(cls, s: Settings) -> Topics:
        return cls(
            decisions=s.decisions_topic,
            allowed=s.allowed_topic,
            review=s.review_topic,
            blocked=s.blocked_topic,
            llm_review=s.llm_review_topic,
            dlq=s.dlq_topic,
        )

    def for_action(self, action: str) -> str:
        return {"allow": self.allowed, "review": self.review, "block": self.blocked}[action]

    def all(self) -> list[str]:
        return [self.decisions, self.allowed, self.review, self.blocked, self.llm_review, self.dlq]


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


def iso_ms(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return (
        datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


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
    p = item.post
    return {
        "id": p.id,
        "text": p.text,
        "author_id": p.author_id,
        "lang": p.lang,
        "created_at": iso_ms(p.created_at_ms),
        "context": p.context,
    }


def llm_review_document(item: Moderated, audit: dict[str, Any]) -> dict[str, Any]:
    """Everything an LLM reviewer needs without another lookup."""
    return {
        **audit,
        "post": post_document(item),
        "question": (
            "The automatic moderator was not sure enough. Read the post, its scores and the triggers, "
            "and answer allow, review (human) or block, with a one-line reason."
        ),
    }


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


def records_for(
    result: BatchResult, topics: Topics, model: dict[str, Any], worker_id: str
) -> list[OutRecord]:
    out: list[OutRecord] = []
    for item in result.moderated:
        key = item.post.id.encode()
        audit = decision_document(item, model, worker_id)
        headers: Headers = [("action", item.decision.action.encode())]
        out.append(OutRecord(topics.decisions, key, orjson.dumps(audit), headers))
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
                OutRecord(
                    topics.llm_review, key, orjson.dumps(llm_review_document(item, audit)), headers + trig
                )
            )
    for rejected in result.rejected:
        out.append(
            OutRecord(
                topics.dlq,
                rejected.message.key,
                rejected.message.value or b"",
                dlq_headers(rejected, worker_id),
            )
        )
    return out
