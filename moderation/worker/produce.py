"""The produce edge: write a batch's records and sort the failures into the message's and the system's.

Records are written with aiokafka's batch API: they are grouped by topic-partition (the same murmur2
key hash as Kafka's default partitioner, computed once per post id for all of its records) and each
group goes out as one record batch. Per-record ``send()`` costs ~10 µs of Python each (a future, the
partitioner, the accumulator) and was the largest cost of a worker whose model is fast.

A record the broker refuses for what it *is* (too large, invalid) is the message's failure: its post
goes to the DLQ and the batch goes on. Anything else (no leader, timeouts, a broker that is gone) is
the system's failure: it propagates and the batch is consumed again after the restart.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.partitioner import murmur2

from moderation.pipeline.emit import OutputGroup, OutRecord

RECORD_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,  # client-side (max_request_size) or broker-side (message.max.bytes)
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidMessageError,
    kafka_errors.InvalidTimestampError,
)
"""Errors that belong to a record, not to the broker connection."""

Refused = tuple[OutputGroup, OutRecord, BaseException]
# (indices into the records handed to send_all, the broker batch's delivery future)
Shipment = tuple[list[int], Awaitable[Any]]


class Writer(Protocol):
    """Where records go: all of a batch at once, or one alone (to find which record a broker refused)."""

    async def send_all(self, records: Sequence[OutRecord]) -> list[Shipment]: ...

    async def send_one(self, record: OutRecord) -> Awaitable[Any]: ...


class BatchWriter:
    """:class:`Writer` over an :class:`AIOKafkaProducer`, one record batch per topic-partition."""

    METADATA_TTL_S = 30.0

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._partitions: dict[str, tuple[int, float]] = {}  # topic → (partition count, when learnt)
        self._round_robin = itertools.count()

    async def _partition_count(self, topic: str) -> int:
        known = self._partitions.get(topic)
        now = time.monotonic()
        if known is None or now - known[1] > self.METADATA_TTL_S:
            count = len(await self.producer.partitions_for(topic))
            self._partitions[topic] = known = (count, now)
        return known[0]

    async def send_all(self, records: Sequence[OutRecord]) -> list[Shipment]:
        by_tp: dict[tuple[str, int], list[int]] = {}
        hashes: dict[bytes, int] = {}
        counts: dict[str, int] = {}
        for index, record in enumerate(records):
            count = counts.get(record.topic)
            if count is None:
                count = counts[record.topic] = await self._partition_count(record.topic)
            if record.key is None:
                partition = next(self._round_robin) % count
            else:
                hashed = hashes.get(record.key)
                if hashed is None:
                    hashed = hashes[record.key] = murmur2(record.key) & 0x7FFFFFFF
                partition = hashed % count
            by_tp.setdefault((record.topic, partition), []).append(index)
        shipped = await asyncio.gather(*(self._ship(tp, indices, records) for tp, indices in by_tp.items()))
        return [shipment for per_tp in shipped for shipment in per_tp]

    async def _ship(self, tp: tuple[str, int], indices: list[int], records: Sequence[OutRecord]) -> list[Shipment]:
        """One topic-partition's records in as few broker batches as ``max_batch_size`` allows, in order."""
        topic, partition = tp
        out: list[Shipment] = []
        batch = self.producer.create_batch()
        members: list[int] = []
        for index in indices:
            record = records[index]
            if batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers) is None:
                out.append((members, await self.producer.send_batch(batch, topic, partition=partition)))
                batch, members = self.producer.create_batch(), []
                batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
            members.append(index)
        if members:
            out.append((members, await self.producer.send_batch(batch, topic, partition=partition)))
        return out

    async def send_one(self, record: OutRecord) -> Awaitable[Any]:
        return await self.producer.send(record.topic, record.value, key=record.key, headers=record.headers)


async def produce_groups(groups: Sequence[OutputGroup], writer: Writer) -> list[Refused]:
    """Produce every record and wait for every acknowledgement.

    Returns the groups with a record the broker refused for its content. The broker fails a whole
    record batch for one bad record, so the records of a refused batch are retried one at a time:
    only the culprit's group is reported, its innocent batch-mates are written. System errors raise.
    """
    owner: list[int] = []
    records: list[OutRecord] = []
    for index, group in enumerate(groups):
        for record in group.records:
            owner.append(index)
            records.append(record)
    shipments = await writer.send_all(records)
    outcomes = await asyncio.gather(*(future for _, future in shipments), return_exceptions=True)
    retry: list[int] = []
    for (members, _), outcome in zip(shipments, outcomes, strict=True):
        if isinstance(outcome, RECORD_ERRORS):
            retry.extend(members)
        elif isinstance(outcome, BaseException):
            raise outcome
    failed: dict[int, tuple[OutRecord, BaseException]] = {}
    for position in sorted(retry):
        owner_index = owner[position]
        if owner_index in failed:
            continue
        try:
            await (await writer.send_one(records[position]))
        except RECORD_ERRORS as exc:
            failed[owner_index] = (records[position], exc)
    return [(groups[index], record, exc) for index, (record, exc) in sorted(failed.items())]
