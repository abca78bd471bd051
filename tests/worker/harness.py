"""Run real worker processes against the real broker, feed them posts, read what they wrote."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from moderation.core.errors import ModerationError
from moderation.devtools import launch

OUTPUTS = launch.OUTPUTS


@dataclass
class Setup:
    """One isolated deployment: its own topics, group and ports on the shared broker."""

    bootstrap: str
    input_topic: str
    model_dir: Path
    policy_file: Path
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def topic(self, output: str) -> str:
        return f"{self.input_topic}.{output}"

    def env(self) -> dict[str, str]:
        topics = {"posts": self.input_topic, **{o: self.topic(o) for o in OUTPUTS}}
        env = {
            **launch.topic_env(self.bootstrap, topics, f"{self.input_topic}-group"),
            "MODERATION_MODEL_DIR": str(self.model_dir),
            "MODERATION_POLICY_FILE": str(self.policy_file),
            "MODERATION_CACHE_DIR": str(self.workdir / "cache"),
            "MODERATION_SHUTDOWN_GRACE_S": "15",
        }
        env.update(self.extra_env)
        return env

    async def create_outputs(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await asyncio.wait_for(admin.start(), 30)
        try:
            await asyncio.wait_for(admin.create_topics([NewTopic(self.topic(o), 4, 1) for o in OUTPUTS]), 30)
        finally:
            await admin.close()


class WorkerProcess(launch.WorkerProcess):
    """A worker of one test deployment; its log lives in the test's tmp dir."""

    def __init__(self, setup: Setup, name: str, http_port: int | None = None) -> None:
        self.setup = setup
        super().__init__(name, setup.env(), setup.workdir / f"{name}.log", http_port=http_port)

    def wait_ready(self, timeout_s: float = 90) -> None:
        try:
            super().wait_ready(timeout_s)
        except ModerationError as exc:
            raise AssertionError(str(exc)) from None


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[tuple[bytes | None, bytes]],
    rate: float = 0,
    client_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """``client_kwargs``: TLS/SASL for a secure broker (``moderation.worker.security.client_kwargs``)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **(client_kwargs or {}))
    await asyncio.wait_for(producer.start(), 30)
    sent = 0
    start = time.perf_counter()
    try:
        futures = []
        for key, value in values:
            if rate:
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await producer.send(topic, value, key=key))
            sent += 1
        await asyncio.wait_for(asyncio.gather(*futures), 60)
    finally:
        await producer.stop()
    return sent


async def produce_transactions(
    bootstrap: str, topic: str, transactions: Iterable[tuple[bool, Iterable[tuple[bytes | None, bytes]]]]
) -> None:
    """Each ``(commit, records)`` in a transaction of its own, committed or aborted only once every record of
    it is on the broker: aborted records really are in the log, between committed ones."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"test-{topic}", enable_idempotence=True, acks="all"
    )
    await asyncio.wait_for(producer.start(), 30)
    try:
        for commit, records in transactions:
            await producer.begin_transaction()
            futures = [await producer.send(topic, value, key=key) for key, value in records]
            await asyncio.wait_for(asyncio.gather(*futures), 60)
            await (producer.commit_transaction() if commit else producer.abort_transaction())
    finally:
        await producer.stop()


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer without letting a dead broker hide what the caller found (aiokafka's fetcher
    can leak its own task's CancelledError out of ``stop()`` when the broker is gone)."""
    try:
        await asyncio.wait_for(consumer.stop(), 30)
    except (KafkaError, TimeoutError):
        pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # a real cancellation of the caller


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int,
    timeout_s: float = 120,
    idle_s: float = 3,
    strict: bool = False,
    client_kwargs: Mapping[str, Any] | None = None,
) -> list[Any]:
    """All records of ``topic`` from the beginning; waits until ``expect`` arrived (then ``idle_s`` more).

    ``strict``: fewer than ``expect`` records by the deadline is an error that names the broker, instead
    of a short list for the caller's assertion.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **(client_kwargs or {}),
    )
    await asyncio.wait_for(consumer.start(), 30)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            try:
                batch = await consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                raise ConnectionError(
                    f"{topic}: reading from {bootstrap} failed after {len(records)} of {expect} records ({exc}); "
                    "is the broker still up? (`moderation kafka status`)"
                ) from exc
            got = [r for rs in batch.values() for r in rs]
            records.extend(got)
            if got:
                quiet_since = time.monotonic()
            elif len(records) >= expect and time.monotonic() - quiet_since >= idle_s:
                break
    finally:
        await _stop_quietly(consumer)
    if strict and len(records) < expect:
        raise TimeoutError(
            f"{topic}: {len(records)} of {expect} records within {timeout_s:g} s from {bootstrap}; "
            "is the broker still up? (`moderation kafka status`)"
        )
    return records


def post(i: int, text: str, **extra: Any) -> tuple[bytes, bytes]:
    pid = f"p{i:05d}"
    return pid.encode(), orjson.dumps({"id": pid, "text": text, **extra})


CORPUS = [
    "the match last night was fantastic",
    "buy cheap stuff now click the link",
    "what a stupid idiot you are",
    "the election results were announced today",
    "new phone released with a better camera",
    "free crypto giveaway send now",
    "I love this song so much",
    "stocks fell sharply after the report",
]

MALFORMED = [
    b"{not json",
    b'{"id": "x", "text": 17}',
    b'{"id": "x", "text": "   "}',
    b'{"id": "x", "text": "caf\xc3\x28"}',
    b"[1, 2, 3]",
]


def mixed_stream(n: int, malformed_every: int = 20) -> tuple[list[tuple[bytes | None, bytes]], set[str], int]:
    """``n`` messages, one in ``malformed_every`` malformed; returns (messages, valid ids, bad count)."""
    messages: list[tuple[bytes | None, bytes]] = []
    valid: set[str] = set()
    bad = 0
    for i in range(n):
        if i % malformed_every == malformed_every - 1:
            messages.append((f"bad{i}".encode(), MALFORMED[bad % len(MALFORMED)]))
            bad += 1
        else:
            key, value = post(i, f"{CORPUS[i % len(CORPUS)]} #{i % 97}")
            messages.append((key, value))
            valid.add(key.decode())
    return messages, valid, bad
