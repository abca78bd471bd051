"""``moderation serve``: the scoring API as a process, started in the worker's order (so probes mean the same).

1. Settings and API keys validated; invalid → one ``startup_failed`` line, exit 2.
2. Probes and metrics on ``MODERATION_HTTP_PORT`` first: /healthz answers, /readyz says not ready.
3. Models and policy loaded and verified (exit 2 on a problem); with ``MODERATION_API_AUDIT`` the topics
   and the producer (exit 3 when the broker cannot be reached or refuses us).
4. The API on ``MODERATION_API_PORT``; ready. The policy and the key file are re-read every
   ``MODERATION_POLICY_RELOAD_S`` and on SIGHUP.
5. SIGTERM/SIGINT: not ready, refuse new requests (503), score the queued ones, write what the audit
   queue holds, exit 0 within ``MODERATION_SHUTDOWN_GRACE_S``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from moderation.api.audit import AuditWriter
from moderation.api.batcher import Batcher
from moderation.api.keys import KeyRing
from moderation.api.metrics import ApiMetrics
from moderation.api.perspective import served_attributes
from moderation.api.server import ApiService, build_api_app
from moderation.core.errors import BrokerError, ModerationError
from moderation.core.logs import get_logger
from moderation.core.process import EXIT_BROKER, EXIT_CONFIG, settings_for_process
from moderation.core.settings import Settings
from moderation.pipeline.batch import Pipeline
from moderation.pipeline.policy import PolicyStore
from moderation.worker.app import default_worker_id, ensure_topics, make_producer
from moderation.worker.cli import retry_broker
from moderation.worker.http import build_http_app, start_http

LOGGER = "moderation.api"


class Process:
    """The server's moving parts and its state, as /readyz reports it."""

    def __init__(self, settings: Settings, log: Any) -> None:
        self.settings, self.log = settings, log
        self.metrics = ApiMetrics()
        self.keys = KeyRing.from_settings(settings)  # ConfigError → exit 2
        self.metrics.keys.set(len(self.keys.keys))
        self.server_id = settings.worker_id or default_worker_id()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="ort")
        self.service: ApiService | None = None
        self.producer: Any = None
        self.runner: web.AppRunner | None = None
        self.draining = False
        self.stopped = asyncio.Event()

    def ready(self) -> tuple[bool, dict[str, Any]]:
        loaded = self.service is not None
        ok = loaded and self.runner is not None and not self.draining
        detail: dict[str, Any] = {
            "models_loaded": loaded,
            "serving": self.runner is not None,
            "draining": self.draining,
        }
        if self.service is not None:
            detail |= {"provider": self.service.model.get("provider"), "queue_depth": self.service.batcher.depth}
        return ok, detail

    def live(self) -> tuple[bool, dict[str, Any]]:
        return True, {"status": "ok"}

    async def load(self) -> ApiService:
        from moderation.pipeline.infer import OnnxEngine, model_record  # slow import: after the probes are up

        s = self.settings
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(self.executor, OnnxEngine.from_settings, s)
        info = engine.info()
        policies = PolicyStore.from_settings(s, available_labels=info["labels"])
        pipeline = await loop.run_in_executor(self.executor, Pipeline.from_settings, engine, policies, s)
        model = model_record(info)
        self.metrics.model_info.info({k: str(v) for k, v in model.items()})
        self.metrics.policy_info.info({"version": policies.policy.version})
        batcher = Batcher(
            pipeline.run,
            self.executor,
            max_batch=s.max_batch,
            max_wait_s=s.api_max_wait_ms / 1000,
            max_queue=s.api_max_queue,
            observe=self.metrics.observe_batch,
        )
        self.metrics.queue_depth.set_function(lambda: batcher.depth)
        served = served_attributes(info["labels"])
        service = ApiService(s, batcher, self.keys, policies, served, model, self.server_id, self.metrics, self.log)
        self.log.info("models_loaded", **model, policy=policies.policy.version, attributes=sorted(served))
        return service

    async def start_audit(self, service: ApiService) -> None:
        s = self.settings
        await retry_broker(lambda: ensure_topics(s, [s.api_posts_topic, s.decisions_topic]), s, self.log)
        self.producer = make_producer(s)
        await retry_broker(self.producer.start, s, self.log)
        service.audit = AuditWriter(
            self.producer,
            posts_topic=s.api_posts_topic,
            decisions_topic=s.decisions_topic,
            model=service.model,
            server_id=self.server_id,
            metrics=self.metrics,
            log=self.log,
        )
        service.audit.start()
        self.log.info("audit_enabled", posts_topic=s.api_posts_topic, decisions_topic=s.decisions_topic)

    def reload(self) -> None:
        """Policy file and key file, when they changed (timer and SIGHUP)."""
        if self.service is None:
            return
        changed, error = self.service.policies.reload_if_changed()
        if error:
            self.metrics.policy_reloads.labels("rejected").inc()
            self.log.error("policy_rejected", error=error)
        elif changed:
            self.metrics.policy_reloads.labels("loaded").inc()
            self.metrics.policy_info.info({"version": self.service.policies.policy.version})
            self.log.info("policy_loaded", version=self.service.policies.policy.version)
        changed, error = self.keys.reload_if_changed()
        if error:
            self.metrics.key_reloads.labels("rejected").inc()
            self.log.error("api_keys_rejected", error=error)
        elif changed:
            self.metrics.key_reloads.labels("loaded").inc()
            self.metrics.keys.set(len(self.keys.keys))
            self.log.info("api_keys_loaded", keys=len(self.keys.keys))

    async def timers(self) -> None:
        reload_every, summary_every = self.settings.policy_reload_s, self.settings.log_summary_s
        loop = asyncio.get_running_loop()
        next_summary = loop.time() + summary_every
        while True:
            await asyncio.sleep(min(reload_every, summary_every))
            self.reload()
            if loop.time() >= next_summary and self.service is not None:
                next_summary = loop.time() + summary_every
                self.log.info("summary", **self.service.summary.take())

    def request_stop(self, sig: signal.Signals) -> None:
        if not self.draining:
            self.log.info("shutdown_requested", signal=sig.name, grace_s=self.settings.shutdown_grace_s)
            self.draining = True
            self.stopped.set()

    async def shutdown(self) -> None:
        grace = self.settings.shutdown_grace_s
        if self.service is not None:
            drained = await self.service.batcher.drain(grace * 0.6)
            self.log.info("drained", batches=self.service.batcher.batches, complete=drained)
        if self.runner is not None:
            await self.runner.cleanup()  # waits for the handlers in flight
        if self.service is not None:
            await self.service.batcher.stop()
            if self.service.audit is not None:
                await self.service.audit.close(grace * 0.2)
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), max(1.0, grace * 0.1))
        self.executor.shutdown(wait=False, cancel_futures=True)


