"""The scoring API in this process, on a real socket, with a real (tiny) model: what tests/api/test_server.py uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from moderation.api.cli import Process
from moderation.api.server import ApiService, build_api_app
from moderation.core.logs import get_logger
from moderation.core.settings import Settings
from moderation.worker.http import build_http_app

KEY = "test-key-0001"


@dataclass
class Api:
    proc: Process
    service: ApiService
    server: TestServer
    probes: TestServer
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def post(
        self, path: str, body: Any = None, *, raw: bytes | None = None, key: str | None = KEY, **kw: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        data = raw if raw is not None else (None if body is None else __import__("orjson").dumps(body))
        params = {"key": key} if key else {}
        async with self.http.post(self.url(path), data=data, params=params, **kw) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    async def analyze(self, text: str, attributes: Any = None, **fields: Any) -> tuple[int, Any, Mapping[str, str]]:
        body = {"comment": {"text": text}, "requestedAttributes": attributes or {"TOXICITY": {}}, **fields}
        return await self.post("/v1alpha1/comments:analyze", body)


async def start_api(settings: Settings) -> Api:
    proc = Process(settings, get_logger("moderation.api.test"))
    proc.service = service = await proc.load()
    service.batcher.start()
    server = TestServer(build_api_app(service))
    await server.start_server()
    proc.runner = server.runner
    probes = TestServer(build_http_app(proc.metrics, proc.ready, proc.live))
    await probes.start_server()
    return Api(proc, service, server, probes, aiohttp.ClientSession())


@pytest.fixture
def api_settings(tiny_model_dir: Path, tiny_policy_file: Path) -> dict[str, Any]:
    """Settings of an in-process API; a test adds or changes fields before calling ``start_api``."""
    return {
        "model_dir": tiny_model_dir,
        "policy_file": tiny_policy_file,
        "api_keys": f"tester:{KEY}",
        "dedupe_cache_size": 0,
    }


@pytest.fixture
async def api(api_settings: dict[str, Any]) -> AsyncIterator[Api]:
    running = await start_api(Settings(**api_settings))
    yield running
    await running.http.close()
    await running.service.batcher.stop()
    await running.server.close()
    await running.probes.close()
    running.proc.executor.shutdown(wait=False)
