"""Dynamic batching across concurrent requests: size or deadline, as the worker's micro-batches.

Each request puts its one post in a bounded queue and awaits its outcome. One task takes batches off the
queue — as soon as ``max_batch`` posts wait, or ``max_wait_s`` after the oldest one arrived — and runs the
pipeline on them in a thread (ONNX Runtime releases the GIL, so the event loop keeps accepting requests
while a batch scores; those requests form the next batch). A post's scores do not depend on its
batchmates (per-row int8, see the README), so batching changes latency and throughput, never a decision.

A full queue refuses at once (:class:`Overloaded` → 503 with Retry-After): the wait of an admitted request
is bounded by about ``max_queue`` / throughput instead of growing with the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from moderation.core.errors import ModerationError
from moderation.pipeline.batch import BatchResult, Message, Moderated, Rejected


class Overloaded(ModerationError):
    """The queue is full (or the server is draining): answer 503 now rather than wait without bound."""


class ScoringFailed(ModerationError):
    """The pipeline raised for a whole batch (the model, not a post): a server error for its requests."""


@dataclass(slots=True)
class _Pending:
    message: Message
    future: asyncio.Future[Moderated | Rejected]
    enqueued: float


BatchObserver = Callable[[BatchResult, Sequence[float], float], None]  # result, queue waits (s), batch seconds


class Batcher:
    def __init__(
        self,
        run: Callable[[Sequence[Message]], BatchResult],
        executor: Executor,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        observe: BatchObserver | None = None,
    ) -> None:
        self.run, self.executor = run, executor
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.observe = observe
        self.queue: deque[_Pending] = deque()
        self.busy = False
        self.closed = False
        self.batches = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="api-batcher")

    @property
    def depth(self) -> int:
        return len(self.queue)

    async def submit(self, message: Message) -> Moderated | Rejected:
        """The post's outcome; raises :class:`Overloaded` at once when the queue is full or closed."""
        if self.closed:
            raise Overloaded("the server is shutting down")
        if len(self.queue) >= self.max_queue:
            raise Overloaded(f"{len(self.queue)} requests are waiting to be scored (MODERATION_API_MAX_QUEUE)")
        future: asyncio.Future[Moderated | Rejected] = asyncio.get_running_loop().create_future()
        self.queue.append(_Pending(message, future, time.monotonic()))
        self._wake.set()
        return await future

    async def _fill(self) -> None:
        """Wait until a batch is full or the oldest waiting request's deadline has passed."""
        deadline = self.queue[0].enqueued + self.max_wait_s
        while len(self.queue) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._fill()
            take = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
            started = time.monotonic()
            self.busy = True
            try:
                result = await loop.run_in_executor(self.executor, self.run, [p.message for p in take])
            except Exception as exc:  # the model or the pipeline failed: every request of the batch gets a 500
                failure = ScoringFailed(f"{type(exc).__name__}: {exc}")
                for p in take:
                    if not p.future.done():
                        p.future.set_exception(failure)
                continue
            finally:
                self.busy = False
            self.batches += 1
            outcomes: dict[int, Moderated | Rejected] = {id(m.message): m for m in result.moderated}
            outcomes.update((id(r.message), r) for r in result.rejected)
            for p in take:
                if p.future.done():
                    continue
                outcome = outcomes.get(id(p.message))
                if outcome is None:  # pragma: no cover - the pipeline answers every message
                    p.future.set_exception(ScoringFailed("the pipeline returned no outcome for a post"))
                else:
                    p.future.set_result(outcome)
            if self.observe is not None:
                self.observe(result, [started - p.enqueued for p in take], time.monotonic() - started)

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests, let the waiting ones be scored; True when none is left within ``timeout_s``."""
        self.closed = True
        deadline = time.monotonic() + timeout_s
        while (self.queue or self.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not (self.queue or self.busy)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for p in self.queue:
            if not p.future.done():
                p.future.set_exception(Overloaded("the server stopped"))
        self.queue.clear()
