"""One micro-batch, start to finish, and the rules that make it safe.

The order is the whole point: score (off the event loop) → produce every output → wait until the
broker acknowledged each one → only then let the caller ack the input offsets. A crash anywhere
before the last step means the batch is consumed again (at-least-once, outputs keyed by post id).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from moderation.emit import OutRecord, Topics, records_for
from moderation.errors import ModerationError
from moderation.logs import get_logger
from moderation.metrics import WorkerMetrics
from moderation.pipeline import BatchResult, Message, Pipeline
from moderation.worker.http import Readiness

# send(record) → awaitable that resolves when the broker acknowledged the record
Send = Callable[[OutRecord], Awaitable[Awaitable[Any]]]


class BatchTimeout(ModerationError):
    """A batch outlasted MODERATION_BATCH_TIMEOUT_S; the worker restarts rather than stall the group."""


class ModerationService:
    def __init__(
        self,
        pipeline: Pipeline,
        topics: Topics,
        metrics: WorkerMetrics,
        model_info: dict[str, Any],
        *,
        worker_id: str,
        batch_timeout_s: float,
        inference_threads: int = 1,
        readiness: Readiness | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.topics = topics
        self.metrics = metrics
        self.model_info = model_info
        self.worker_id = worker_id
        self.batch_timeout_s = batch_timeout_s
        self.executor = ThreadPoolExecutor(inference_threads, thread_name_prefix="ort")
        self.log = get_logger("moderation.worker", worker_id=worker_id)
        self.batches = 0
        self.readiness = readiness or Readiness()
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle(self, messages: Sequence[Message], send: Send) -> BatchResult:
        """Score, produce and confirm one batch; raises (without acking) on any failure."""
        self.idle.clear()
        self.metrics.in_flight.set(len(messages))
        self.batches += 1
        try:
            return await asyncio.wait_for(self._handle(messages, send), self.batch_timeout_s)
        except TimeoutError:
            raise BatchTimeout(
                f"batch of {len(messages)} posts took longer than {self.batch_timeout_s}s "
                "(MODERATION_BATCH_TIMEOUT_S); restarting so the partitions are re-assigned"
            ) from None
        finally:
            self.metrics.in_flight.set(0)
            self.idle.set()

    async def _handle(self, messages: Sequence[Message], send: Send) -> BatchResult:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.executor, self.pipeline.run, messages)
        t0 = time.perf_counter()
        records = records_for(result, self.topics, self.model_info, self.worker_id)
        pending = [await send(record) for record in records]
        await asyncio.gather(*pending)
        produce_s = time.perf_counter() - t0
        self.metrics.observe_batch(result, produce_s)
        actions: dict[str, int] = {}
        for item in result.moderated:
            actions[item.decision.action] = actions.get(item.decision.action, 0) + 1
        self.log.info(
            "batch",
            batch_id=self.batches,
            size=len(messages),
            dlq=len(result.rejected),
            cache_hits=result.cache_hits,
            scored=result.scored,
            actions=actions,
            escalated=sum(1 for m in result.moderated if m.decision.escalate),
            timings_ms={k: round(v * 1000, 2) for k, v in {**result.timings, "produce": produce_s}.items()},
            partitions=sorted({m.origin.partition for m in messages}),
        )
        return result

    @property
    def draining(self) -> bool:
        return self.readiness.draining

    def start_draining(self) -> None:
        """Stop taking new batches (and report not-ready) while the one in flight finishes."""
        self.readiness.draining = True

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
