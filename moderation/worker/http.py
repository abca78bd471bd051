"""/metrics, /healthz and /readyz on one small aiohttp server inside the worker's event loop.

Serving health from the same loop as the agent is deliberate: if the loop is blocked, /healthz stops
answering and Kubernetes restarts the pod.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from moderation.metrics import WorkerMetrics

ReadyCheck = Callable[[], tuple[bool, dict[str, Any]]]


@dataclass
class Readiness:
    """What /readyz reports: ready only with verified models, a joined group and no drain under way."""

    models_loaded: bool = False
    provider: str | None = None
    consumer_assigned: bool = False
    draining: bool = False

    def check(self) -> tuple[bool, dict[str, Any]]:
        ok = self.models_loaded and self.consumer_assigned and not self.draining
        return ok, asdict(self)


def build_http_app(metrics: WorkerMetrics, ready: ReadyCheck) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

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
