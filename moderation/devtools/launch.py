"""Start real ``moderation worker`` processes locally — for the demo, benchmarks, load tests and tests.

A worker is started exactly as Kubernetes starts it (a process configured by ``MODERATION_*``
environment variables) and judged ready the way Kubernetes judges it (``/readyz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from moderation.core.errors import BrokerError, ModerationError

if TYPE_CHECKING:
    from rich.console import Console

    from moderation.core.settings import Settings


OUTPUTS = ("decisions", "allowed", "review", "blocked", "llm-review", "dlq")
"""The worker's output topics, by the short names the tests, the demo tools and the benchmarks use."""

_TOPIC_SETTINGS = {
    "posts": "MODERATION_INPUT_TOPIC",
    "decisions": "MODERATION_DECISIONS_TOPIC",
    "allowed": "MODERATION_ALLOWED_TOPIC",
    "review": "MODERATION_REVIEW_TOPIC",
    "blocked": "MODERATION_BLOCKED_TOPIC",
    "llm-review": "MODERATION_LLM_REVIEW_TOPIC",
    "dlq": "MODERATION_DLQ_TOPIC",
}


def topic_env(bootstrap: str, topics: Mapping[str, str], group_id: str) -> dict[str, str]:
    """Worker environment for a run on its own topics (``topics``: short name → topic, incl. ``posts``)."""
    return {
        "MODERATION_BOOTSTRAP_SERVERS": bootstrap,
        "MODERATION_GROUP_ID": group_id,
        **{_TOPIC_SETTINGS[name]: topic for name, topic in topics.items()},
    }


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, then wait; SIGKILL if it outlasts ``timeout_s``. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """One ``moderation worker`` subprocess with its own HTTP port and log file."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        log_path: Path,
        http_port: int | None = None,
        module: Sequence[str] = ("moderation.cli", "worker"),
        source: Path | None = None,
    ) -> None:
        """``module``: what ``python -m`` runs (benchmarks start a worker with a free scorer this way);
        ``source``: another checkout of the project to run instead of this one (a benchmark's baseline)."""
        self.name = name
        self.http_port = http_port or free_port()
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {
            **os.environ,
            "MODERATION_LOG_FORMAT": "json",
            "MODERATION_WORKER_ID": name,
            **env,
            "MODERATION_HTTP_PORT": str(self.http_port),
        }
        if source is not None:
            full_env["PYTHONPATH"] = str(source)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *module],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=source,
            )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str, timeout_s: float = 3) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout_s) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ModerationError(
                    f"worker {self.name} exited during start-up (code {self.proc.returncode}):\n{self.log_tail()}"
                )
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise ModerationError(f"worker {self.name} was not ready after {timeout_s:.0f}s; log: {self.log_path}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_lines(self) -> list[bytes]:
        return [line for line in self.log_path.read_bytes().splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        """The worker's JSON log events, in order (lines that are not JSON objects are skipped)."""
        return [orjson.loads(line) for line in self.log_lines() if line.startswith(b"{")]

    def terminate(self, timeout_s: float = 40) -> int:
        """SIGTERM, then wait; SIGKILL if it outlasts ``timeout_s`` (and return its code)."""
        return stop_process(self.proc, timeout_s)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


async def create_topics(
    bootstrap: str,
    names: list[str],
    partitions: int,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 30,
) -> None:
    """Create ``names`` (``config``: topic configs for all of them) and wait until every partition has a
    leader, since CreateTopics returns before that and a producer started at once would fail."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        topics = [NewTopic(t, partitions, 1, topic_configs=dict(config or {})) for t in names]
        await asyncio.wait_for(admin.create_topics(topics), timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:
            described = await asyncio.wait_for(admin.describe_topics(names), timeout_s)
            if all(d["error_code"] == 0 and all(p["leader"] >= 0 for p in d["partitions"]) for d in described):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"topics {names} still have partitions without a leader after {timeout_s:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


@contextlib.contextmanager
def kafka_broker(settings: Settings, console: Console | None = None) -> Iterator[str]:
    """Bootstrap address of the broker to run against, for the demo, load tests and benchmarks.

    The rule every process follows (:mod:`moderation.core.bootstrap`), except that where no broker is
    named these commands start the project's local one (in the state dir) and stop it on exit: an
    explicitly set ``MODERATION_BOOTSTRAP_SERVERS`` must answer and is used as is; else the local broker
    of the state file, reused if it runs, else started here. Where it connected and why is printed.
    """
    from moderation.core.bootstrap import resolve_bootstrap
    from moderation.core.settings import parse_host_port
    from moderation.devtools.broker import LocalKafka, probe

    say = console.print if console is not None else print
    if settings.bootstrap_servers.strip():
        where = resolve_bootstrap(settings)
        host, port = parse_host_port(where.servers)
        if not probe.is_ready(host, port, timeout_s=5.0):
            raise BrokerError(f"MODERATION_BOOTSTRAP_SERVERS={where.servers} does not answer")
        say(f"kafka: {where.describe()}")
        yield where.servers
        return
    kafka = LocalKafka(settings, console)
    up = kafka.up()
    how = "started here, stopped at the end" if up.started else "already running"
    say(f"kafka: bootstrap={up.state.bootstrap} source=state_file:{kafka.paths.state_file} ({how})")
    try:
        yield up.state.bootstrap
    finally:
        if up.started:
            kafka.down()
