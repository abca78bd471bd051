"""``moderation llm-review``: the llm-review topic → an LLM → ``moderation.verdicts``.

At-least-once, like the workers: a poll of up to ``llm_max_batch`` records is answered concurrently
(bounded by the client), every verdict is acknowledged by the broker, and only then are the poll's
offsets committed. A crash re-asks the LLM about at most one poll; verdicts are keyed by post id and
the latest per post wins downstream, so a repeat is harmless.

Nothing is lost when the LLM fails: a post it cannot answer (malformed answers, timeouts, 429s or
5xx on every try, an open circuit breaker, an answer of "review") gets a ``needs_human`` verdict,
which puts it in the reviewer console's queue. The LLM's answer is not trusted either
(``moderation.review.guard``): a post that tries to instruct the reviewer is never sent to the LLM
(``prompt_injection``), and an ``allow`` that contradicts a confident SLM decision is not applied
(``llm_contradicts_slm``); both go to people. A failure of Kafka itself stops the process (exit 1)
without committing, so the poll is asked again after the restart.

Exit codes as the worker's: 0 stopped on request · 1 fatal error · 2 bad configuration · 3 broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

import aiohttp
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError

from moderation.core.errors import BrokerError, ModerationError
from moderation.core.process import EXIT_BROKER, EXIT_CONFIG, EXIT_FATAL, settings_for_process
from moderation.core.settings import Settings
from moderation.review import guard, verdicts
from moderation.review.llm import LLMClient
from moderation.review.metrics import LLMReviewMetrics
from moderation.worker import security
from moderation.worker.app import default_worker_id, ensure_topics
from moderation.worker.cli import retry_broker
from moderation.worker.http import build_http_app, start_http
from moderation.worker.metrics import LagGauge

log = structlog.get_logger("moderation.llm_review")  # lazy: bound at first use, after configure_logging


class ReviewState:
    """What /readyz and /healthz say: ready while partitions are held and the loop runs."""

    def __init__(self) -> None:
        self.consumer: AIOKafkaConsumer | None = None
        self.running = False
        self.fatal: str | None = None
        self.breaker_state = "closed"

    def ready(self) -> tuple[bool, dict[str, Any]]:
        held = len(self.consumer.assignment()) if self.consumer is not None and self.running else 0
        ok = self.running and held > 0 and self.fatal is None
        return ok, {"assigned_partitions": held, "circuit": self.breaker_state, "fatal": self.fatal}

    def live(self) -> tuple[bool, dict[str, Any]]:
        return self.fatal is None, {"status": "ok" if self.fatal is None else "failing", "fatal": self.fatal}


def reviewer_name(settings: Settings) -> str:
    return f"llm:{settings.llm_model}"


async def answer(client: LLMClient, record: ConsumerRecord[bytes, bytes], settings: Settings) -> dict[str, Any]:
    """One llm-review record → its verdict record (decided or needs_human); never raises for the LLM."""
    origin = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    reviewer = reviewer_name(settings)
    try:
        doc = orjson.loads(record.value or b"")
        if not isinstance(doc, dict) or not isinstance(doc.get("post"), dict) or not doc.get("post_id"):
            raise ValueError("not an llm-review record (no post_id or post)")
    except (orjson.JSONDecodeError, ValueError) as exc:
        key = (record.key or b"").decode("utf-8", "replace")
        return verdicts.needs_human(
            {"post_id": key or None}, reviewer=reviewer, reason="invalid_input", detail=str(exc)[:200], origin=origin
        )
    signals = guard.injection_in(doc)
    if signals:  # the LLM is not asked: an answer to text written to steer it carries no information
        log.warning("left_for_humans", post_id=doc["post_id"], reason=guard.PROMPT_INJECTION, signals=list(signals))
        return verdicts.needs_human(
            doc, reviewer=reviewer, reason=guard.PROMPT_INJECTION, origin=origin,
            detail="the post tries to instruct the reviewer (" + ", ".join(signals) + "); the LLM was not asked",
        )
    outcome = await client.review(doc)
    if outcome.answer is None:
        reason = outcome.reason or "malformed_answer"
        log.warning("left_for_humans", post_id=doc["post_id"], reason=reason, detail=outcome.detail,
                    attempts=outcome.attempts)
        return verdicts.needs_human(doc, reviewer=reviewer, reason=reason, detail=outcome.detail, origin=origin)
    a = outcome.answer
    if a.action == "review":
        return verdicts.needs_human(doc, reviewer=reviewer, reason="llm_deferred", detail=a.rationale, origin=origin)
    why = guard.contradiction(doc, a.action)
    if why is not None:
        log.warning("llm_answer_refused", post_id=doc["post_id"], reason=guard.LLM_CONTRADICTS_SLM, answer=a.action,
                    detail=why)
        return verdicts.needs_human(
            doc, reviewer=reviewer, reason=guard.LLM_CONTRADICTS_SLM, origin=origin, refused=a,
            detail=f"the LLM answered {a.action}; not applied: {why}",
        )
    return verdicts.verdict(
        doc,
        reviewer=reviewer,
        action=a.action,
        labels=list(a.labels),
        rationale=a.rationale,
        confidence=a.confidence,
        origin=origin,
    )


async def consume(settings: Settings, metrics: LLMReviewMetrics, state: ReviewState, stop: asyncio.Event) -> None:
    """The loop: poll → answer all → produce all (acked) → commit; until ``stop`` is set."""
    kwargs = security.client_kwargs(settings)
    consumer = AIOKafkaConsumer(
        settings.llm_review_topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.llm_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.isolation_level,
        metadata_max_age_ms=settings.metadata_max_age_ms,
        session_timeout_ms=settings.session_timeout_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        **kwargs,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5, **kwargs
    )
    await producer.start()
    await consumer.start()
    state.consumer, state.running = consumer, True
    lag = LagGauge(metrics.consumer_lag)
    try:
        async with aiohttp.ClientSession() as session:
            client = LLMClient(settings, session, metrics)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=settings.llm_max_batch)
                records = [r for rs in batches.values() for r in rs]
                if not records:
                    continue
                metrics.consumed.inc(len(records))
                results = await asyncio.gather(*(answer(client, r, settings) for r in records))
                state.breaker_state = client.breaker.state
                futures = []
                for doc in results:
                    key, value, headers = verdicts.encode(doc)
                    futures.append(await producer.send(settings.verdicts_topic, value, key=key, headers=headers))
                await asyncio.gather(*futures)
                for doc in results:
                    metrics.verdicts.labels(doc["kind"], doc["action"] or doc["reason"]).inc()
                offsets = {tp: rs[-1].offset + 1 for tp, rs in batches.items() if rs}  # in offset order
                try:
                    await consumer.commit(offsets)
                except CommitFailedError as exc:  # partitions moved during the poll: the new owner asks again
                    log.warning("commit_failed", error=str(exc), records=len(records))
                await lag.report(consumer)
    finally:
        state.running = False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 15)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 15)


def run(args: argparse.Namespace | None = None) -> int:
    settings = settings_for_process("moderation.llm_review", post_text_in_logs=False)
    if settings is None:
        return EXIT_CONFIG
    if not settings.llm_base_url or not settings.llm_model:
        log.critical(
            "startup_failed",
            error="`moderation llm-review` needs MODERATION_LLM_BASE_URL (e.g. http://vllm:8000/v1) and "
            "MODERATION_LLM_MODEL (the model the endpoint serves)",
        )
        return EXIT_CONFIG
    return asyncio.run(serve(settings))


async def serve(settings: Settings) -> int:
    worker_id = settings.worker_id or default_worker_id()
    bound = log.bind(worker_id=worker_id)
    metrics, state, stop = LLMReviewMetrics(), ReviewState(), asyncio.Event()
    http = build_http_app(metrics, state.ready, state.live)
    try:
        runner = await start_http(http, settings.http_port, settings.http_host)
    except OSError as exc:
        bound.critical("startup_failed", error=f"cannot serve HTTP on {settings.http_host}:{settings.http_port} "
                       f"({exc.strerror or exc}); free the port or set MODERATION_HTTP_PORT")
        return EXIT_CONFIG
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        topics = [settings.llm_review_topic, settings.verdicts_topic]
        await retry_broker(lambda: ensure_topics(settings, topics), settings, bound)
        bound.info("starting", model=settings.llm_model, endpoint=settings.llm_base_url,
                   concurrency=settings.llm_concurrency, rate_per_s=settings.llm_rate_per_s)
        await consume(settings, metrics, state, stop)
    except (BrokerError, ModerationError) as exc:
        bound.critical("startup_failed", error=str(exc), error_type=type(exc).__name__)
        code = EXIT_BROKER if isinstance(exc, BrokerError) else EXIT_CONFIG
    except Exception as exc:
        state.fatal = f"{type(exc).__name__}: {exc}"
        bound.critical("llm_review_crashed", error=state.fatal)
        code = EXIT_FATAL
    finally:
        await runner.cleanup()
    bound.info("stopped", exit_code=code)
    return code
