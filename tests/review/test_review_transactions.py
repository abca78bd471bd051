"""The review tier reads committed records only (real broker): records of aborted transactions on its input
topics are never answered by the LLM reviewer and never reach the console's queue (issue 18)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import orjson

from moderation.devtools.launch import free_port
from moderation.review import verdicts
from tests.conftest import TopicFactory
from tests.review.fake_llm import FakeLLM, llm_review_doc
from tests.review.proc import ReviewProcess
from tests.review.test_console_browser import login
from tests.review.test_llm_review_kafka import env, latest
from tests.worker.harness import produce_transactions, read_topic


def review_record(post_id: str, text: str) -> tuple[bytes, bytes]:
    return post_id.encode(), orjson.dumps(llm_review_doc(post_id, text))


async def test_llm_reviewer_answers_only_committed_posts(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    source, sink = await topic_factory(2), await topic_factory(2)
    batches = [
        (False, [review_record(f"a{i}", f"[allow] aborted {i}") for i in range(4)]),
        (True, [review_record(f"c{i}", f"[allow] committed {i}") for i in range(4)]),
        (False, [review_record(f"a{i}", f"[block] aborted {i}") for i in range(4, 8)]),
        (True, [review_record(f"c{i}", f"[block] committed {i}") for i in range(4, 8)]),
    ]
    with FakeLLM() as fake:
        proc = ReviewProcess("llm-txn", ["llm-review"], env(kafka_bootstrap, source, sink, fake, tmp_path), tmp_path)
        try:
            await proc.wait_ready()
            await produce_transactions(kafka_bootstrap, source, batches)
            got = latest(await read_topic(kafka_bootstrap, sink, expect=8, timeout_s=60, idle_s=3, strict=True))
        finally:
            assert proc.terminate() == 0, proc.log_tail()
        asked = set(fake.requests)
    assert set(got) == {f"c{i}" for i in range(8)}
    committed_texts = {json_text for ok, records in batches if ok for _, value in records
                       for json_text in [orjson.loads(value)["post"]["text"]]}  # fmt: skip
    assert asked == committed_texts, "the LLM must be asked about every committed post and no aborted one"


async def test_console_queues_only_committed_posts_and_verdicts(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    review, verdict_topic, decisions = await topic_factory(2), await topic_factory(2), await topic_factory(2)
    docs = {pid: llm_review_doc(pid, f"post {pid}") for pid in ("c1", "c2", "c3")}
    await produce_transactions(kafka_bootstrap, review, [
        (False, [review_record("a1", "aborted one"), review_record("a2", "aborted two")]),
        (True, [(pid.encode(), orjson.dumps(doc)) for pid, doc in docs.items()]),
    ])  # fmt: skip

    def human(pid: str) -> tuple[bytes, bytes]:
        key, value, _ = verdicts.encode(verdicts.verdict(docs[pid], reviewer="human:bob", action="allow", labels=[]))
        return key, value

    await produce_transactions(kafka_bootstrap, verdict_topic, [(False, [human("c1")]), (True, [human("c2")])])
    port = free_port()
    console = ReviewProcess("console-txn", ["console"], {
        "MODERATION_BOOTSTRAP_SERVERS": kafka_bootstrap, "MODERATION_REVIEW_TOPIC": review,
        "MODERATION_VERDICTS_TOPIC": verdict_topic, "MODERATION_DECISIONS_TOPIC": decisions,
        "MODERATION_CONSOLE_USERS": "ann:pw", "MODERATION_CONSOLE_PORT": str(port),
        "MODERATION_CACHE_DIR": str(tmp_path / "cache"),
    }, tmp_path)  # fmt: skip
    try:
        await console.wait_ready()  # caught up with both topics
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            await login(session, base, "ann", "pw")
            async with session.get(f"{base}/") as resp:
                page = await resp.text()
    finally:
        assert console.terminate() == 0, console.log_tail()
    queued = set(re.findall(r'class="card queued"[^>]*data-post-id="([^"]+)"', page))
    # a1/a2 were aborted; c2's human verdict was committed; c1's verdict was aborted, so it still waits
    assert queued == {"c1", "c3"}, page[:2000]
