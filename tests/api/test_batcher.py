"""Dynamic batching (moderation.api.batcher): size or deadline, a bounded queue, failures per batch.

The pipeline is replaced by a recorder here (what is tested is the batching); tests/api/test_server.py runs
the real pipeline with a real model behind the same batcher.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from moderation.api.batcher import Batcher, Overloaded, ScoringFailed
from moderation.core.errors import EmptyText
from moderation.pipeline.batch import BatchResult, Message, Moderated, Rejected
from moderation.pipeline.records import Decision, Origin, Post


class Recorder:
    """Decides every post 'allow' (an empty text is rejected), remembering the batch sizes; can be held."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __call__(self, messages: Sequence[Message]) -> BatchResult:
        self.gate.wait(10)
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        self.sizes.append(len(messages))
        result = BatchResult()
        for m in messages:
            text = (m.value or b"").decode()
            if not text:
                result.rejected.append(Rejected(m, EmptyText("empty")))
                continue
            post = Post(id=text, text=text)
            result.moderated.append(Moderated(post, Decision(text, "allow", {}, (), (), (), 1.0, "v"), m, 0))
        return result


def message(text: str) -> Message:
    return Message(text.encode(), Origin("api", 0, 0))


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1)


async def test_concurrent_requests_share_batches_and_each_gets_its_own_outcome(executor: ThreadPoolExecutor) -> None:
    run = Recorder(delay_s=0.02)
    batcher = Batcher(run, executor, max_batch=8, max_wait_s=0.005, max_queue=100)
    batcher.start()
    outcomes = await asyncio.gather(*(batcher.submit(message(f"post {i}")) for i in range(40)))
    assert [o.post.id for o in outcomes if isinstance(o, Moderated)] == [f"post {i}" for i in range(40)]
    assert sum(run.sizes) == 40 and max(run.sizes) == 8 and len(run.sizes) <= 6
    await batcher.stop()


async def test_a_lone_request_waits_at_most_the_deadline(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = Batcher(run, executor, max_batch=64, max_wait_s=0.05, max_queue=100)
    batcher.start()
    started = time.perf_counter()
    await batcher.submit(message("alone"))
    took = time.perf_counter() - started
    assert run.sizes == [1] and 0.045 <= took < 1.0
    await batcher.stop()


async def test_a_full_batch_does_not_wait_for_the_deadline(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = Batcher(run, executor, max_batch=4, max_wait_s=5.0, max_queue=100)
    batcher.start()
    started = time.perf_counter()
    await asyncio.gather(*(batcher.submit(message(f"p{i}")) for i in range(4)))
    assert run.sizes == [4] and time.perf_counter() - started < 2.0
    await batcher.stop()


async def test_a_full_queue_refuses_at_once(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    run.gate.clear()  # the scorer is stuck: nothing leaves the queue
    batcher = Batcher(run, executor, max_batch=2, max_wait_s=0.0, max_queue=3)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(message("in flight")))
    await asyncio.sleep(0.05)  # taken into a batch: the queue is empty again
    queued = [asyncio.ensure_future(batcher.submit(message(f"q{i}"))) for i in range(3)]
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    with pytest.raises(Overloaded, match="3 requests are waiting"):
        await batcher.submit(message("one too many"))
    assert time.perf_counter() - started < 0.01
    run.gate.set()
    assert all(isinstance(o, Moderated) for o in await asyncio.gather(first, *queued))
    await batcher.stop()


async def test_rejected_posts_and_failed_batches_reach_their_requests(executor: ThreadPoolExecutor) -> None:
    run = Recorder()
    batcher = Batcher(run, executor, max_batch=8, max_wait_s=0.01, max_queue=100)
    batcher.start()
    good, bad = await asyncio.gather(batcher.submit(message("ok")), batcher.submit(message("")))
    assert isinstance(good, Moderated) and isinstance(bad, Rejected) and bad.error.code == "empty_text"
    run.fail = True
    with pytest.raises(ScoringFailed, match="model exploded"):
        await batcher.submit(message("boom"))
    run.fail = False
    assert isinstance(await batcher.submit(message("after")), Moderated)  # the loop survived the failure
    await batcher.stop()


async def test_drain_scores_what_waits_and_refuses_the_rest(executor: ThreadPoolExecutor) -> None:
    run = Recorder(delay_s=0.02)
    batcher = Batcher(run, executor, max_batch=2, max_wait_s=0.0, max_queue=100)
    batcher.start()
    waiting = [asyncio.ensure_future(batcher.submit(message(f"p{i}"))) for i in range(5)]
    await asyncio.sleep(0)
    assert await batcher.drain(5.0)
    assert all(isinstance(o, Moderated) for o in await asyncio.gather(*waiting))
    with pytest.raises(Overloaded, match="shutting down"):
        await batcher.submit(message("late"))
    await batcher.stop()
