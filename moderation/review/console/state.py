"""What the console knows, rebuilt from Kafka at start and kept current by consuming it.

Every replica reads the review topic, the verdicts topic and a window of the audit topic in full (no
consumer group), so a post one reviewer decides leaves every replica's queue as soon as the verdict
arrives, and a restarted console shows the same queue. Pure: records in, views out (unit-testable).

Queued for people: posts on the review topic and posts the LLM left for humans (``needs_human``), until
a human verdict for them exists. An LLM verdict does not remove a post from the queue — people have the
last word — but it is shown next to it as a suggestion.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from moderation.review.guard import slm_leaning
from moderation.review.verdicts import slm_decision as _slm

__all__ = ["ConsoleState", "Item", "parse_iso_ms", "slm_leaning"]


def parse_iso_ms(value: Any) -> float | None:
    """RFC 3339 → epoch seconds (None when absent or unreadable: records come from other processes)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Item:
    """A post as the queue shows it."""

    post_id: str
    post: dict[str, Any]
    slm: dict[str, Any]
    queued_at: float  # when it entered review (decided_at of the SLM, else when we saw it)
    source: str  # "review" | "needs_human"
    needs_human_reason: str | None = None
    needs_human_detail: str | None = None  # why, in a line (e.g. which signals or which score)
    refused: dict[str, Any] | None = None  # the LLM answer that was not applied (llm_contradicts_slm)
    llm: dict[str, Any] | None = None  # the LLM's verdict, as a suggestion
    decided: dict[str, Any] | None = None  # the human verdict, once there is one


@dataclass
class ConsoleState:
    max_posts: int = 50_000
    bucket_s: float = 300.0  # one chart bar per 5 minutes
    window_s: float = 6 * 3600.0
    items: OrderedDict[str, Item] = field(default_factory=OrderedDict)
    pending_verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)  # human verdicts seen before the post
    decisions: dict[int, dict[str, int]] = field(default_factory=dict)  # bucket → action → count
    escalated: dict[int, int] = field(default_factory=dict)  # bucket → escalated decisions
    depth_samples: deque[tuple[float, int, float]] = field(default_factory=lambda: deque(maxlen=720))
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # reviewer kind → confirmed/overturned

    # --- intake -------------------------------------------------------------------------------------------
    def add_review(self, doc: dict[str, Any]) -> None:
        """A record of the review topic (the audit record plus the post)."""
        post_id, post = doc.get("post_id"), doc.get("post")
        if not isinstance(post_id, str) or not isinstance(post, dict) or post_id in self.items:
            return
        queued = parse_iso_ms(doc.get("decided_at")) or time.time()
        self._put(Item(post_id, post, _slm(doc), queued, "review"))

    def add_verdict(self, doc: dict[str, Any]) -> None:
        """A record of the verdicts topic: LLM or human, decided or needs_human."""
        post_id = doc.get("post_id")
        if not isinstance(post_id, str):
            return
        kind, reviewer_kind = doc.get("kind"), doc.get("reviewer_kind")
        item = self.items.get(post_id)
        if kind == "needs_human":
            if item is None and isinstance(doc.get("post"), dict):
                slm = doc.get("overrides") or {}
                # its age counts from when the SLM sent it to review, not from when the LLM gave up
                queued = parse_iso_ms(slm.get("decided_at")) or parse_iso_ms(doc.get("decided_at")) or time.time()
                self._put(Item(post_id, doc["post"], slm, queued, "needs_human", doc.get("reason")))
                item = self.items[post_id]
                if post_id in self.pending_verdicts:
                    item.decided = self.pending_verdicts.pop(post_id)
            elif item is not None:
                item.needs_human_reason = doc.get("reason")
            if item is not None:
                item.needs_human_detail = doc.get("rationale") if isinstance(doc.get("rationale"), str) else None
                refused = doc.get("refused_answer")
                item.refused = refused if isinstance(refused, dict) else None
            return
        if kind != "verdict":
            return
        leaning = slm_leaning(doc.get("overrides"))
        if leaning is not None and reviewer_kind in ("human", "llm"):
            tally = self.outcomes.setdefault(str(reviewer_kind), {"confirmed": 0, "overturned": 0})
            tally["overturned" if doc.get("action") != leaning else "confirmed"] += 1
        if reviewer_kind == "llm":
            if item is not None:
                item.llm = doc
            return
        if item is None:
            self.pending_verdicts[post_id] = doc
            if len(self.pending_verdicts) > self.max_posts:
                self.pending_verdicts.pop(next(iter(self.pending_verdicts)))
        else:
            item.decided = doc

    def add_decision(self, doc: dict[str, Any]) -> None:
        """An audit record (moderation.decisions): counted per action and time bucket, nothing kept."""
        at = parse_iso_ms(doc.get("decided_at"))
        action = doc.get("action")
        if at is None or action not in ("allow", "review", "block"):
            return
        bucket = int(at // self.bucket_s)
        counts = self.decisions.setdefault(bucket, {"allow": 0, "review": 0, "block": 0})
        counts[str(action)] += 1
        if doc.get("triggers"):
            self.escalated[bucket] = self.escalated.get(bucket, 0) + 1
        oldest = int((time.time() - self.window_s) // self.bucket_s)
        for old in [b for b in self.decisions if b < oldest]:
            self.decisions.pop(old, None)
            self.escalated.pop(old, None)

    def _put(self, item: Item) -> None:
        if item.post_id in self.pending_verdicts:
            item.decided = self.pending_verdicts.pop(item.post_id)
        self.items[item.post_id] = item
        while len(self.items) > self.max_posts:
            self.items.popitem(last=False)

    # --- views --------------------------------------------------------------------------------------------
    def queue(self) -> list[Item]:
        """Posts waiting for a human, oldest first."""
        return sorted((i for i in self.items.values() if i.decided is None), key=lambda i: i.queued_at)

    def sample(self, now: float | None = None) -> tuple[int, float]:
        """Queue depth and oldest age now; also kept as a sample for the depth-over-time chart."""
        now = time.time() if now is None else now
        waiting = self.queue()
        oldest = now - waiting[0].queued_at if waiting else 0.0
        self.depth_samples.append((now, len(waiting), oldest))
        return len(waiting), oldest

    def recent_verdicts(self, n: int = 20) -> list[Item]:
        decided = [i for i in self.items.values() if i.decided is not None]
        return sorted(decided, key=lambda i: str(i.decided.get("decided_at") if i.decided else ""), reverse=True)[:n]
