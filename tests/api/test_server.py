"""The scoring API over real HTTP (aiohttp client → aiohttp server) with a real tiny model behind it.

Bad input of every kind gets its documented 4xx in Google's error shape; overload and limits answer at
once with Retry-After; batching never changes a post's scores; /v1/moderate is the decision the worker's
pipeline makes (``moderation score``'s record for the same post).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from moderation.core.settings import Settings
from moderation.pipeline.batch import BatchResult, Message
from moderation.worker.score import score_stream
from tests.api.conftest import KEY, Api, start_api

ANALYZE = "/v1alpha1/comments:analyze"


def google_error(body: Any, code: int, status: str) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code and error["status"] == status, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def test_analyze_answers_in_perspectives_shape(api: Api) -> None:
    status, body, headers = await api.analyze(
        "you are a wonderful person", {"TOXICITY": {}, "SPAM": {}, "INSULT": {}}, clientToken="c-1", languages=["en"]
    )
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert set(body) == {"attributeScores", "languages", "detectedLanguages", "clientToken"}
    assert list(body["attributeScores"]) == ["TOXICITY", "SPAM", "INSULT"]  # the tiny model has an insult label
    for score in body["attributeScores"].values():
        assert set(score) == {"summaryScore"} and score["summaryScore"]["type"] == "PROBABILITY"
        assert 0.0 <= score["summaryScore"]["value"] <= 1.0
    assert body["languages"] == ["en"] and body["clientToken"] == "c-1"


async def test_key_in_header_or_bearer_and_discovery_without_key(api: Api) -> None:
    body = {"comment": {"text": "hello"}, "requestedAttributes": {"TOXICITY": {}}}
    for headers in ({"X-Goog-Api-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        status, _, _ = await api.post(ANALYZE, body, key=None, headers=headers)
        assert status == 200
    async with api.http.get(api.url("/$discovery/rest"), params={"version": "v1alpha1"}) as resp:
        doc = await resp.json()
    assert resp.status == 200 and doc["rootUrl"] == api.url("/")
    async with api.http.get(api.url("/$discovery/rest"), params={"version": "v1"}) as resp:
        google_error(await resp.json(), 404, "NOT_FOUND")


BIG = 30_000  # over MODERATION_MAX_TEXT_CHARS (20,000)


@pytest.mark.parametrize(
    ("case", "code", "status"),
    [
        ("bad JSON", 400, "INVALID_ARGUMENT"),
        ("no body", 400, "INVALID_ARGUMENT"),
        ("not UTF-8", 400, "INVALID_ARGUMENT"),
        ("empty text", 400, "INVALID_ARGUMENT"),
        ("huge text", 400, "INVALID_ARGUMENT"),
        ("huge body", 413, "INVALID_ARGUMENT"),
        ("unknown attribute", 400, "INVALID_ARGUMENT"),
        ("unsupported attribute", 400, "INVALID_ARGUMENT"),
        ("missing key", 403, "PERMISSION_DENIED"),
        ("wrong key", 400, "INVALID_ARGUMENT"),
        ("wrong method", 405, "UNIMPLEMENTED"),
        ("unknown path", 404, "NOT_FOUND"),
        ("suggestscore", 501, "UNIMPLEMENTED"),
    ],
)
async def test_bad_requests_get_documented_4xx_never_500(api: Api, case: str, code: int, status: str) -> None:
    good = {"comment": {"text": "hello"}, "requestedAttributes": {"TOXICITY": {}}}
    if case == "bad JSON":
        answer = await api.post(ANALYZE, raw=b'{"comment": {"text": "hi"},')
    elif case == "no body":
        answer = await api.post(ANALYZE, raw=b"")
    elif case == "not UTF-8":
        answer = await api.post(ANALYZE, raw=b'{"comment": {"text": "\xff\xfe"}}')
    elif case == "empty text":
        answer = await api.analyze("")
    elif case == "huge text":
        answer = await api.analyze("x" * BIG)
    elif case == "huge body":
        answer = await api.post(ANALYZE, raw=b'{"comment": {"text": "' + b"x" * 2_000_000 + b'"}}')
    elif case == "unknown attribute":
        answer = await api.analyze("hello", {"NOT_AN_ATTRIBUTE": {}})
    elif case == "unsupported attribute":
        answer = await api.analyze("hello", {"SEVERE_TOXICITY": {}})
    elif case == "missing key":
        answer = await api.post(ANALYZE, good, key=None)
    elif case == "wrong key":
        answer = await api.post(ANALYZE, good, key="not-the-key-0001")
    elif case == "wrong method":
        async with api.http.get(api.url(ANALYZE)) as resp:
            answer = (resp.status, await resp.json(), resp.headers)
        assert answer[2]["Allow"] == "POST"
    elif case == "unknown path":
        answer = await api.post("/v1alpha1/comments:nothing", good)
    else:
        answer = await api.post("/v1alpha1/comments:suggestscore", good)
    got, body, _ = answer
    assert got == code
    google_error(body, code, status)
    assert set(api.service.summary.codes) == {code}  # the answer was counted, and nothing else happened


async def test_batched_or_alone_a_post_gets_the_same_scores(api: Api) -> None:
    texts = [f"post number {i} about the game and the weather" for i in range(40)]
    _, alone, _ = await api.analyze(texts[7], {"TOXICITY": {}, "SPAM": {}})
    answers = await asyncio.gather(*(api.analyze(t, {"TOXICITY": {}, "SPAM": {}}) for t in texts))
    assert all(status == 200 for status, _, _ in answers)
    assert answers[7][1]["attributeScores"] == alone["attributeScores"]
    sizes = api.proc.metrics.batch_size.collect()[0].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    assert count < 41, "40 concurrent requests were scored in fewer batches than requests"


async def test_v1_moderate_is_the_workers_decision(api: Api, tiny_model_dir: Path, tiny_policy_file: Path) -> None:
    post = {
        "id": "p-42",
        "text": "buy cheap pills now!!! click the link",
        "lang": "en",
        "context": {"verified_author": True},
    }
    status, record, _ = await api.post("/v1/moderate", post)
    assert status == 200
    out, err = io.BytesIO(), io.BytesIO()
    settings = Settings(model_dir=tiny_model_dir, policy_file=tiny_policy_file, dedupe_cache_size=0)
    score_stream(io.BytesIO(orjson.dumps(post) + b"\n"), "test", out, err, settings)
    expected = orjson.loads(out.getvalue())
    for name in (
        "post_id",
        "action",
        "labels",
        "reasons",
        "triggers",
        "confidence",
        "language",
        "scores",
        "policy_version",
        "model",
    ):
        assert record[name] == expected[name], name
    assert record["origin"] is None and record["stored"] is False  # no audit configured
    # no id: one is made up; a bad post gets the DLQ's error class
    status, record, _ = await api.post("/v1/moderate", {"text": "hello"})
    assert status == 200 and record["post_id"].startswith("api-")
    status, body, _ = await api.post("/v1/moderate", {"id": "x", "text": 5})
    assert status == 400 and google_error(body, 400, "INVALID_ARGUMENT")["details"][0]["errorClass"] == "invalid_schema"
    status, body, _ = await api.post("/v1/moderate", raw=b"\xef\xbb\xbf{}")
    assert status == 400 and "byte-order mark" in body["error"]["message"]


class Held:
    """Wraps the pipeline's run so a test can hold the scorer."""

    def __init__(self, run: Any) -> None:
        self.run, self.gate = run, threading.Event()

    def __call__(self, messages: Sequence[Message]) -> BatchResult:
        self.gate.wait(20)
        return self.run(messages)  # type: ignore[no-any-return]


