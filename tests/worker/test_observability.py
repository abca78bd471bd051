"""Seeing into a running worker: metrics that add up, probes that tell the truth, logs without text."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from moderation.worker.http import Readiness
from tests.worker.harness import CORPUS, Setup, WorkerProcess, mixed_stream, produce, read_topic


def scrape(worker: WorkerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = worker.get("/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: dict, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in samples.items() if n == name and all((k, w) in labels for k, w in match.items()))


async def test_metrics_add_up_and_logs_are_json_without_text(deployment: Setup) -> None:
    messages, valid, bad = mixed_stream(1_000)
    deployment.extra_env["MODERATION_LOG_SUMMARY_S"] = "2"  # periodic summaries during the test, plus the final one
    worker = WorkerProcess(deployment, "w-metrics")
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(deployment.bootstrap, deployment.input_topic, messages)
        decisions = await read_topic(deployment.bootstrap, deployment.topic("decisions"), expect=len(valid))
        await read_topic(deployment.bootstrap, deployment.topic("dlq"), expect=bad)
        await asyncio.sleep(6)  # one lag report (every 5 s)
        samples = await asyncio.to_thread(scrape, worker)
    finally:
        assert await asyncio.to_thread(worker.terminate) == 0

    docs = [orjson.loads(r.value) for r in decisions]
    actions = Counter(d["action"] for d in docs)
    triggers = Counter(t for d in docs for t in d["triggers"])
    assert len(docs) == len(valid)
    assert total(samples, "moderation_posts_consumed_total") == len(messages)
    for action in ("allow", "review", "block"):
        assert total(samples, "moderation_decisions_total", action=action) == actions[action]
    assert total(samples, "moderation_dlq_records_total") == bad
    for trigger, count in triggers.items():
        assert total(samples, "moderation_escalations_total", trigger=trigger) == count
    hits, misses = total(samples, "moderation_cache_hits_total"), total(samples, "moderation_cache_misses_total")
    assert hits + misses == len(valid) and misses <= 97 * len(CORPUS)  # the stream repeats texts
    assert total(samples, "moderation_batch_size_count") >= 1
    assert total(samples, "moderation_batch_size_sum") == len(messages)
    languages = Counter(d["language"]["effective"] for d in docs)
    assert languages == {"en": len(valid)}  # the harness's posts are English
    assert total(samples, "moderation_posts_by_language_total", language="en") == len(valid)
    assert total(samples, "moderation_posts_by_language_total") == len(valid)  # the other series exported at 0
    for stage in ("decode", "tokenize", "infer", "language", "policy", "produce"):
        assert total(samples, "moderation_stage_duration_seconds_count", stage=stage) >= 1
    assert total(samples, "moderation_model_info", provider="CPUExecutionProvider", variant="int8") == 1
    assert total(samples, "moderation_policy_info", version="tiny-test-1") == 1
    lag = [v for (n, labels), v in samples.items() if n == "moderation_consumer_lag"]
    assert lag and all(v == 0 for v in lag)  # drained: nothing left behind the log end

    lines = worker.log_lines()
    events = [orjson.loads(line) for line in lines]  # every line is one JSON event
    names = Counter(e["event"] for e in events)
    assert names["models_loaded"] == 1 and names["stopped"] == 1
    assert names["batch"] == 0  # per-batch lines are debug: at info, one summary per interval
    summaries = [e for e in events if e["event"] == "summary"]
    assert len(summaries) >= 2 and summaries[-1].get("final") is True
    assert sum(e["posts"] for e in summaries) == summaries[-1]["posts_total"] == len(messages)
    assert sum(e["dlq"] for e in summaries) == bad
    for action in ("allow", "review", "block"):
        assert sum(e["actions"].get(action, 0) for e in summaries) == actions[action]
    assert sum(e["escalated"] for e in summaries) == sum(1 for d in docs if d["triggers"])
    busy = [e for e in summaries if e["posts"]]
    assert all(e["batch_ms"]["p50"] <= e["batch_ms"]["p99"] <= e["batch_ms"]["max"] for e in busy)
    assert len(lines) < 40, Counter(e["event"] for e in events)  # start, assignment, summaries, stop
    raw = b"\n".join(lines)
    assert not any(text.encode() in raw for text in CORPUS)  # no post text at default settings


def test_readiness_rules() -> None:
    r = Readiness()
    assert r.check()[0] is False
    r.models_loaded = True
    assert r.check() == (
        False,
        {"models_loaded": True, "provider": None, "assigned_partitions": 0, "draining": False, "fatal": None},
    )
    held = [2]
    r.partitions = lambda: held[0]
    assert r.check()[0] is True
    held[0] = 0  # partitions taken away (topic deleted, or more members than partitions)
    assert r.check()[0] is False
    held[0] = 1
    r.draining = True
    assert r.check()[0] is False


def test_liveness_rules() -> None:
    r = Readiness()
    assert r.live() == (True, {"status": "ok", "fatal": None, "batch_overdue_s": 0.0})
    overdue = [12.34]
    r.stalled = lambda: overdue[0]
    assert r.live() == (False, {"status": "failing", "fatal": None, "batch_overdue_s": 12.3})
    overdue[0] = 0.0
    r.fatal = "BatchTimeout: batch took too long"
    ok, detail = r.live()
    assert not ok and detail["fatal"].startswith("BatchTimeout")
    assert r.check()[0] is False  # not ready either


async def test_ready_only_after_models_load(deployment: Setup) -> None:
    worker = WorkerProcess(deployment, "w-ready")
    try:
        await asyncio.to_thread(worker.wait_ready)
        status, body = worker.get("/readyz")
        doc = orjson.loads(body)
        assert status == 200 and doc["models_loaded"] and doc["provider"] == "CPUExecutionProvider"
        assert worker.get("/healthz")[0] == 200
    finally:
        assert await asyncio.to_thread(worker.terminate) == 0


async def test_corrupt_model_fails_fast_with_a_clear_log_line(deployment: Setup, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(deployment.model_dir, broken)
    with open(broken / "model.int8.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"corrupted!")
    deployment.model_dir = broken
    worker = WorkerProcess(deployment, "w-corrupt")
    code = await asyncio.to_thread(worker.proc.wait, 60)
    assert code == 2
    events = [orjson.loads(line) for line in worker.log_lines()]
    failure = next(e for e in events if e["event"] == "startup_failed")
    assert "model.int8.onnx" in failure["error"] and "sha256" in failure["error"]
    assert "moderation models build" in failure["error"] or "git checkout" in failure["error"]
