"""The input edge: posts come off Kafka a batch at a time, offsets go back after the batch's outputs.

faust's stream hands events to an agent one at a time through several layers (a fetcher thread,
queues, per-event callbacks and acks); with a fast model that path was the largest cost of a worker
process (BENCHMARKS.md, "the hot path without the model"). Here aiokafka's ``getmany`` returns up to
``MODERATION_MAX_BATCH`` records at once — already a micro-batch — and the rules that make it safe are
kept explicit:

- offsets are committed only after :meth:`ModerationService.handle` returned, i.e. after every output
  record of the batch was acknowledged; commits run off the batch path, in order, one at a time;
- before partitions move in a rebalance, the batch in flight finishes and its offsets are committed;
- a batch from a worker that is draining (SIGTERM) is left uncommitted and is consumed again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from moderation.core.settings import Settings
from moderation.pipeline.batch import Message
from moderation.pipeline.records import Origin
from moderation.worker.produce import Writer
from moderation.worker.security import client_kwargs
from moderation.worker.service import BatchTimeout, ModerationService


def make_consumer(settings: Settings, group_instance_id: str | None) -> AIOKafkaConsumer:
    """The group member: static membership, manual commits, batches of at most ``max_batch`` records."""
    return AIOKafkaConsumer(
        settings.input_topic,
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"moderation-worker-{settings.group_id}",
        group_id=settings.group_id,
        group_instance_id=group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.isolation_level,  # posts of aborted transactions are never decided
        max_poll_records=settings.max_batch,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=min(3_000, settings.session_timeout_ms // 5),
        metadata_max_age_ms=settings.metadata_max_age_ms,
        # room for one input message at the limit plus framing, so a huge post never stalls its partition
        max_partition_fetch_bytes=max(4 * 1024 * 1024, settings.max_message_bytes + 65_536),
        **client_kwargs(settings),
    )


def to_messages(batch: dict[TopicPartition, list[Any]], received_ms: int) -> list[Message]:
    return [
        Message(
            value=record.value,
            key=record.key,
            origin=Origin(record.topic, record.partition, record.offset, record.timestamp),
            received_ms=received_ms,
        )
        for records in batch.values()
        for record in records
    ]


class OffsetCommitter:
    """Commits the next offset to read per partition, right after each batch: a crash re-decides at most
    the batches in flight. One commit at a time and in order; offsets requested during a commit are
    merged into the next one. A commit that fails is logged and retried with the next (redone work is
    keyed by post id, so it is harmless, only wasted)."""

    def __init__(self, consumer: AIOKafkaConsumer, log: Any) -> None:
        self.consumer = consumer
        self.log = log
        self.pending: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self._wanted = asyncio.Event()
        self._lock = asyncio.Lock()

    def request(self, offsets: dict[TopicPartition, int]) -> None:
        self.pending.update(offsets)
        self._wanted.set()

    async def keep_up(self) -> None:
        """Backpressure: when a commit is still under way and newer offsets already wait for the next one,
        wait for it before taking another batch. Without it a slow commit lets decided-but-uncommitted
        posts (what a crash re-decides) pile up to many batches; with it they stay within the batch being
        committed, the one waiting and the one in flight."""
        if self._lock.locked() and self.pending:
            async with self._lock:
                pass

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self.pending:
                return
            offsets, self.pending = self.pending, {}
            try:
                await self.consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
            except (KafkaError, AssertionError) as exc:  # aiokafka asserts on partitions no longer assigned
                held = self.consumer.assignment()
                for tp, offset in offsets.items():  # keep what is still ours for the next try
                    if tp in held and offset > self.pending.get(tp, -1):
                        self.pending[tp] = offset
                self.log.warning("commit_failed", error=str(exc) or type(exc).__name__, error_type=type(exc).__name__)
            else:
                self.committed.update(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.pending.pop(tp, None)
            self.committed.pop(tp, None)


class SettleBeforeRebalance(ConsumerRebalanceListener):
    """Partitions leave only after the batch in flight is done and its offsets are committed."""

    def __init__(self, service: ModerationService, committer: OffsetCommitter, log: Any) -> None:
        self.service = service
        self.committer = committer
        self.log = log

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.service.idle.wait()
        await self.committer.flush()
        self.committer.forget(revoked)
        if revoked:
            self.log.info("partitions_revoked", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.log.info("partitions_assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


async def consume(
    consumer: AIOKafkaConsumer,
    committer: OffsetCommitter,
    service: ModerationService,
    writer: Writer,
    max_batch: int,
    max_wait_ms: int,
) -> None:
    """Take a batch, moderate it, hand its offsets to the committer; forever (cancelled at shutdown).

    A system failure inside :meth:`ModerationService.handle` propagates (nothing of the batch is
    committed, so it is consumed again after the restart)."""
    while True:
        batch = await consumer.getmany(timeout_ms=max_wait_ms, max_records=max_batch)
        if not batch:
            continue
        if service.draining:
            await asyncio.sleep(0.05)  # left uncommitted: consumed again after the restart
            continue
        await service.handle(to_messages(batch, time.time_ns() // 1_000_000), writer)
        committer.request({tp: records[-1].offset + 1 for tp, records in batch.items()})
        try:  # the backpressure wait is part of the batch's time bound: a hung commit must fail liveness too
            await asyncio.wait_for(committer.keep_up(), service.batch_timeout_s)
        except TimeoutError:
            raise BatchTimeout(
                f"the commit before the next batch took longer than {service.batch_timeout_s}s "
                "(MODERATION_BATCH_TIMEOUT_S); restarting so the partitions are re-assigned"
            ) from None
