"""The records that flow through the pipeline and onto Kafka.

Plain frozen dataclasses: cheap to build per post, trivially serialised with orjson, and free of any
I/O so every stage can be unit-tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["allow", "review", "block"]
ACTIONS: tuple[Action, ...] = ("allow", "review", "block")

# task → label → calibrated probability, e.g. {"toxicity": {"toxic": 0.93, ...}, "spam": {"spam": 0.01}}
Scores = dict[str, dict[str, float]]


@dataclass(frozen=True, slots=True)
class ContextSummary:
    """Stands in for a ``context`` too large to copy into output records."""

    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Post:
    """A validated input post. ``context_omitted`` is set when outputs must not carry ``context``."""

    id: str
    text: str
    author_id: str | None = None
    lang: str | None = None
    created_at_ms: int | None = None
    context: dict[str, Any] = field(default_factory=dict)
    context_omitted: ContextSummary | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message came from: enough to find it again in Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Language:
    """The language of a post as the policy saw it (``moderation.pipeline.policy.assess_language``)."""

    effective: str  # what the policy went by: the declared language if trusted, else the detected one, or "und"
    detected: str  # the detector's answer ("und": too little text to tell)
    confidence: float  # the detector's probability of ``detected``
    declared: str | None  # the producer's ``lang``, normalised (primary subtag), None when absent
    supported: bool  # ``effective`` is one the model was trained on, or undetermined

    def as_dict(self) -> dict[str, Any]:
        return {
            "effective": self.effective,
            "detected": self.detected,
            "confidence": self.confidence,
            "declared": self.declared,
            "supported": self.supported,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's verdict on one post, with everything an auditor needs."""

    post_id: str
    action: Action
    scores: Scores
    labels: tuple[str, ...]  # "task.label" entries that crossed their review or block threshold
    reasons: tuple[str, ...]  # human-readable, one per rule that fired
    triggers: tuple[str, ...]  # escalation triggers that fired (non-empty → LLM review)
    confidence: float
    policy_version: str
    # label → review / block thresholds and near-block point in force; set when escalated (the LLM
    # consumer checks an answer against them, moderation.review.guard)
    thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    language: Language | None = None  # None when the policy does not look at languages

    @property
    def escalate(self) -> bool:
        return bool(self.triggers)
