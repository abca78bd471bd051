"""One micro-batch, start to finish, and the rules that make it safe.

The order is the whole point: score (off the event loop) → produce every output → wait until the
broker acknowledged each one → only then let the caller ack the input offsets. A crash anywhere
before the last step means the batch is consumed again (at-least-once, outputs keyed by post id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from moderation.core.errors import ModerationError, OutputError
from moderation.core.logs import get_logger, logged_since_last_call
from moderation.pipeline.batch import BatchResult, Message, Pipeline
from moderation.pipeline.emit import OutputGroup, Topics, dlq_record, plan_outputs
from moderation.worker.http import Readiness
from moderation.worker.metrics import WorkerMetrics
from moderation.worker.produce import Refused, Writer, produce_groups
from moderation.worker.summary import Summary


class BatchTimeout(ModerationError):
    """A batch outlasted MODERATION_BATCH_TIMEOUT_S; the worker restarts rather than stall the group."""


class DeadLetterRefused(ModerationError):
    """The DLQ topic refused even a bare DLQ record: a system problem (topic config, ACLs), not the message's."""


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
        max_record_bytes: int = 1_000_000,
    ) -> None:
        self.pipeline = pipeline
        metrics.cache_entries.set_function(lambda: len(pipeline.cache))
        self.topics = topics
        self.metrics = metrics
        self.model_info = model_info
        self.worker_id = worker_id
        self.batch_timeout_s = batch_timeout_s
        self.max_record_bytes = max_record_bytes
        self.batch_started: float | None = None  # monotonic start of the batch in flight
        self.executor = ThreadPoolExecutor(inference_threads, thread_name_prefix="ort")
        self.log = get_logger("moderation.worker", worker_id=worker_id)
        self.batches = 0
        self.summary = Summary()
        self.readiness = readiness or Readiness()
        self.idle = asyncio.Event()
        self.idle.set()

    async def handle(self, messages: Sequence[Message], writer: Writer) -> BatchResult:
        """Score, produce and confirm one batch; raises (without acking) on any failure."""
        self.idle.clear()
        self.metrics.in_flight.set(len(messages))
        self.batches += 1
        self.batch_started = time.monotonic()
        try:
            return await asyncio.wait_for(self._handle(messages, writer), self.batch_timeout_s)
        except TimeoutError:
            raise BatchTimeout(
                f"batch of {len(messages)} posts took longer than {self.batch_timeout_s}s "
                "(MODERATION_BATCH_TIMEOUT_S); restarting so the partitions are re-assigned"
            ) from None
        finally:
            self.metrics.in_flight.set(0)
            self.batch_started = None
            self.idle.set()

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds the batch in flight has run past its timeout (0 when none is late): a batch that
        outlives its own timeout means the event loop or the executor is stuck."""
        if self.batch_started is None:
            return 0.0
        return max(0.0, (now or time.monotonic()) - self.batch_started - self.batch_timeout_s)

    async def _handle(self, messages: Sequence[Message], writer: Writer) -> BatchResult:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.executor, self.pipeline.run, messages)
        t0 = time.perf_counter()
        groups = plan_outputs(result, self.topics, self.model_info, self.worker_id, self.max_record_bytes)
        refused = await produce_groups(groups, writer)
        if refused:
            await self._dead_letter_refused(result, refused, writer)
        done = time.perf_counter()
        produce_s = done - t0
        self.metrics.observe_batch(result, produce_s)
        self.summary.add(result, done - started)
        if self.log.isEnabledFor(logging.DEBUG):  # per batch = per post at low rates: info gets the summary
            self._log_batch(messages, result, produce_s)
        return result

    def _log_batch(self, messages: Sequence[Message], result: BatchResult, produce_s: float) -> None:
        actions: dict[str, int] = {}
        for item in result.moderated:
            actions[item.decision.action] = actions.get(item.decision.action, 0) + 1
        self.log.debug(
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

    def log_summary(self, **extra: Any) -> None:
        """The info line of the interval since the last one (see :mod:`moderation.worker.summary`)."""
        self.log.info("summary", **self.summary.take(logged_since_last_call()), **extra)

    async def _dead_letter_refused(self, result: BatchResult, refused: list[Refused], writer: Writer) -> None:
        """Posts whose records the broker refused go to the DLQ; a refused DLQ copy is re-sent bare
        (headers with the original's size and hash, no payload). If even that is refused, the batch fails."""
        fallback: list[OutputGroup] = []
        for group, record, exc in refused:
            reason = f"{type(exc).__name__}: {exc}"
            if group.rejected is None and group.moderated is not None:
                rejected = result.dead_letter(
                    group.moderated,
                    OutputError(
                        f"the broker refused the {record.topic} record ({reason}); check that topic's "
                        "max.message.bytes against MODERATION_MAX_RECORD_BYTES"
                    ),
                )
                dlq = dlq_record(rejected, self.topics, self.worker_id, self.max_record_bytes)
            elif group.rejected is not None:
                rejected = group.rejected
                dlq = dlq_record(rejected, self.topics, self.worker_id, max_record_bytes=0)
            else:  # pragma: no cover - every group is decided or rejected
                raise AssertionError(group)
            self.log.warning(
                "output_refused", topic=record.topic, error=reason, origin=str(group.message.origin.offset)
            )
            fallback.append(OutputGroup(group.message, [dlq], rejected))
        still = await produce_groups(fallback, writer)
        if still:
            _, record, exc = still[0]
            raise DeadLetterRefused(
                f"the DLQ topic {record.topic} refused {len(still)} record(s) even without payload "
                f"({type(exc).__name__}: {exc}); check its configuration and ACLs"
            )

    @property
    def draining(self) -> bool:
        return self.readiness.draining

    def start_draining(self) -> None:
        """Stop taking new batches (and report not-ready) while the one in flight finishes."""
        self.readiness.draining = True

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
