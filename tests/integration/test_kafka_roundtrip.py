"""10,000 JSON posts through the real broker and back: nothing lost, nothing doubled, order kept.

This is the contract the workers build on (aiokafka against Kafka 4.x, keyed partitioning, consumer
groups, manual commits). Every wait is bounded, so a dead broker fails the test with a message
saying which phase stalled and whether the broker still answers, instead of hanging CI.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from moderation.core.settings import parse_host_port
from moderation.devtools.broker import probe

N_MESSAGES = 10_000
PARTITIONS = 6
PHASE_TIMEOUT_S = 60.0  # per phase; a healthy local broker needs a few seconds for each
T = TypeVar("T")

pytestmark = pytest.mark.kafka


async def within(aw: Awaitable[T], what: Callable[[], str], bootstrap: str, timeout_s: float = PHASE_TIMEOUT_S) -> T:
    """Await with a deadline; on timeout or a client error, fail saying what stalled and why."""
    try:
        return await asyncio.wait_for(aw, timeout_s)
    except TimeoutError:
        cause = f"timed out after {timeout_s:.0f} s"
    except KafkaError as exc:
        cause = repr(exc)
    # Failing outside the except block keeps the report to one line instead of a chained traceback.
    host, port = parse_host_port(bootstrap)
    answers = await asyncio.to_thread(probe.is_ready, host, port, 2.0)
    broker = "still answers metadata requests" if answers else "does NOT answer (down or unreachable)"
    pytest.fail(f"{what()}: {cause}. The broker at {bootstrap} {broker}.", pytrace=False)


def post(i: int) -> tuple[bytes, bytes]:
    key = f"post-{i:05d}"
    value = orjson.dumps({"id": key, "seq": i, "text": f"message number {i} ✓", "lang": "en"})
    return key.encode(), value


async def produce_all(producer: AIOKafkaProducer, topic: str) -> list[tuple[int, int, int]]:
    """Send every post, then wait for all acks; returns (seq, partition, offset) per post."""
    futures = []
    for i in range(N_MESSAGES):
        key, value = post(i)
        futures.append(await producer.send(topic, value=value, key=key))
    metadata = await asyncio.gather(*futures)
    return [(i, md.partition, md.offset) for i, md in enumerate(metadata)]


async def consume_all(consumer: AIOKafkaConsumer, received: list[tuple[int, int, bytes, bytes]]) -> None:
    """Poll until N messages arrived, then once more to catch any extra (duplicate) delivery."""
    while len(received) < N_MESSAGES:
        batches = await consumer.getmany(timeout_ms=500, max_records=2_000)
        for tp, records in batches.items():
            received.extend((tp.partition, r.offset, r.key or b"", r.value or b"") for r in records)
    extra = await consumer.getmany(timeout_ms=1_000)
    for tp, records in extra.items():
        received.extend((tp.partition, r.offset, r.key or b"", r.value or b"") for r in records)


async def test_10k_json_messages_roundtrip_exactly_once_in_partition_order(
    kafka_bootstrap: str, topic_factory: Callable[..., Awaitable[str]]
) -> None:
    topic = await topic_factory(PARTITIONS)

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        enable_idempotence=True,  # broker-side dedupe + ordering even if a batch is retried
        linger_ms=5,
        request_timeout_ms=10_000,
    )
    await within(producer.start(), lambda: "starting the producer", kafka_bootstrap)
    try:
        sent = await within(
            produce_all(producer, topic), lambda: f"producing {N_MESSAGES} messages to {topic}", kafka_bootstrap
        )
    finally:
        await within(producer.stop(), lambda: "flushing and stopping the producer", kafka_bootstrap, 15.0)

    produced_order: dict[int, list[int]] = defaultdict(list)  # partition → seqs in send order
    for seq, partition, offset in sent:
        produced_order[partition].append(seq)
        assert offset == len(produced_order[partition]) - 1, f"partition {partition}: offsets not contiguous"
    assert len(produced_order) == PARTITIONS, f"keys landed on {sorted(produced_order)} only"

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"roundtrip-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=10_000,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    received: list[tuple[int, int, bytes, bytes]] = []
    await within(consumer.start(), lambda: "starting the consumer", kafka_bootstrap)
    try:
        await within(
            consume_all(consumer, received),
            lambda: f"consuming {topic} (got {len(received)} of {N_MESSAGES} messages)",
            kafka_bootstrap,
        )
        await within(consumer.commit(), lambda: "committing the consumer group's offsets", kafka_bootstrap)
        committed = {
            p: await within(
                consumer.committed(TopicPartition(topic, p)), lambda: "reading committed offsets", kafka_bootstrap
            )
            for p in range(PARTITIONS)
        }
    finally:
        await within(consumer.stop(), lambda: "stopping the consumer", kafka_bootstrap, 15.0)

    counts = Counter(key for _, _, key, _ in received)
    expected = {post(i)[0] for i in range(N_MESSAGES)}
    duplicates = sorted(k for k, c in counts.items() if c > 1)
    missing = sorted(expected - counts.keys())
    assert not duplicates, f"{len(duplicates)} keys delivered more than once, e.g. {duplicates[:5]}"
    assert not missing, f"{len(missing)} keys never arrived, e.g. {missing[:5]}"
    assert counts.keys() == expected

    consumed_order: dict[int, list[int]] = defaultdict(list)
    for partition, offset, key, value in received:
        doc: dict[str, Any] = orjson.loads(value)
        assert doc["id"].encode() == key, f"value/key mismatch at {partition}@{offset}"
        assert value == post(doc["seq"])[1], f"payload changed in transit at {partition}@{offset}"
        assert offset == len(consumed_order[partition]), f"partition {partition}: offset gap or reorder at {offset}"
        consumed_order[partition].append(doc["seq"])
    for partition, seqs in produced_order.items():
        assert consumed_order[partition] == seqs, f"partition {partition}: order differs from send order"

    assert committed == {p: len(produced_order[p]) for p in range(PARTITIONS)}
