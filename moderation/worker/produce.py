"""The produce edge: write a batch's records and sort the failures into the message's and the system's.

A record the broker refuses for what it *is* (too large, invalid) is the message's failure: its post
goes to the DLQ and the batch goes on. Anything else (no leader, timeouts, a broker that is gone) is
the system's failure: it propagates and the batch is consumed again after the restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import errors as kafka_errors

from moderation.pipeline.emit import OutputGroup, OutRecord

# send(record) → awaitable that resolves when the broker acknowledged the record
Send = Callable[[OutRecord], Awaitable[Awaitable[Any]]]

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


async def produce_groups(groups: Sequence[OutputGroup], send: Send) -> list[Refused]:
    """Produce every record and wait for every acknowledgement.

    Returns the groups with a record the broker refused for its content. The broker fails a whole
    request batch for one bad record, so refused records are retried one at a time first: only the
    culprit's group is reported, its innocent batch-mates are written. System errors raise.
    """
    failed: dict[int, tuple[OutRecord, BaseException]] = {}
    pending: list[tuple[int, OutRecord, Awaitable[Any]]] = []
    for index, group in enumerate(groups):
        for record in group.records:
            try:
                pending.append((index, record, await send(record)))
            except RECORD_ERRORS as exc:  # refused before it left the client
                failed.setdefault(index, (record, exc))
    results = await asyncio.gather(*(future for _, _, future in pending), return_exceptions=True)
    retry: list[tuple[int, OutRecord]] = []
    for (index, record, _), outcome in zip(pending, results, strict=True):
        if isinstance(outcome, RECORD_ERRORS):
            retry.append((index, record))
        elif isinstance(outcome, BaseException):
            raise outcome
    for index, record in retry:
        if index in failed:
            continue
        try:
            await (await send(record))
        except RECORD_ERRORS as exc:
            failed[index] = (record, exc)
    return [(groups[index], record, exc) for index, (record, exc) in sorted(failed.items())]