async def test_overload_answers_503_with_retry_after_at_once(api_settings: dict[str, Any]) -> None:
    api = await start_api(Settings(**{**api_settings, "api_max_queue": 4, "max_batch": 2}))
    held = Held(api.service.batcher.run)
    api.service.batcher.run = held
    try:
        waiting = [asyncio.ensure_future(api.analyze(f"post {i}")) for i in range(2)]  # the batch in flight
        for _ in range(500):
            await asyncio.sleep(0.01)
            if api.service.batcher.busy:
                break
        waiting += [asyncio.ensure_future(api.analyze(f"queued {i}")) for i in range(4)]  # the full queue
        for _ in range(500):
            await asyncio.sleep(0.01)
            if api.service.batcher.depth == 4:
                break
        assert api.service.batcher.busy and api.service.batcher.depth == 4
        started = time.perf_counter()
        status, body, headers = await api.analyze("one too many")
        took = time.perf_counter() - started
        assert status == 503 and headers["Retry-After"] == "1" and took < 0.5
        assert "overloaded" in google_error(body, 503, "UNAVAILABLE")["message"]
        held.gate.set()
        assert [s for s, _, _ in await asyncio.gather(*waiting)] == [200] * 6
        rejected = {
            s.labels["reason"]: s.value
            for s in api.proc.metrics.rejected.collect()[0].samples
            if s.name.endswith("_total")
        }
        assert rejected["queue_full"] == 1
    finally:
        held.gate.set()
        await api.http.close()
        await api.service.batcher.stop()
        await api.server.close()
        await api.probes.close()


async def test_per_key_rate_limit_answers_429_with_retry_after(api_settings: dict[str, Any], tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - {name: tight, key: tight-key-0001, rate_per_s: 0.5, burst: 2}\n")
    api = await start_api(Settings(**{**api_settings, "api_keys_file": keys}))
    try:
        body = {"comment": {"text": "hello"}, "requestedAttributes": {"TOXICITY": {}}}
        statuses = [(await api.post(ANALYZE, body, key="tight-key-0001"))[0] for _ in range(2)]
        status, error, headers = await api.post(ANALYZE, body, key="tight-key-0001")
        assert statuses == [200, 200] and status == 429 and headers["Retry-After"] == "2"
        detail = google_error(error, 429, "RESOURCE_EXHAUSTED")["details"][0]
        assert detail["reason"] == "RATE_LIMIT_EXCEEDED" and detail["metadata"]["key"] == "tight"
        assert (await api.post(ANALYZE, body))[0] == 200  # the other key has its own bucket
    finally:
        await api.http.close()
        await api.service.batcher.stop()
        await api.server.close()
        await api.probes.close()


async def test_probes_and_metrics(api: Api) -> None:
    await api.analyze("hello")
    await api.analyze("")
    async with api.http.get(str(api.probes.make_url("/readyz"))) as resp:
        ready = await resp.json()
    assert resp.status == 200 and ready["ready"] and ready["models_loaded"]
    async with api.http.get(str(api.probes.make_url("/metrics"))) as resp:
        text = await resp.text()
    for line in (
        'moderation_api_requests_total{code="200",endpoint="analyze"} 1.0',
        'moderation_api_requests_total{code="400",endpoint="analyze"} 1.0',
        'moderation_api_rejected_total{reason="queue_full"} 0.0',
        "moderation_api_queue_depth 0.0",
        'moderation_api_audit_records_total{outcome="written"} 0.0',
    ):
        assert line in text, line
    for family in (
        "moderation_api_request_duration_seconds_bucket",
        "moderation_api_batch_size_bucket",
        "moderation_api_queue_wait_seconds_bucket",
        "moderation_api_decisions_total{action=",
    ):
        assert family in text, family
    api.proc.draining = True
    async with api.http.get(str(api.probes.make_url("/readyz"))) as resp:
        assert resp.status == 503
