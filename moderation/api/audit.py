"""Stored decisions of the API (``MODERATION_API_AUDIT``): one audit trail for both doors.

A request that allows storing (Perspective's ``doNotStore`` false or absent) is answered first; then, off
the request's path, its post — the exact bytes the pipeline decided — goes to ``MODERATION_API_POSTS_TOPIC``
and its decision record, whose ``origin`` names that record, to the decisions topic the workers write. So
``moderation replay`` re-decides API decisions like the stream's. Best effort by design: the client already
has its answer; a write the broker refuses is counted (``moderation_api_audit_records_total{outcome}``) and
logged, and a full write queue drops (counted) instead of slowing the API down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from moderation.api.metrics import ApiMetrics
from moderation.pipeline.batch import Moderated
from moderation.pipeline.emit import decision_document
from moderation.pipeline.records import Origin

MAX_PENDING = 10_000
CHUNK = 512


class AuditWriter:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        posts_topic: str,
        decisions_topic: str,
        model: dict[str, Any],
        server_id: str,
        metrics: ApiMetrics,
        log: Any,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.producer = producer
        self.posts_topic, self.decisions_topic = posts_topic, decisions_topic
        self.model, self.server_id = model, server_id
        self.metrics, self.log = metrics, log
        self.queue: asyncio.Queue[Moderated] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self._dropped_logged = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="api-audit")

    def offer(self, item: Moderated) -> bool:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.audit.labels("dropped").inc()
            if not self._dropped_logged:  # once per episode, not once per request
                self._dropped_logged = True
                self.log.warning("audit_dropped", pending=self.queue.qsize(), hint="the broker is slow or gone")
            return False
        self._dropped_logged = False
        return True

    async def _run(self) -> None:
        while True:
            chunk = [await self.queue.get()]
            while len(chunk) < CHUNK and not self.queue.empty():
                chunk.append(self.queue.get_nowait())
            try:
                await self._write(chunk)
            finally:
                for _ in chunk:
                    self.queue.task_done()

    async def _write(self, chunk: list[Moderated]) -> None:
        sent = await asyncio.gather(
            *(self._send(self.posts_topic, m.message.value or b"", m.post.id.encode(), []) for m in chunk),
            return_exceptions=True,
        )
        decisions = []
        for item, meta in zip(chunk, sent, strict=True):
            if isinstance(meta, BaseException):
                self._failed(meta)
                continue
            origin = Origin(self.posts_topic, meta.partition, meta.offset, meta.timestamp)
            stored = dataclasses.replace(item, message=dataclasses.replace(item.message, origin=origin))
            doc = decision_document(stored, self.model, self.server_id)
            headers = [("action", item.decision.action.encode())]
            decisions.append(self._send(self.decisions_topic, orjson.dumps(doc), item.post.id.encode(), headers))
        for outcome in await asyncio.gather(*decisions, return_exceptions=True):
            if isinstance(outcome, BaseException):
                self._failed(outcome)
            else:
                self.metrics.audit.labels("written").inc()

    async def _send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        future = await self.producer.send(topic, value, key=key, headers=headers)
        return await future

    def _failed(self, exc: BaseException) -> None:
        self.metrics.audit.labels("failed").inc()
        self.log.warning("audit_write_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    async def close(self, timeout_s: float) -> None:
        """Write what is queued (within ``timeout_s``), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
