"""The faust app: one agent over the input topic, micro-batching with manual acks.

faust's ``Stream.take()`` acks a batch in a ``finally:`` — an exception would lose it — so the agent
uses ``noack_take`` and acks each event only after :meth:`ModerationService.handle` returned, i.e.
after every output record of the batch was acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from moderation.core.logs import get_logger, repeat_suppressor
from moderation.core.settings import Settings
from moderation.pipeline.batch import Message
from moderation.pipeline.policy import PolicyStore
from moderation.pipeline.records import Origin
from moderation.worker.metrics import WorkerMetrics
from moderation.worker.produce import Writer
from moderation.worker.security import broker_credentials, check_auth, client_kwargs
from moderation.worker.service import ModerationService


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def faust_broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


async def ensure_topics(settings: Settings, topics: list[str]) -> None:
    """Create the topics the worker reads and writes, if they are missing (idempotent)."""
    await check_auth(settings)  # a refused login raises BrokerAuthError at once (not retried)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=15_000, **client_kwargs(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica won the race
                await admin.create_topics(
                    [NewTopic(t, num_partitions=settings.topic_partitions, replication_factor=1) for t in missing]
                )
    finally:
        await admin.close()


class Committer:
    """Commits acked offsets right after each batch instead of on faust's 1 s timer, so a crash
    re-decides at most the batches in flight. Off the batch path (the next batch is not held up),
    one commit at a time and in order; requests made during a commit fold into the next one."""

    def __init__(self, commit: Callable[[], Awaitable[bool]], log: Any) -> None:
        self._commit = commit
        self._log = log
        self._wanted = asyncio.Event()

    def request(self) -> None:
        self._wanted.set()

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                # faust returns False when it only waited for a commit already under way (its timer's):
                # that one may have missed the latest acks, so commit once more
                if not await self._commit():
                    await self._commit()
            except Exception as exc:  # the periodic commit retries; redone work is keyed by post id
                self._log.warning("commit_failed", error=str(exc), error_type=type(exc).__name__)


def exit_after(seconds: float, log: Any, reason: str) -> threading.Timer:
    """A fatal error must end the process even when a clean stop hangs (it waits for a broker that is
    gone): a daemon timer hard-exits with code 1 unless the process is already gone."""

    def force() -> None:
        log.critical("fatal_exit_forced", after_s=seconds, reason=reason)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(1)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
    return timer


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The producer for every output record: acks from all in-sync replicas, room for the largest record
    emit builds, and record batches large enough that one worker batch is one broker batch per partition."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"moderation-worker-{settings.group_id}",
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=max(settings.max_record_bytes + 65_536, 1_048_576),
        metadata_max_age_ms=settings.metadata_max_age_ms,
        request_timeout_ms=30_000,
        **client_kwargs(settings),
    )


def create_app(
    settings: Settings,
    service: ModerationService,
    policies: PolicyStore,
    metrics: WorkerMetrics,
    *,
    writer: Writer,
    group_instance_id: str | None = None,
) -> faust.App:
    """The faust app whose agent consumes posts; outputs go through ``writer`` (our own producer, see
    :func:`make_producer`), not faust's, so that a batch's records go out as a few record batches."""
    log = get_logger("moderation.worker", worker_id=service.worker_id)
    datadir = Path(settings.cache_dir) / "faust" / settings.group_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group_id,
        broker=faust_broker_url(settings.bootstrap_servers),
        broker_credentials=broker_credentials(settings),
        autodiscover=False,
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_interval=settings.max_poll_interval_ms / 1000,
        broker_commit_every=max(settings.max_batch, 100),
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_ms / 5000),
        consumer_group_instance_id=group_instance_id,
        consumer_metadata_max_age_ms=settings.metadata_max_age_ms,
        producer_metadata_max_age_ms=settings.metadata_max_age_ms,
        producer_acks=-1,
        producer_linger_ms=5,
        # room for the largest record we build (emit bounds them to max_record_bytes) plus framing
        producer_max_request_size=max(settings.max_record_bytes + 65_536, 1_048_576),
        stream_buffer_maxsize=max(4 * settings.max_batch, 4096),
        stream_wait_empty=False,
        worker_redirect_stdouts=False,
    )
    posts = app.topic(
        settings.input_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


    committer = Committer(lambda: app.consumer.commit(), log)

    def fatal(exc: BaseException) -> None:
        """A system failure (broker, model): report not-live at once and make sure the process ends."""
        reason = f"{type(exc).__name__}: {exc}"
        service.readiness.fatal = reason
        log.critical("batch_failed", error=str(exc), error_type=type(exc).__name__)
        exit_after(settings.shutdown_grace_s, log, reason)

    @app.agent(posts, concurrency=1)  # type: ignore[arg-type]  # noack_take lives on Stream, not StreamT
    async def moderate(stream: faust.Stream) -> None:
        async for events in stream.noack_take(settings.max_batch, within=settings.max_wait_ms / 1000):
            if service.draining:
                continue  # left un-acked: consumed again after the restart
            received = time.time_ns() // 1_000_000
            messages = [
                Message(
                    value=ev.message.value,
                    key=ev.message.key,
                    origin=Origin(
                        ev.message.topic,
                        ev.message.partition,
                        ev.message.offset,
                        int(ev.message.timestamp * 1000),
                    ),
                    received_ms=received,
                )
                for ev in events
            ]
            try:
                await service.handle(messages, writer)
            except Exception as exc:
                fatal(exc)
                await app.crash(exc)
                return
            for ev in events:
                await stream.ack(ev)
            committer.request()

    @app.task
    async def commit_after_batches() -> None:
        await committer.run()

    @app.timer(settings.policy_reload_s)
    async def reload_policy() -> None:
        check_policy(policies, metrics, log)

    lag_series: set[tuple[str, str]] = set()

    @app.timer(5.0)
    async def report_lag() -> None:
        suppressor = repeat_suppressor()
        if suppressor is not None:
            suppressor.flush(log.warning)
        consumer = app.consumer
        held = set()
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            # lag as KEDA sees it: log end − committed offset (fetch position until the first commit)
            committed = getattr(consumer, "_committed_offset", {}).get(tp)
            position = committed if committed is not None else await consumer.position(tp)
            if highwater is not None and position is not None:
                labels = (tp.topic, str(tp.partition))
                metrics.consumer_lag.labels(*labels).set(max(0, highwater - position))
                held.add(labels)
        # a partition that moved to another worker is reported by that worker now: drop our stale series,
        # or summing lag over the fleet would count it twice
        for labels in lag_series - held:
            with contextlib.suppress(KeyError):
                metrics.consumer_lag.remove(*labels)
        lag_series.clear()
        lag_series.update(held)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalance(sender: Any, **_: Any) -> None:
        parts = sorted(f"{tp.topic}/{tp.partition}" for tp in app.consumer.assignment())
        log.info("partitions_assigned", partitions=parts)

    def assigned_partitions() -> int:
        try:
            return sum(1 for tp in app.consumer.assignment() if tp.topic == settings.input_topic)
        except Exception:  # no consumer yet
            return 0

    service.readiness.partitions = assigned_partitions
    service.readiness.stalled = service.stalled_for

    return app


def check_policy(policies: PolicyStore, metrics: WorkerMetrics, log: Any) -> None:
    changed, error = policies.reload_if_changed()
    if error:
        metrics.policy_reloads.labels("rejected").inc()
        metrics.policy_file_rejected.set(1)
        log.error("policy_rejected", error=error)
    elif changed:
        metrics.policy_reloads.labels("loaded").inc()
        metrics.policy_file_rejected.set(0)
        metrics.policy_info.info({"version": policies.policy.version})
        log.info("policy_loaded", version=policies.policy.version)


class GracefulWorker(faust.Worker):
    """SIGTERM/SIGINT: stop taking batches, finish the one in flight, commit, then stop faust."""

    def __init__(
        self,
        app: faust.App,
        service: ModerationService,
        grace_s: float,
        producer: AIOKafkaProducer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.spinner = None  # faust's terminal spinner writes escape codes into JSON log streams
        self.service = service
        self.producer = producer
        self.grace_s = grace_s
        self._draining_task: asyncio.Future[None] | None = None

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.producer is not None:  # everything committed was acknowledged already: flushing is a courtesy
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), 10)

    def _on_sigterm(self) -> None:
        self._drain(signal.SIGTERM)

    def _on_sigint(self) -> None:
        self._drain(signal.SIGINT)

    def _drain(self, sig: signal.Signals) -> None:
        if self._draining_task is None:
            self._draining_task = asyncio.ensure_future(self._drain_then_stop(sig), loop=self.loop)

    async def _drain_then_stop(self, sig: signal.Signals) -> None:
        log = get_logger("moderation.worker", worker_id=self.service.worker_id)
        log.info("shutdown_requested", signal=sig.name, grace_s=self.grace_s)
        self.service.start_draining()
        try:
            await asyncio.wait_for(self.service.idle.wait(), self.grace_s * 0.8)
            await asyncio.wait_for(self.app.consumer.commit(), max(1.0, self.grace_s * 0.2))
            log.info("drained", batches=self.service.batches)
        except TimeoutError:
            log.warning("drain_timeout", grace_s=self.grace_s)
        except Exception as exc:  # committing is best effort: un-committed work is redone
            log.warning("drain_commit_failed", error=str(exc))
        self._schedule_shutdown(sig)