def run(args: argparse.Namespace | None = None) -> int:
    settings = settings_for_process(LOGGER, post_text_in_logs=False, broker=lambda s: s.api_audit)
    if settings is None:
        return EXIT_CONFIG
    log = get_logger(LOGGER)
    try:
        proc = Process(settings, log)
    except ModerationError as exc:
        log.critical("startup_failed", error=str(exc), exit_code=EXIT_CONFIG)
        return EXIT_CONFIG
    log = proc.log = get_logger(LOGGER, worker_id=proc.server_id)
    return asyncio.run(_serve(proc))


async def _serve(proc: Process) -> int:
    s, log = proc.settings, proc.log
    try:
        probes = await start_http(build_http_app(proc.metrics, proc.ready, proc.live), s.http_port, s.http_host)
    except OSError as exc:
        log.critical(
            "startup_failed",
            error=f"cannot serve HTTP on {s.http_host}:{s.http_port} "
            f"({exc.strerror or exc}); free the port or set MODERATION_HTTP_PORT",
            exit_code=EXIT_CONFIG,
        )
        return EXIT_CONFIG
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proc.request_stop, sig)
    loop.add_signal_handler(signal.SIGHUP, proc.reload)
    log.info("starting", http=f"{s.http_host}:{s.http_port}", api=f"{s.http_host}:{s.api_port}", audit=s.api_audit)
    timers: asyncio.Task[None] | None = None
    try:
        try:
            proc.service = service = await proc.load()
            if s.api_audit:
                await proc.start_audit(service)
        except (ModerationError, RuntimeError) as exc:
            code = EXIT_BROKER if isinstance(exc, BrokerError) else EXIT_CONFIG
            log.critical("startup_failed", error=str(exc), error_type=type(exc).__name__, exit_code=code)
            return code
        service.batcher.start()
        runner = web.AppRunner(build_api_app(service), access_log=None, shutdown_timeout=s.shutdown_grace_s * 0.2)
        await runner.setup()
        try:
            await web.TCPSite(runner, s.http_host, s.api_port, backlog=1024).start()
        except OSError as exc:
            await runner.cleanup()
            log.critical(
                "startup_failed",
                error=f"cannot serve the API on {s.http_host}:{s.api_port} "
                f"({exc.strerror or exc}); free the port or set MODERATION_API_PORT",
                exit_code=EXIT_CONFIG,
            )
            return EXIT_CONFIG
        proc.runner = runner
        timers = loop.create_task(proc.timers())
        log.info(
            "serving",
            api_port=s.api_port,
            keys=len(proc.keys.keys),
            require_key=s.api_require_key,
            attributes=sorted(service.served),
        )
        await proc.stopped.wait()
        return 0
    finally:
        if timers is not None:
            timers.cancel()
        proc.draining = True
        await proc.shutdown()
        await probes.cleanup()
        log.info("stopped")
