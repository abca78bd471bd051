"""``moderation worker``: start-up order matters for Kubernetes probes.

1. Settings validated; invalid → one clear log line, exit 2.
2. HTTP server first, so /healthz answers and /readyz says "not ready" while models load; a port in
   use → exit 2.
3. Models and policy, verified; any problem → a clear log line and exit 2 (fail fast).
4. Topics ensured; an unreachable broker is retried with backoff for MODERATION_STARTUP_TIMEOUT_S, then
   exit 3; refused credentials are not retried (exit 3 at once, naming the settings to check).
5. The faust worker runs until SIGTERM (graceful drain, exit 0) or a fatal error (exit 1, promptly).

Exit codes: 0 stopped on request · 1 fatal error while running · 2 bad configuration, model or
policy · 3 the broker could not be reached or refused us.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from moderation.core.errors import BrokerError, ModerationError
from moderation.core.logs import get_logger
from moderation.core.process import EXIT_BROKER, EXIT_CONFIG, EXIT_FATAL, settings_for_process
from moderation.core.settings import Settings
from moderation.pipeline.batch import Pipeline
from moderation.pipeline.emit import Topics
from moderation.pipeline.infer import Scorer
from moderation.pipeline.policy import PolicyStore
from moderation.worker import security
from moderation.worker.app import (
    GracefulWorker,
    Input,
    check_policy,
    create_app,
    default_worker_id,
    ensure_topics,
    make_producer,
)
from moderation.worker.http import Readiness, build_http_app, start_http
from moderation.worker.identity import group_instance_id
from moderation.worker.metrics import WorkerMetrics
from moderation.worker.produce import BatchWriter
from moderation.worker.service import ModerationService


class DescribedScorer(Scorer, Protocol):
    """A scorer that can say what it serves (name, version, variant, provider, labels)."""

    def info(self) -> dict[str, Any]: ...


ScorerFactory = Callable[[Settings], DescribedScorer]



def run_worker(args: argparse.Namespace | None = None) -> int:
    settings = settings_for_process("moderation.worker")
    if settings is None:
        return EXIT_CONFIG
    processes = int(getattr(args, "processes", 1) or 1)
    if processes < 1:
        get_logger("moderation.worker").critical("startup_failed", error="--processes must be at least 1")
        return EXIT_CONFIG
    if processes > 1:
        from moderation.worker.supervisor import run_processes

        return run_processes(settings, processes)
    return serve(settings)


def serve(settings: Settings, scorer_factory: ScorerFactory | None = None) -> int:
    """Run one worker until stopped; ``scorer_factory`` replaces the ONNX engine (benchmarks only: the
    ``moderation worker`` command never passes one, so no setting can select another scorer)."""
    worker_id = settings.worker_id or default_worker_id()
    log = get_logger("moderation.worker", worker_id=worker_id)
    metrics = WorkerMetrics()
    readiness = Readiness()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    http = build_http_app(metrics, readiness.check, readiness.live)
    try:
        runner = loop.run_until_complete(start_http(http, settings.http_port, settings.http_host))
    except OSError as exc:
        log.critical(
            "startup_failed",
            error=f"cannot serve HTTP on {settings.http_host}:{settings.http_port} ({exc.strerror or exc}); "
            "free the port or set MODERATION_HTTP_PORT / MODERATION_HTTP_HOST",
            error_type=type(exc).__name__,
        )
        return EXIT_CONFIG
    log.info(
        "starting", http=f"{settings.http_host}:{settings.http_port}", bootstrap=settings.bootstrap_servers
    )
    slot_lock = None
    try:
        service, policies = loop.run_until_complete(_load(settings, metrics, worker_id, readiness, scorer_factory))
        topics = [settings.input_topic, *Topics.from_settings(settings).all()]
        loop.run_until_complete(
            retry_broker(lambda: ensure_topics(settings, topics), settings, log)
        )
        instance_id, slot_lock = group_instance_id(
            settings.group_instance_id, settings.worker_id, settings.group_id, settings.cache_dir / "slots"
        )
        producer = loop.run_until_complete(_start_producer(settings, log))
    except (ModerationError, RuntimeError) as exc:
        code = EXIT_BROKER if isinstance(exc, BrokerError) else EXIT_CONFIG
        log.critical("startup_failed", error=str(exc), error_type=type(exc).__name__, exit_code=code)
        loop.run_until_complete(runner.cleanup())
        return code
    readiness.models_loaded, readiness.provider = True, service.model_info["provider"]
    inputs = Input()
    app = create_app(
        settings,
        service,
        policies,
        metrics,
        writer=BatchWriter(producer),
        inputs=inputs,
        group_instance_id=instance_id,
    )
    log.info("joining_group", group=settings.group_id, group_instance_id=instance_id)
    loop.add_signal_handler(signal.SIGHUP, check_policy, policies, metrics, log)
    worker = GracefulWorker(
        app,
        service,
        settings.shutdown_grace_s,
        producer,
        inputs,
        loop=loop,
        loglevel=settings.log_level.upper(),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    except Exception as exc:
        log.critical("worker_crashed", error=str(exc), error_type=type(exc).__name__)
        code = EXIT_FATAL
    finally:
        service.close()
        if slot_lock is not None:
            slot_lock.release()
    if (app.crash_reason is not None or readiness.fatal is not None) and code == 0:
        code = EXIT_FATAL
    service.log_summary(final=True)
    log.info("stopped", exit_code=code, batches=service.batches)
    return code


async def _start_producer(settings: Settings, log: Any) -> AIOKafkaProducer:
    producer = make_producer(settings)  # aiokafka binds a client to the running loop: create it inside it
    await retry_broker(producer.start, settings, log)
    return producer


async def retry_broker(
    attempt: Callable[[], Awaitable[None]],
    settings: Settings,
    log: Any,
    *,
    first_delay_s: float = 0.5,
    max_delay_s: float = 10.0,
) -> None:
    """Retry ``attempt`` while the broker is unreachable (a broker restarting with us is normal), with
    exponential backoff, for at most MODERATION_STARTUP_TIMEOUT_S; then a :class:`BrokerError` saying what to check.
    Errors that waiting cannot fix (refused credentials, bad configuration) are raised at once."""
    timeout_s = settings.startup_timeout_s
    deadline = time.monotonic() + timeout_s
    delay = first_delay_s
    tries = 0
    while True:
        tries += 1
        try:
            await attempt()
            return
        except ModerationError:
            raise
        except Exception as exc:
            auth = security.describe_auth_error(exc, settings)
            if auth is not None:
                raise BrokerError(auth) from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(
                    f"Kafka at {settings.bootstrap_servers} was not reachable for {timeout_s:g} s ({tries} tries; last "
                    f"error {type(exc).__name__}: {exc}); check MODERATION_BOOTSTRAP_SERVERS and that the broker is "
                    "up (locally: `moderation kafka status`)"
                ) from None
            wait = min(delay, max_delay_s, left)
            log.warning(
                "broker_unreachable", attempt=tries, retry_in_s=round(wait, 1), error=f"{type(exc).__name__}: {exc}"
            )
            await asyncio.sleep(wait)
            delay *= 2


async def _load(
    settings: Settings,
    metrics: WorkerMetrics,
    worker_id: str,
    readiness: Readiness,
    scorer_factory: ScorerFactory | None = None,
) -> tuple[ModerationService, PolicyStore]:
    from moderation.pipeline.infer import (  # imported here: ORT import is slow and not needed for --help
        OnnxEngine,
        model_record,
    )

    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(None, scorer_factory or OnnxEngine.from_settings, settings)
    info = engine.info()
    policies = PolicyStore.from_settings(settings, available_labels=info["labels"])
    model = model_record(info)
    metrics.model_info.info({k: str(v) for k, v in model.items()})
    metrics.policy_info.info({"version": policies.policy.version})
    metrics.configure_drift(settings.model_dir, info["labels"], get_logger("moderation.worker", worker_id=worker_id))
    pipeline = Pipeline.from_settings(engine, policies, settings)
    service = ModerationService(
        pipeline,
        Topics.from_settings(settings),
        metrics,
        model,
        worker_id=worker_id,
        batch_timeout_s=settings.batch_timeout_s,
        inference_threads=settings.inference_threads,
        readiness=readiness,
        max_record_bytes=settings.max_record_bytes,
    )
    get_logger("moderation.worker").info("models_loaded", **model, policy=policies.policy.version)
    return service, policies
