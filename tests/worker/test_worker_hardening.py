"""Crafted input, compressed input and refused output on the real broker: the worker never stops.

Each case here crash-looped the worker before (issue 9): a poison message made it exit on every
restart and blocked its partition. Now each one is dead-lettered once with a reason (or decided, when
it is a valid post) and every post after it is decided by the same, still running, process.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import confluent_kafka
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.worker.harness import Setup, WorkerProcess, post, produce, read_topic

CODECS = ("gzip", "snappy", "lz4", "zstd")


def nested_context_post(pid: str, depth: int) -> bytes:
    inner = b'{"a":' * (depth - 1) + b"1" + b"}" * (depth - 1)
    return b'{"id": "' + pid.encode() + b'", "text": "nested context", "context": {"k":' + inner + b"}}"


def sized(pid: str, size: int) -> bytes:
    """A syntactically valid post padded (in an ignored field) to exactly ``size`` bytes."""
    head = b'{"id": "' + pid.encode() + b'", "text": "padding", "pad": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def with_created_at(pid: str, stamp: str) -> bytes:
    return orjson.dumps({"id": pid, "text": "a", "created_at": stamp})


def poison_corpus() -> list[tuple[str, bytes | None, set[str]]]:
    """(key, value, expected outcome: {"dlq"} or {"decision"}, or either when both are defensible)."""
    big_context = orjson.dumps({"id": "q-ctx", "text": "short post, huge context", "context": {"blob": "x" * 980_000}})
    return [
        ("q-nested", nested_context_post("q-nested", 300), {"dlq"}),
        ("q-year1", with_created_at("q-year1", "0001-01-01T00:00:00+01:00"), {"dlq"}),
        ("q-year9999", with_created_at("q-year9999", "9999-12-31T23:59:59-01:00"), {"dlq"}),
        ("q-under-1mb", sized("q-under-1mb", 999_990), {"decision"}),
        ("q-over-1mb", sized("q-over-1mb", 1_000_100), {"dlq"}),
        ("q-ctx", big_context, {"decision"}),
        ("q-tombstone", None, {"dlq"}),
        ("q-bom", b'\xef\xbb\xbf{"id": "q-bom", "text": "a"}', {"dlq"}),
        ("q-surrogate", b'{"id": "q-surrogate", "text": "\\ud800"}', {"dlq"}),
        ("q-badutf8", b'{"id": "q-badutf8", "text": "caf\xc3\x28"}', {"dlq"}),
        ("q-author", orjson.dumps({"id": "q-author", "text": "a", "author_id": "z" * 500_000}), {"dlq"}),
        ("q-deep-array", b"[" * 5000 + b"]" * 5000, {"dlq"}),
        ("q-nan", b'{"id": "q-nan", "text": "a", "created_at": NaN}', {"dlq"}),
    ]


async def test_poison_messages_are_dead_lettered_and_the_worker_keeps_going(deployment: Setup) -> None:
    corpus = poison_corpus()
    messages: list[tuple[bytes | None, bytes | None]] = []
    valid: set[str] = set()
    for i, (key, value, _) in enumerate(corpus):
        before, after = post(2 * i, "the match last night was fantastic"), post(2 * i + 1, "I love this song")
        messages += [before, (key.encode(), value), after]
        valid |= {before[0].decode(), after[0].decode()}
    worker = WorkerProcess(deployment, "w-poison")
    try:
        await asyncio.to_thread(worker.wait_ready)
        # one partition key for everything: a poison message that stopped the worker would block the rest
        await produce(
            deployment.bootstrap,
            deployment.input_topic,
            [(b"same-partition", v) if k else (k, v) for k, v in messages],  # type: ignore[misc]
            client_kwargs={"max_request_size": 2_000_000},
        )
        expected_dlq = sum(1 for _, _, want in corpus if want == {"dlq"})
        expected_decisions = len(valid) + len(corpus) - expected_dlq
        decisions = await read_topic(deployment.bootstrap, deployment.topic("decisions"), expect=expected_decisions)
        dlq = await read_topic(deployment.bootstrap, deployment.topic("dlq"), expect=expected_dlq)
        routed = await read_topic(deployment.bootstrap, deployment.topic("allowed"), expect=0, idle_s=1)
        routed += await read_topic(deployment.bootstrap, deployment.topic("review"), expect=0, idle_s=1)
        routed += await read_topic(deployment.bootstrap, deployment.topic("blocked"), expect=0, idle_s=1)
        assert worker.proc.poll() is None, "the worker exited:\n" + worker.log_tail()
    finally:
        code = await asyncio.to_thread(worker.terminate)
    assert code == 0, worker.log_tail()
    starts = [line for line in worker.log_lines() if b'"event": "starting"' in line or b'"event":"starting"' in line]
    assert len(starts) == 1  # one process from start to end, never restarted

    decided = Counter(orjson.loads(r.value)["post_id"] for r in decisions)
    assert valid <= set(decided), f"valid posts not decided: {sorted(valid - set(decided))}"
    assert max(decided.values()) == 1
    dead = Counter(dict(r.headers)["origin.offset"] for r in dlq)
    assert max(dead.values()) == 1  # each poison message dead-lettered once
    by_id = {orjson.loads(r.value)["post_id"] for r in decisions}
    for key, _, want in corpus:
        got = {"decision"} if key in by_id else set()
        assert got or want == {"dlq"}, f"{key}: expected {want}, got neither decision nor DLQ"
        if want == {"decision"}:
            assert key in by_id, f"{key} should be decided"
        else:
            assert key not in by_id, f"{key} should be dead-lettered, not decided"
    assert len(dlq) == expected_dlq

    for record in dlq:  # bounded, explained, original recoverable
        headers = dict(record.headers)
        assert headers["error.class"] and headers["error.message"] and len(record.value or b"") < 1_000_000
        if record.value is None:
            assert headers["error.class"] == b"invalid_json" and b"tombstone" in headers["error.message"]
    oversized = [r for r in dlq if dict(r.headers).get("payload.truncated") == b"true"]
    assert len(oversized) == 1 and dict(oversized[0].headers)["original.size"] == b"1000100"

    docs = {orjson.loads(r.value)["post_id"]: orjson.loads(r.value) for r in routed}
    assert docs["q-ctx"]["post"]["context"] is None
    assert docs["q-ctx"]["post"]["context_omitted"]["bytes"] > 980_000
    assert all(len(r.value) < 200_000 for r in routed)


async def _set_topic_config(bootstrap: str, topics: list[str], config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), 30)
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t, configs=config) for t in topics])
    finally:
        await admin.close()


async def test_output_the_broker_refuses_sends_that_post_to_the_dlq(deployment: Setup) -> None:
    # the action topics accept at most 20 kB: a 30k-character post cannot be written there
    await _set_topic_config(
        deployment.bootstrap,
        [deployment.topic(t) for t in ("allowed", "review", "blocked", "llm-review")],
        {"max.message.bytes": "20000"},
    )
    deployment.extra_env["MODERATION_MAX_TEXT_CHARS"] = "40000"
    messages = [post(i, f"a perfectly ordinary post number {i}") for i in range(40)]
    messages.insert(20, post(999, "long " * 6_000))
    worker = WorkerProcess(deployment, "w-refused")
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(deployment.bootstrap, deployment.input_topic, [(b"one-key", v) for _, v in messages])
        dlq = await read_topic(deployment.bootstrap, deployment.topic("dlq"), expect=1)
        routed = []
        for name in ("allowed", "review", "blocked"):
            routed += await read_topic(deployment.bootstrap, deployment.topic(name), expect=0, idle_s=1)
        assert worker.proc.poll() is None, worker.log_tail()
    finally:
        assert await asyncio.to_thread(worker.terminate) == 0, worker.log_tail()
    (record,) = dlq
    headers = dict(record.headers)
    assert headers["error.class"] == b"output_unwritable", headers
    assert b"max.message.bytes" in headers["error.message"]
    assert orjson.loads(record.value)["id"] == "p00999"  # the original input
    ids = {orjson.loads(r.value)["post_id"] for r in routed}
    assert ids == {f"p{i:05d}" for i in range(40)}  # its batch-mates were all written


@pytest.mark.parametrize("client", ["aiokafka", "librdkafka"])
async def test_every_compression_codec_is_consumed(deployment: Setup, client: str) -> None:
    per_codec = 50
    expected: set[str] = set()
    worker = WorkerProcess(deployment, f"w-codecs-{client}")
    try:
        await asyncio.to_thread(worker.wait_ready)
        for n, codec in enumerate(CODECS):
            batch = [post(n * 1000 + i, f"{codec} compressed post {i}") for i in range(per_codec)]
            expected |= {k.decode() for k, _ in batch}
            if client == "aiokafka":
                await produce(
                    deployment.bootstrap, deployment.input_topic, batch, client_kwargs={"compression_type": codec}
                )
            else:
                await asyncio.to_thread(_produce_librdkafka, deployment.bootstrap, deployment.input_topic, batch, codec)
        decisions = await read_topic(deployment.bootstrap, deployment.topic("decisions"), expect=len(expected))
        assert worker.proc.poll() is None, worker.log_tail()
    finally:
        assert await asyncio.to_thread(worker.terminate) == 0, worker.log_tail()
    counts = Counter(r.key.decode() for r in decisions)
    assert set(counts) == expected and max(counts.values()) == 1


def _produce_librdkafka(bootstrap: str, topic: str, batch: list[tuple[bytes, bytes]], codec: str) -> None:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "compression.codec": codec, "linger.ms": 20, "acks": "all"}
    )
    for key, value in batch:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0
