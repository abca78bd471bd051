"""What a worker did since its last summary line: the info-level view of its batches.

At low rates a batch holds one post, so one info line per batch is one line per post (96,000 lines an
hour per worker at 28 posts/s). Per-batch detail is logged at debug; at info the worker writes one
``summary`` line every ``MODERATION_LOG_SUMMARY_S`` (posts, actions, DLQ, escalations, latency
percentiles, warnings and errors logged) plus its state changes and every error.

Pure code, no I/O: :class:`Summary` is fed each batch's result and hands out (and resets) the counts
of the interval; its memory is bounded whatever the rate (latencies go to a log-bucketed histogram).
:class:`BrokerWatch` turns periodic broker probes into two state changes, lost and back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moderation.pipeline.batch import BatchResult

QUANTILE_GROWTH = 1.04
"""Bucket width of :class:`Quantiles`: a reported percentile is within ±2 % of the exact one."""


@dataclass
class Quantiles:
    """Percentiles of positive values from a log-bucketed histogram: O(buckets) memory (a few hundred
    for any realistic latency range), however many values were added."""

    growth: float = QUANTILE_GROWTH
    counts: dict[int, int] = field(default_factory=dict)
    n: int = 0
    max: float = 0.0

    def add(self, value: float) -> None:
        index = math.floor(math.log(value) / math.log(self.growth)) if value > 0 else -(10**6)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1
        self.max = max(self.max, value)

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1): the geometric middle of its bucket, capped at the largest
        value seen; None when nothing was added."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                if index == -(10**6):
                    return 0.0
                return min(self.max, self.growth ** (index + 0.5))
        return self.max  # pragma: no cover - rank <= n always lands in a bucket


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass
class Interval:
    """The counts of one interval."""

    started: float
    batches: int = 0
    posts: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    escalated: int = 0
    dlq: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    scored: int = 0
    batch_ms: Quantiles = field(default_factory=Quantiles)
    e2e_ms: Quantiles = field(default_factory=Quantiles)


class Summary:
    """Counts of the current interval; :meth:`take` returns them as log fields and starts the next one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.now = Interval(clock())
        self.posts_total = 0

    def add(self, result: BatchResult, batch_s: float) -> None:
        """One batch: its result and the seconds it took (scored, produced, acknowledged)."""
        now = self.now
        size = len(result.moderated) + len(result.rejected)
        now.batches += 1
        now.posts += size
        self.posts_total += size
        now.cache_hits += result.cache_hits
        now.scored += result.scored
        now.batch_ms.add(batch_s * 1000)
        actions = now.actions
        for item in result.moderated:
            decision = item.decision
            actions[decision.action] = actions.get(decision.action, 0) + 1
            if decision.triggers:
                now.escalated += 1
            created = item.post.created_at_ms
            if created is not None:
                now.e2e_ms.add(max(0, item.decided_ms - created))
        for rejected in result.rejected:
            code = rejected.error.code
            now.dlq[code] = now.dlq.get(code, 0) + 1

    def take(self, logged: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The interval's fields (``logged``: warnings/errors the process logged in it); starts the next."""
        done, at = self.now, self.clock()
        self.now = Interval(at)
        return {
            "interval_s": round(at - done.started, 1),
            "posts": done.posts,
            "posts_total": self.posts_total,
            "batches": done.batches,
            "actions": dict(sorted(done.actions.items())),
            "escalated": done.escalated,
            "dlq": sum(done.dlq.values()),
            "dlq_by_class": dict(sorted(done.dlq.items())),
            "cache_hits": done.cache_hits,
            "scored": done.scored,
            "batch_ms": {
                "p50": _ms(done.batch_ms.quantile(0.5)),
                "p99": _ms(done.batch_ms.quantile(0.99)),
                "max": _ms(done.batch_ms.max if done.batch_ms.n else None),
            },
            "e2e_ms": {"p50": _ms(done.e2e_ms.quantile(0.5)), "p99": _ms(done.e2e_ms.quantile(0.99))},
            "warnings": int((logged or {}).get("warning", 0)),
            "errors": int((logged or {}).get("error", 0)),
        }


class BrokerWatch:
    """Whether the broker answers, as state changes: one ``broker_lost`` after ``after_failures``
    probes in a row failed, one ``broker_back`` (with the time it was gone) at the first success after
    that — not a line per reconnect attempt (aiokafka's own lines are counted by the repeat suppressor)."""

    def __init__(self, after_failures: int = 2, clock: Callable[[], float] = time.monotonic) -> None:
        self.after_failures = after_failures
        self.clock = clock
        self.failures = 0
        self.first_failure: float | None = None
        self.lost = False

    def seen(self, ok: bool, error: str = "") -> tuple[str, dict[str, Any]] | None:
        """Record one probe; returns the state change to log, if this probe made one."""
        now = self.clock()
        if ok:
            change = None
            if self.lost:
                change = ("broker_back", {"down_s": round(now - (self.first_failure or now), 1)})
            self.failures, self.first_failure, self.lost = 0, None, False
            return change
        self.failures += 1
        if self.first_failure is None:
            self.first_failure = now
        if not self.lost and self.failures >= self.after_failures:
            self.lost = True
            return "broker_lost", {"failed_probes": self.failures, "error": error[:300]}
        return None
