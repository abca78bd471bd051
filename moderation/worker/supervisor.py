"""``moderation worker --processes N``: N worker processes in one pod, e.g. sharing one GPU.

One Python process cannot keep a GPU busy: the path around the model (consuming, decoding, policy,
records, producing) runs on one core (BENCHMARKS.md, "the hot path without the model"). N processes,
each with its own ONNX Runtime session, feed the same GPU; they join the consumer group as N members.

The supervisor is deliberately small:
- child ``i`` is ``moderation worker`` with ``MODERATION_WORKER_ID=<id>-p<i>`` (so its static group
  membership id is stable across its restarts) and ``MODERATION_HTTP_PORT=<port>+1+i``;
- it serves the pod's probes on ``MODERATION_HTTP_PORT``: ``/healthz`` is 200 while every child is
  alive and live, ``/readyz`` while every child is ready, and ``/metrics`` is every child's metrics
  with a ``process`` label added, so one scrape sees the pod;
- a child that exits is restarted with backoff (as Kubernetes would restart a container), except for
  a configuration or broker failure at start-up (exit 2 or 3): waiting cannot fix those, so the
  supervisor stops everything and exits with that code;
- SIGTERM/SIGINT go to every child (each drains its batch and commits); children still running after
  the grace period are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from moderation.core.logs import get_logger
from moderation.core.settings import Settings

EXIT_CONFIG, EXIT_BROKER = 2, 3
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?(\s.*)$")


def label_samples(exposition: str, process: int, seen_meta: set[str]) -> list[str]:
    """Prometheus text lines of one child with ``process="i"`` added to every sample; HELP/TYPE lines
    only the first time they appear (the pod's output must name each family once)."""
    out: list[str] = []
    for line in exposition.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            if line not in seen_meta:
                seen_meta.add(line)
                out.append(line)
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, _, labels, rest = match.groups()
        inner = f'process="{process}"' + (f",{labels}" if labels else "")
        out.append(f"{name}{{{inner}}}{rest}")
    return out


@dataclass
class Child:
    index: int
    env: dict[str, str]
    http_port: int
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "moderation", "worker", env=self.env)
        self.started_at = time.monotonic()


class Supervisor:
    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        base_id = settings.worker_id or socket.gethostname()
        self.log = get_logger("moderation.supervisor", worker_id=base_id)
        self.children = [
            Child(
                i,
                {
                    **os.environ,
                    "MODERATION_BOOTSTRAP_SERVERS": settings.bootstrap_servers,  # the broker we resolved
                    "MODERATION_WORKER_ID": f"{base_id}-p{i}",
                    "MODERATION_HTTP_PORT": str(settings.http_port + 1 + i),
                    "MODERATION_HTTP_HOST": "127.0.0.1",  # only the supervisor is reached from outside
                },
                settings.http_port + 1 + i,
            )
            for i in range(processes)
        ]
        self.stopping = asyncio.Event()
        self.exit_code = 0

    # --- probes and metrics, aggregated --------------------------------------------------------------

    async def _get(self, session: aiohttp.ClientSession, child: Child, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{child.http_port}{path}"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0, ""

    def http_app(self) -> web.Application:
        async def probe(request: web.Request) -> web.Response:
            path = request.path
            async with aiohttp.ClientSession() as session:
                answers = await asyncio.gather(*(self._get(session, c, path) for c in self.children))
            statuses = {f"p{c.index}": status for c, (status, _) in zip(self.children, answers, strict=True)}
            ok = all(status == 200 for status in statuses.values()) and not self.stopping.is_set()
            return web.json_response({"ok": ok, "processes": statuses}, status=200 if ok else 503)

        async def metrics(_: web.Request) -> web.Response:
            async with aiohttp.ClientSession() as session:
                answers = await asyncio.gather(*(self._get(session, c, "/metrics") for c in self.children))
            seen: set[str] = set()
            lines: list[str] = []
            for child, (status, body) in zip(self.children, answers, strict=True):
                if status == 200:
                    lines += label_samples(body, child.index, seen)
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

        app = web.Application()
        app.router.add_get("/healthz", probe)
        app.router.add_get("/readyz", probe)
        app.router.add_get("/metrics", metrics)
        return app

    # --- lifecycle -----------------------------------------------------------------------------------

    def request_stop(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            self.log.info("shutdown_requested", signal=sig.name, processes=len(self.children))
            self.stopping.set()
            for child in self.children:
                if child.proc is not None and child.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(sig)

    async def _watch(self, child: Child) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            await child.start()
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            if code in (EXIT_CONFIG, EXIT_BROKER) and child.restarts == 0:
                self.log.critical("process_failed_at_startup", process=child.index, exit_code=code)
                self.exit_code = code
                self.request_stop(signal.SIGTERM)
                return
            if time.monotonic() - child.started_at > 60:
                delay = 1.0  # it ran for a while: not a crash loop
            child.restarts += 1
            self.log.warning("process_exited", process=child.index, exit_code=code, restart_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, 30.0)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        runner = web.AppRunner(self.http_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.http_host, self.settings.http_port).start()
        self.log.info("supervising", processes=len(self.children), http_port=self.settings.http_port)
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        await self.stopping.wait()
        grace = self.settings.shutdown_grace_s + 5
        _, pending = await asyncio.wait(watchers, timeout=grace)
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                self.log.warning("process_killed_after_grace", process=child.index, grace_s=grace)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
        if pending:
            await asyncio.wait(pending, timeout=10)
        await runner.cleanup()
        codes = [c.proc.returncode for c in self.children if c.proc is not None]
        self.log.info("stopped", exit_codes=codes)
        return self.exit_code or max((c for c in codes if c and c > 0), default=0)


def run_processes(settings: Settings, processes: int) -> int:
    return asyncio.run(Supervisor(settings, processes).run())
