"""``moderation worker``: start-up order matters for Kubernetes probes.

1. HTTP server first, so /healthz answers and /readyz says "not ready" while models load.
2. Models and policy, verified; any problem → a clear log line and exit code 2 (fail fast).
3. Topics ensured, then the faust worker runs until SIGTERM (graceful drain, exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from moderation.emit import Topics
from moderation.errors import ModerationError
from moderation.logs import configure_logging, get_logger
from moderation.metrics import WorkerMetrics
from moderation.pipeline import Pipeline
from moderation.policy import PolicyStore
from moderation.settings import Settings, load_settings
from moderation.worker.app import GracefulWorker, check_policy, create_app, default_worker_id, ensure_topics
from moderation.worker.http import Readiness, build_http_app, start_http
from moderation.worker.service import ModerationService


def run_worker(args: argparse.Namespace | None = None) -> int:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level, log_post_text=settings.log_post_text)
    return serve(settings)


def serve(settings: Settings) -> int:
    worker_id = settings.worker_id or default_worker_id()
    log = get_logger("moderation.worker", worker_id=worker_id)
    metrics = WorkerMetrics()
    readiness = Readiness()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runner = loop.run_until_complete(start_http(build_http_app(metrics, readiness.check), settings.http_port))
    log.info("starting", http_port=settings.http_port, bootstrap=settings.bootstrap_servers)
    try:
        service, policies = loop.run_until_complete(_load(settings, metrics, worker_id, readiness))
        loop.run_until_complete(ensure_topics(settings, [settings.input_topic, *Topics.from_settings(settings).all()]))
    except ModerationError as exc:
        log.critical("startup_failed", error=str(exc), error_type=type(exc).__name__)
        loop.run_until_complete(runner.cleanup())
        return 2
    except Exception as exc:  # e.g. broker unreachable while ensuring topics
        log.critical("startup_failed", error=str(exc), error_type=type(exc).__name__)
        loop.run_until_complete(runner.cleanup())
        return 3
    readiness.models_loaded, readiness.provider = True, service.model_info["provider"]
    app = create_app(settings, service, policies, metrics)
    loop.add_signal_handler(signal.SIGHUP, check_policy, policies, metrics, log)
    worker = GracefulWorker(
        app,
        service,
        settings.shutdown_grace_s,
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
        code = 1
    finally:
        service.close()
    if app.crash_reason is not None and code == 0:
        code = 1
    log.info("stopped", exit_code=code, batches=service.batches)
    return code


async def _load(
    settings: Settings, metrics: WorkerMetrics, worker_id: str, readiness: Readiness
) -> tuple[ModerationService, PolicyStore]:
    from moderation.infer import OnnxEngine  # imported here: ORT import is slow and not needed for --help

    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(None, OnnxEngine.from_settings, settings)
    info = engine.info()
    policies = PolicyStore(settings.policy_file, available_labels=info["labels"])
    model = {k: info[k] for k in ("name", "version", "variant", "provider")}
    metrics.model_info.info({k: str(v) for k, v in model.items()})
    metrics.policy_info.info({"version": policies.policy.version})
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
    )
    get_logger("moderation.worker").info("models_loaded", **model, policy=policies.policy.version)
    return service, policies
