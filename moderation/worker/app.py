"""The worker process: a faust app that runs the batch consumer, the committer and the timers.

faust provides the process (start-up, signals, a clean stop, timers, a crash that ends it); the posts
are consumed by :mod:`moderation.worker.consume`, a batch at a time with aiokafka under the app, not by
faust's per-event stream (which cost more than everything else of a worker with a fast model), and
outputs go out through our own producer (:mod:`moderation.worker.produce`). faust's own Kafka consumer,
producer and web server are switched off (:class:`WorkerBoot`), so the app never joins the group itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError, TopicAlreadyExistsError
from faust.app.base import BootStrategy

from moderation.core.logs import get_logger, repeat_suppressor
from moderation.core.settings import Settings
from moderation.pipeline.policy import PolicyStore
from moderation.worker.consume import OffsetCommitter, SettleBeforeRebalance, consume, make_consumer
from moderation.worker.metrics import LagGauge, WorkerMetrics
from moderation.worker.produce import Writer
from moderation.worker.security import check_auth, client_kwargs
from moderation.worker.service import ModerationService
from moderation.worker.summary import BrokerWatch


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


class WorkerBoot(BootStrategy):
    """The services faust starts for the worker: sensors, the agent manager, timers and tasks — not its
    Kafka consumer (it would join the group with a subscription of its own), producer or web server."""

    enable_kafka_consumer = False
    enable_kafka_producer = False
    enable_web = False


class WorkerApp(faust.App):
    BootStrategy = WorkerBoot


class Input:
    """The consumer and its committer once the app runs (aiokafka binds clients to the running loop)."""

    def __init__(self) -> None:
        self.consumer: AIOKafkaConsumer | None = None
        self.committer: OffsetCommitter | None = None

    def assigned(self, topic: str) -> int:
        if self.consumer is None:
            return 0
        return sum(1 for tp in self.consumer.assignment() if tp.topic == topic)

    async def flush(self) -> None:
        if self.committer is not None:
            await self.committer.flush()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


def create_app(
    settings: Settings,
    service: ModerationService,
    policies: PolicyStore,
    metrics: WorkerMetrics,
    *,
    writer: Writer,
    inputs: Input,
    group_instance_id: str | None = None,
) -> faust.App:
    """The worker's app: one task consumes posts in batches (see :mod:`moderation.worker.consume`), one
    commits their offsets, timers reload the policy and report lag."""
    log = get_logger("moderation.worker", worker_id=service.worker_id)
    datadir = Path(settings.cache_dir) / "faust" / settings.group_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        f"{settings.group_id}-app",  # faust's own consumer is off; this id never joins a group
        broker=faust_broker_url(settings.bootstrap_servers),
        autodiscover=False,
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        worker_redirect_stdouts=False,
    )

    def fatal(exc: BaseException) -> None:
        """A system failure (broker, model): report not-live at once and make sure the process ends."""
        reason = f"{type(exc).__name__}: {exc}"
        service.readiness.fatal = reason
        log.critical("batch_failed", error=str(exc), error_type=type(exc).__name__)
        exit_after(settings.shutdown_grace_s, log, reason)

    @app.task
    async def moderate() -> None:
        consumer = make_consumer(settings, group_instance_id)
        committer = OffsetCommitter(consumer, log)
        consumer.subscribe([settings.input_topic], listener=SettleBeforeRebalance(service, committer, log))
        inputs.consumer, inputs.committer = consumer, committer
        try:
            await consumer.start()
            committing = asyncio.ensure_future(committer.run())
            try:
                await consume(consumer, committer, service, writer, settings.max_batch, settings.max_wait_ms)
            finally:
                committing.cancel()
        except (asyncio.CancelledError, ConsumerStoppedError):
            return  # shutting down: the worker stopped the consumer after the drain
        except Exception as exc:
            fatal(exc)
            await app.crash(exc)

    @app.timer(settings.policy_reload_s)
    async def reload_policy() -> None:
        check_policy(policies, metrics, log)

    lag = LagGauge(metrics.consumer_lag)
    broker = BrokerWatch()

    @app.timer(5.0)
    async def report_lag() -> None:
        suppressor = repeat_suppressor()
        if suppressor is not None:
            suppressor.flush(log.warning)
        if inputs.consumer is not None and inputs.committer is not None:
            await lag.report(inputs.consumer, inputs.committer.committed)
            await watch_broker(inputs.consumer, broker, log)

    @app.timer(settings.log_summary_s)
    async def log_summary() -> None:
        service.log_summary()

    service.readiness.partitions = lambda: inputs.assigned(settings.input_topic)
    service.readiness.stalled = service.stalled_for
    return app


async def watch_broker(consumer: AIOKafkaConsumer, watch: BrokerWatch, log: Any, timeout_s: float = 4.0) -> None:
    """Probe the broker (a metadata request) and log when it is lost and when it is back."""
    try:
        await asyncio.wait_for(consumer.topics(), timeout_s)
        change = watch.seen(True)
    except Exception as exc:  # any failure to answer is "not reachable" here
        change = watch.seen(False, f"{type(exc).__name__}: {exc}")
    if change is not None:
        event, fields = change
        (log.warning if event == "broker_lost" else log.info)(event, **fields)


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
        inputs: Input | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.spinner = None  # faust's terminal spinner writes escape codes into JSON log streams
        self.service = service
        self.producer = producer
        self.inputs = inputs
        self.grace_s = grace_s
        self._draining_task: asyncio.Future[None] | None = None

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.inputs is not None:  # with static membership this does not leave the group: a restart resumes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.inputs.stop(), 10)
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
            if self.inputs is not None:
                await asyncio.wait_for(self.inputs.flush(), max(1.0, self.grace_s * 0.2))
            log.info("drained", batches=self.service.batches)
        except TimeoutError:
            log.warning("drain_timeout", grace_s=self.grace_s)
        except Exception as exc:  # committing is best effort: un-committed work is redone
            log.warning("drain_commit_failed", error=str(exc))
        self._schedule_shutdown(sig)
