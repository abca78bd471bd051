"""/metrics, /healthz and /readyz on one small aiohttp server inside the worker's event loop.

Serving health from the same loop as the agent is deliberate: if the loop is blocked, /healthz stops
answering and Kubernetes restarts the pod.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HasRegistry(Protocol):
    """Any process's metrics object (the worker's, the review tier's): /metrics serves its registry."""

    registry: CollectorRegistry


ReadyCheck = Callable[[], tuple[bool, dict[str, Any]]]


def _none() -> int:
    return 0


def _not_stalled() -> float:
    return 0.0


@dataclass
class Readiness:
    """What /readyz and /healthz report.

    Ready: verified models, at least one partition of the input topic held right now (not merely "a
    rebalance once completed": a deleted topic or a group with more members than partitions leaves a
    worker with nothing to consume), no drain under way, no fatal error.
    Live: no fatal error and no batch running past its own timeout. A worker that cannot make progress
    fails its liveness probe, so Kubernetes restarts it.
    """

    models_loaded: bool = False
    provider: str | None = None
    draining: bool = False
    fatal: str | None = None  # set once, by the first system failure; the process is on its way out
    partitions: Callable[[], int] = field(default=_none, repr=False)
    stalled: Callable[[], float] = field(default=_not_stalled, repr=False)  # seconds past the batch timeout

    def check(self) -> tuple[bool, dict[str, Any]]:
        held = self.partitions()
        ok = self.models_loaded and held > 0 and not self.draining and self.fatal is None
        return ok, {
            "models_loaded": self.models_loaded,
            "provider": self.provider,
            "assigned_partitions": held,
            "draining": self.draining,
            "fatal": self.fatal,
        }

    def live(self) -> tuple[bool, dict[str, Any]]:
        overdue = self.stalled()
        ok = self.fatal is None and overdue <= 0
        return ok, {"status": "ok" if ok else "failing", "fatal": self.fatal, "batch_overdue_s": round(overdue, 1)}


def _always_live() -> tuple[bool, dict[str, Any]]:
    return True, {"status": "ok"}


def build_http_app(metrics: HasRegistry, ready: ReadyCheck, live: ReadyCheck = _always_live) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, detail = live()
        return web.json_response(detail, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, detail = ready()
        return web.json_response({"ready": ok, **detail}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_http(app: web.Application, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
