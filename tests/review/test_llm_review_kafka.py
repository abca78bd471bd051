"""``moderation llm-review`` as Kubernetes runs it (a process), on the real broker, against a fake LLM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import TopicFactory
from tests.review.fake_llm import FakeLLM, llm_review_doc
from tests.review.proc import ReviewProcess
from tests.worker.harness import produce, read_topic


def env(bootstrap: str, source: str, sink: str, fake: FakeLLM, workdir: Path, **extra: str) -> dict[str, str]:
    return {
        "MODERATION_BOOTSTRAP_SERVERS": bootstrap,
        "MODERATION_LLM_REVIEW_TOPIC": source,
        "MODERATION_VERDICTS_TOPIC": sink,
        "MODERATION_LLM_GROUP_ID": f"{source}-group",
        "MODERATION_LLM_BASE_URL": fake.base_url,
        "MODERATION_LLM_MODEL": "fake-7b",
        "MODERATION_LLM_API_KEY": "sk-never-logged",
        "MODERATION_LLM_TIMEOUT_S": "0.5",
        "MODERATION_LLM_BACKOFF_S": "0.05",
        "MODERATION_LLM_MAX_ATTEMPTS": "3",
        "MODERATION_LLM_RATE_PER_S": "200",
        "MODERATION_LLM_CONCURRENCY": "8",
        "MODERATION_LLM_BREAKER_FAILURES": "1000",
        "MODERATION_CACHE_DIR": str(workdir / "cache"),
        **extra,
    }


def start(name: str, environ: dict[str, str], workdir: Path) -> ReviewProcess:
    return ReviewProcess(name, ["llm-review"], environ, workdir)


def latest(records: list[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        out[r.key.decode()] = orjson.loads(r.value)
    return out


async def test_good_answers_become_verdicts_and_failures_go_to_humans(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    source, sink = await topic_factory(2), await topic_factory(2)
    cases = {
        "a1": "[allow] the match was great",
        "b1": "[block] you absolute idiot",
        "f1": "[flaky] nice photo",
        "d1": "[defer] is this satire?",
        "m1": "[malformed] hmm",
        "s1": "[badschema] hmm",
        "t1": "[timeout] hmm",
        "r1": "[429] hmm",
    }
    values = [(pid.encode(), orjson.dumps(llm_review_doc(pid, text))) for pid, text in cases.items()]
    values.append((b"x1", b"not json at all"))
    with FakeLLM(delay_timeout_s=2.0) as fake:
        proc = start("llm-1", env(kafka_bootstrap, source, sink, fake, tmp_path), tmp_path)
        try:
            await proc.wait_ready()
            await produce(kafka_bootstrap, source, values)
            got = latest(await read_topic(kafka_bootstrap, sink, expect=len(values), timeout_s=60, strict=True))
            status, metrics = await asyncio.to_thread(proc.get, "/metrics")
        finally:
            assert proc.terminate() == 0, proc.log_tail()
        requests = dict(fake.requests)
    assert set(got) == {*cases, "x1"}
    for pid in ("a1", "f1"):
        assert got[pid]["kind"] == "verdict" and got[pid]["action"] == "allow"
    assert got["b1"]["action"] == "block" and got["b1"]["labels"] == ["toxicity.toxic"]
    assert got["b1"]["reviewer"] == "llm:fake-7b" and got["b1"]["overrides"]["action"] == "review"
    assert got["b1"]["post"]["text"] == cases["b1"]
    expected_reasons = {"d1": "llm_deferred", "m1": "malformed_answer", "s1": "malformed_answer",
                        "t1": "timeout", "r1": "rate_limited", "x1": "invalid_input"}
    for pid, reason in expected_reasons.items():
        assert got[pid]["kind"] == "needs_human" and got[pid]["reason"] == reason, got[pid]
    for pid in ("m1", "s1", "t1", "r1"):  # retried, then left for humans
        assert requests[cases[pid]] == 3
    assert requests[cases["f1"]] == 2
    assert status == 200 and b'moderation_llm_requests_total{outcome="rate_limited"} 4.0' in metrics  # r1 x3, f1 x1
    log = (tmp_path / "llm-1.log").read_text()
    for text in cases.values():
        assert text not in log, "post text reached the log"
    assert "sk-never-logged" not in log


async def test_sigkill_mid_stream_loses_nothing(
    kafka_bootstrap: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    source, sink = await topic_factory(4), await topic_factory(4)
    total = 240
    values = [(f"k{i:04d}".encode(), orjson.dumps(llm_review_doc(f"k{i:04d}", f"[slow] post {i}")))
              for i in range(total)]
    with FakeLLM() as fake:
        environ = env(kafka_bootstrap, source, sink, fake, tmp_path, MODERATION_LLM_CONCURRENCY="4",
                      MODERATION_LLM_MAX_BATCH="16")
        first = start("llm-a", environ, tmp_path)
        try:
            await first.wait_ready()
            await produce(kafka_bootstrap, source, values)
            deadline = time.monotonic() + 60
            while sum(fake.requests.values()) < 40:  # well inside the stream
                assert time.monotonic() < deadline, first.log_tail()
                await asyncio.sleep(0.05)
        finally:
            first.kill()
        asked_before_kill = sum(fake.requests.values())
        assert asked_before_kill < total
        second = start("llm-b", environ, tmp_path)
        try:
            await second.wait_ready()
            records = await read_topic(kafka_bootstrap, sink, expect=total, timeout_s=120, idle_s=3, strict=True)
        finally:
            assert second.terminate() == 0, second.log_tail()
    got = latest(records)
    assert set(got) == {f"k{i:04d}" for i in range(total)}, "a post was lost"
    assert all(doc["kind"] == "verdict" and doc["action"] == "allow" for doc in got.values())
    assert len(records) - total <= 2 * 16 * 4, "more repeats than the polls in flight"
