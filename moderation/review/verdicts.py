"""The verdict record: one per review answer, on ``moderation.verdicts``, keyed by post id.

Pure functions, shared by the LLM consumer, the console and the feedback export, so that all three
agree on one shape. A verdict carries the post (text included) and the SLM decision it overrides,
because its two readers need both without another lookup: the console queues a ``needs_human``
record as it stands, and ``moderation models feedback`` turns verdicts into labelled examples. The
topic is therefore as sensitive as ``moderation.review`` (same retention and ACL class).

``kind``:

- ``verdict``      a reviewer (``llm:<model>`` or ``human:<name>``) decided ``allow`` or ``block``
- ``needs_human``  the LLM could not answer, or its answer was not applied (``reason`` says why); the post
                   is queued for people
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moderation.models.taxonomy import CATEGORY_LABELS, TOXICITY_LABELS

RECORD_VERSION = 1
REVIEW_LABELS = (*(f"toxicity.{label}" for label in TOXICITY_LABELS), "spam.spam")
"""Labels a reviewer may set or clear (the category is one value of its own)."""
CATEGORIES = CATEGORY_LABELS
ACTIONS = ("allow", "block")

# Why a post went to humans (the ``reason`` of a needs_human record and a metric label).
REASONS = (
    "malformed_answer",  # not JSON, or JSON that does not match the schema, every try
    "rate_limited",  # 429 every try
    "server_error",  # 5xx every try
    "timeout",  # no answer within MODERATION_LLM_TIMEOUT_S, every try
    "unreachable",  # connection refused / DNS / reset, every try
    "rejected",  # a 4xx other than 429 (bad key, unknown model): retrying cannot help
    "circuit_open",  # the endpoint failed too often lately; not asked at all
    "llm_deferred",  # the LLM answered "review": it wants a person to look
    "invalid_input",  # the llm-review record itself could not be read
    "prompt_injection",  # the post tries to instruct the reviewer: the LLM is not asked (review/guard.py)
    "llm_contradicts_slm",  # the LLM's allow contradicts a confident SLM decision: not applied (review/guard.py)
)

LLM_ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["action", "labels", "rationale", "confidence"],
    "properties": {
        "action": {"type": "string", "enum": ["allow", "block", "review"]},
        "labels": {"type": "array", "items": {"type": "string", "enum": list(REVIEW_LABELS)}, "uniqueItems": True},
        "rationale": {"type": "string", "maxLength": 600},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
"""What the LLM is asked for (``response_format: json_schema``) and what :func:`parse_answer` enforces,
since not every OpenAI-compatible server honours the schema."""


class LLMAnswer(BaseModel):
    # strict: no coercion ("0.9" is not a number, true is not 1.0); anything off the schema is malformed
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    action: Literal["allow", "block", "review"]
    labels: list[Literal["toxicity.toxic", "toxicity.hate", "toxicity.targeted", "spam.spam"]]
    rationale: str = Field(max_length=600)
    confidence: float = Field(ge=0.0, le=1.0)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "labels": list(self.labels), "rationale": self.rationale,
                "confidence": self.confidence}


class AnswerError(ValueError):
    """The endpoint answered, but not with a verdict we can use (said in one line, without the post)."""


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_answer(content: Any) -> LLMAnswer:
    """The message content of a chat completion → a validated :class:`LLMAnswer`, or :class:`AnswerError`.

    Tolerates a Markdown code fence around the JSON (small local models add one despite the schema);
    anything else that is not the schema is an error, so a wrong answer never becomes a verdict.
    """
    if not isinstance(content, str) or not content.strip():
        raise AnswerError("the answer has no message content")
    fenced = _FENCE.match(content)
    text = fenced.group(1) if fenced else content
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise AnswerError(f"the answer is not JSON ({exc})") from None
    try:
        answer = LLMAnswer.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:3])
        raise AnswerError(f"the answer does not match the verdict schema ({problems})") from None
    if len(set(answer.labels)) != len(answer.labels):
        raise AnswerError("the answer repeats a label")
    if answer.action == "allow" and answer.labels:
        raise AnswerError("the answer allows the post but names labels that would block it")
    if answer.action == "block" and not answer.labels:
        raise AnswerError("the answer blocks the post without naming a label")
    return answer


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def slm_decision(doc: dict[str, Any]) -> dict[str, Any]:
    """The SLM decision a verdict overrides, from a review/llm-review record (audit fields + post)."""
    keys = (
        "action", "labels", "reasons", "triggers", "confidence", "scores", "language", "policy_version", "model",
        "decided_at",
    )  # fmt: skip
    return {k: doc.get(k) for k in keys}


def post_of(doc: dict[str, Any]) -> dict[str, Any] | None:
    post = doc.get("post")
    return post if isinstance(post, dict) else None


def verdict(
    source: dict[str, Any],
    *,
    reviewer: str,
    action: str,
    labels: list[str],
    category: str | None = None,
    rationale: str | None = None,
    confidence: float | None = None,
    origin: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A decided verdict. ``source``: the review / llm-review record (or a needs_human verdict) decided on."""
    if action not in ACTIONS:
        raise ValueError(f"verdict action must be one of {ACTIONS}, got {action!r}")
    unknown = sorted(set(labels) - set(REVIEW_LABELS))
    if unknown:
        raise ValueError(f"unknown labels {unknown}; known: {REVIEW_LABELS}")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; known: {CATEGORIES}")
    return _record(source, "verdict", reviewer, origin) | {
        "action": action,
        "labels": sorted(set(labels)),
        "category": category,
        "rationale": rationale,
        "confidence": confidence,
        "reason": None,
    }


def needs_human(
    source: dict[str, Any],
    *,
    reviewer: str,
    reason: str,
    detail: str = "",
    origin: dict[str, Any] | None = None,
    refused: LLMAnswer | None = None,
) -> dict[str, Any]:
    """The LLM could not decide, or its answer is not applied: the post goes to the people's queue with the
    reason. ``refused``: the answer that was not applied (``llm_contradicts_slm``), shown to reviewers as
    what the LLM said — never a verdict, never a training label."""
    if reason not in REASONS:
        raise ValueError(f"unknown needs_human reason {reason!r}")
    return _record(source, "needs_human", reviewer, origin) | {
        "action": None,
        "labels": [],
        "category": None,
        "rationale": detail[:600] or None,
        "confidence": None,
        "reason": reason,
        "refused_answer": refused.as_dict() if refused is not None else None,
    }


def _record(source: dict[str, Any], kind: str, reviewer: str, origin: dict[str, Any] | None) -> dict[str, Any]:
    # a needs_human verdict decided by a person: it already carries the SLM decision and the post
    overrides = source.get("overrides") if source.get("kind") == "needs_human" else slm_decision(source)
    post_id = source.get("post_id") or (post_of(source) or {}).get("id")
    return {
        "version": RECORD_VERSION,
        "kind": kind,
        "post_id": post_id,
        "reviewer": reviewer,
        "reviewer_kind": reviewer.split(":", 1)[0],
        "decided_at": now_iso(),
        "overrides": overrides,
        "post": post_of(source),
        "origin": origin,
    }


def encode(record: dict[str, Any]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """key, value, headers of a verdict record (headers let a reader filter without parsing)."""
    headers = [("kind", record["kind"].encode()), ("reviewer", record["reviewer"].encode()[:256])]
    if record.get("action"):
        headers.append(("action", record["action"].encode()))
    return str(record["post_id"] or "").encode(), orjson.dumps(record), headers
