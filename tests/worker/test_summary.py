"""The worker's info-level view: the periodic summary's counts and percentiles, the broker's state changes."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest

from moderation.core.errors import InvalidJSON, InvalidSchema, MessageError
from moderation.core.logs import LevelCounter
from moderation.pipeline.batch import BatchResult, Message, Moderated, Rejected
from moderation.pipeline.records import Decision, Origin, Post
from moderation.worker.summary import BrokerWatch, Quantiles, Summary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def moderated(i: int, action: str, *, escalate: bool = False, created_ms: int | None = None) -> Moderated:
    message = Message(value=b"{}", origin=Origin("posts", i % 4, i))
    decision = Decision(
        post_id=f"p{i}",
        action=action,  # type: ignore[arg-type]
        scores={},
        labels=(),
        reasons=(),
        triggers=("uncertain",) if escalate else (),
        confidence=0.9,
        policy_version="t",
    )
    return Moderated(Post(f"p{i}", "text", created_at_ms=created_ms), decision, message, decided_ms=10_000)


def rejected(i: int, error: MessageError) -> Rejected:
    return Rejected(Message(value=b"x", origin=Origin("posts", 0, i)), error)


def test_summary_counts_one_interval_then_starts_the_next() -> None:
    clock = Clock()
    summary = Summary(clock)
    first = BatchResult(
        moderated=[
            moderated(1, "allow", created_ms=9_990),
            moderated(2, "block", escalate=True, created_ms=9_900),
            moderated(3, "allow"),
        ],
        rejected=[rejected(4, InvalidJSON("bad")), rejected(5, InvalidSchema("no text"))],
        cache_hits=1,
        scored=2,
    )
    second = BatchResult(moderated=[moderated(6, "review", escalate=True)], rejected=[rejected(7, InvalidJSON("x"))])
    summary.add(first, 0.020)
    summary.add(second, 0.010)
    clock.now += 60.04
    fields = summary.take({"warning": 2, "error": 1})
    assert fields == {
        "interval_s": 60.0,
        "posts": 7,
        "posts_total": 7,
        "batches": 2,
        "actions": {"allow": 2, "block": 1, "review": 1},
        "escalated": 2,
        "dlq": 3,
        "dlq_by_class": {"invalid_json": 2, "invalid_schema": 1},
        "cache_hits": 1,
        "scored": 2,
        "batch_ms": fields["batch_ms"],
        "e2e_ms": fields["e2e_ms"],
        "warnings": 2,
        "errors": 1,
    }
    assert fields["batch_ms"]["p50"] == pytest.approx(10, rel=0.03)
    assert fields["batch_ms"]["p99"] == pytest.approx(20, rel=0.03) and fields["batch_ms"]["max"] == 20.0
    assert fields["e2e_ms"]["p50"] == pytest.approx(10, rel=0.03)  # posts without created_at are not counted
    assert fields["e2e_ms"]["p99"] == pytest.approx(100, rel=0.03)

    clock.now += 30
    summary.add(BatchResult(moderated=[moderated(8, "allow")]), 0.005)
    clock.now += 30
    nxt = summary.take()
    assert (nxt["interval_s"], nxt["posts"], nxt["posts_total"], nxt["batches"]) == (60.0, 1, 8, 1)
    assert nxt["actions"] == {"allow": 1} and nxt["dlq"] == 0 and nxt["escalated"] == 0
    assert nxt["warnings"] == nxt["errors"] == 0 and nxt["e2e_ms"] == {"p50": None, "p99": None}
    idle = summary.take()
    assert idle["posts"] == 0 and idle["posts_total"] == 8
    assert idle["batch_ms"] == {"p50": None, "p99": None, "max": None}


def test_quantiles_are_within_two_percent_and_memory_is_bounded() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1.2) for _ in range(200_000)]
    q = Quantiles()
    q.extend(values)
    for p in (0.5, 0.9, 0.99):
        exact = float(np.quantile(values, p))
        assert q.quantile(p) == pytest.approx(exact, rel=0.025)
    assert q.n == len(values) and q.max == max(values)
    assert len(q.counts) < 400  # buckets, not values
    assert Quantiles().quantile(0.5) is None
    one = Quantiles()
    one.add(0.0)  # a zero latency is a value too (e.g. created_at in the future, clamped)
    assert one.quantile(0.99) == 0.0


def test_broker_watch_logs_lost_once_and_back_once() -> None:
    clock = Clock()
    watch = BrokerWatch(after_failures=2, clock=clock)
    assert watch.seen(True) is None
    assert watch.seen(False, "KafkaError: Unable to get cluster metadata") is None  # one failed probe: not yet
    clock.now += 5
    lost = watch.seen(False, "KafkaError: again")
    assert lost == ("broker_lost", {"failed_probes": 2, "error": "KafkaError: again"})
    for _ in range(10):
        clock.now += 5
        assert watch.seen(False, "KafkaError") is None  # lost is a state: said once
    clock.now += 5
    assert watch.seen(True) == ("broker_back", {"down_s": 60.0})
    assert watch.seen(True) is None
    assert watch.seen(False) is None  # a single blip after that is not an outage


def test_level_counter_counts_warnings_and_errors_and_passes_every_record() -> None:
    counter = LevelCounter()
    levels = (logging.DEBUG, logging.INFO, logging.WARNING, logging.WARNING, logging.ERROR, logging.CRITICAL)
    records = [logging.LogRecord("x", level, __file__, 1, "m", None, None) for level in levels]
    assert all(counter.filter(r) for r in records)
    assert counter.take() == {"warning": 2, "error": 2}
    assert counter.take() == {"warning": 0, "error": 0}
