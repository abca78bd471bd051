"""The LLM client without Kafka: answers validated, failures retried then reported, breaker, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from moderation.core.settings import Settings
from moderation.review import verdicts
from moderation.review.llm import CircuitBreaker, LLMClient, RateLimiter
from moderation.review.metrics import LLMReviewMetrics
from tests.review.fake_llm import FakeLLM, llm_review_doc


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(delay_timeout_s=1.0) as server:
        yield server


def settings(fake: FakeLLM, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "llm_base_url": fake.base_url,
        "llm_model": "test-model",
        "llm_api_key": "sk-test",
        "llm_timeout_s": 0.3,
        "llm_backoff_s": 0.01,
        "llm_max_attempts": 3,
        "llm_rate_per_s": 500,
        "llm_breaker_failures": 1000,
    }
    return Settings(**(base | overrides))


async def review(s: Settings, text: str, breaker: CircuitBreaker | None = None) -> Any:
    async with aiohttp.ClientSession() as session:
        client = LLMClient(s, session, LLMReviewMetrics(), breaker=breaker)
        return await client.review(llm_review_doc("p1", text))


@pytest.mark.parametrize(
    ("text", "reason", "tries"),
    [
        ("[malformed] x", "malformed_answer", 3),
        ("[badschema] x", "malformed_answer", 3),
        ("[429] x", "rate_limited", 3),
        ("[500] x", "server_error", 3),
        ("[timeout] x", "timeout", 3),
    ],
)
async def test_failures_are_retried_then_reported(fake: FakeLLM, text: str, reason: str, tries: int) -> None:
    before = fake.requests[text]
    outcome = await review(settings(fake), text)
    assert outcome.answer is None and outcome.reason == reason
    assert fake.requests[text] - before == tries


async def test_a_good_answer_is_validated_and_the_request_is_well_formed(fake: FakeLLM) -> None:
    outcome = await review(settings(fake), "[block] you idiot")
    assert outcome.answer is not None and outcome.answer.action == "block"
    assert outcome.answer.labels == ["toxicity.toxic"]
    body = fake.bodies[-1]
    assert body["model"] == "test-model"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == verdicts.LLM_ANSWER_SCHEMA
    assert fake.auth[-1] == "Bearer sk-test"


async def test_one_429_then_an_answer_succeeds_on_retry(fake: FakeLLM) -> None:
    outcome = await review(settings(fake), "[flaky] hello")
    assert outcome.answer is not None and outcome.attempts == 2


async def test_unreachable_endpoint_is_reported_not_raised() -> None:
    s = Settings(llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_backoff_s=0.01, llm_max_attempts=2)
    outcome = await review(s, "[allow] hi")
    assert outcome.answer is None and outcome.reason == "unreachable"


async def test_the_breaker_opens_after_consecutive_failures_and_skips_the_endpoint(fake: FakeLLM) -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_s=10, clock=lambda: now[0])
    s = settings(fake, llm_max_attempts=1)
    async with aiohttp.ClientSession() as session:
        client = LLMClient(s, session, LLMReviewMetrics(), breaker=breaker)
        for _ in range(2):
            assert (await client.review(llm_review_doc("p", "[500] a"))).reason == "server_error"
        assert breaker.state == "open"
        before = sum(fake.requests.values())
        skipped = await client.review(llm_review_doc("p", "[allow] b"))
        assert skipped.reason == "circuit_open" and sum(fake.requests.values()) == before
        now[0] = 11  # half-open: one probe; it succeeds and closes the breaker
        assert (await client.review(llm_review_doc("p", "[allow] c"))).answer is not None
        assert breaker.state == "closed"


def test_a_failed_probe_opens_the_breaker_again() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, reset_s=5, clock=lambda: now[0])
    breaker.failure()
    assert not breaker.allow()
    now[0] = 6
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()
    assert breaker.state == "open"


async def test_rate_limiter_spaces_requests() -> None:
    limiter = RateLimiter(rate=50)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(limiter.acquire() for _ in range(11)))
    assert loop.time() - start >= 0.19


async def test_concurrency_is_bounded(fake: FakeLLM) -> None:
    s = settings(fake, llm_concurrency=2, llm_timeout_s=2)
    metrics = LLMReviewMetrics()
    peak = 0
    async with aiohttp.ClientSession() as session:
        client = LLMClient(s, session, metrics)

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, int(metrics.in_flight._value.get()))
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(client.review(llm_review_doc(f"c{i}", f"[slow] {i}")) for i in range(6)))
        watcher.cancel()
    assert peak == 2


@pytest.mark.parametrize(
    "content",
    [None, "", "not json", '{"action": "maybe", "labels": [], "rationale": "", "confidence": 0.5}',
     '{"action": "block", "labels": ["made.up"], "rationale": "", "confidence": 0.5}',
     '{"action": "block", "labels": [], "rationale": "", "confidence": 1.5}',
     '{"action": "block", "labels": [], "rationale": "", "confidence": 0.5, "extra": 1}'],
)
def test_parse_answer_refuses_what_is_not_the_schema(content: Any) -> None:
    with pytest.raises(verdicts.AnswerError):
        verdicts.parse_answer(content)


def test_parse_answer_accepts_a_fenced_answer() -> None:
    a = verdicts.parse_answer('```json\n{"action": "allow", "labels": [], "rationale": "ok", "confidence": 1}\n```')
    assert a.action == "allow"
