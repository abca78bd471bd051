"""Broker outages under a running worker, on a broker of the module's own (the shared one stays up).

- an outage while idle: a bounded log (not thousands of reconnect lines a second), and the same worker
  resumes when the broker is back;
- an outage in the middle of a batch: the batch times out, /healthz fails at once and the process
  exits promptly (it used to stay up, healthy, for minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console

from moderation.core.settings import Settings
from moderation.devtools.broker import LocalKafka
from moderation.devtools.broker.local import free_port
from tests.worker.harness import Setup, WorkerProcess, post, produce, read_topic

pytestmark = pytest.mark.kafka


class Broker:
    def __init__(self, state_dir: Path) -> None:
        self.kafka = LocalKafka(Settings(kafka_state_dir=state_dir), console=Console(file=io.StringIO()))
        self.port = free_port()
        self.pid = 0
        self.bootstrap = ""

    def start(self) -> None:
        up = self.kafka.up(port=self.port)
        self.pid, self.bootstrap = up.state.pid, up.state.bootstrap

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("outage-broker"))
    b.start()
    try:
        yield b
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(b.pid, signal.SIGCONT)
        b.kafka.down()


async def _setup(broker: Broker, tiny_model_dir: Path, tiny_policy_file: Path, workdir: Path, name: str) -> Setup:
    setup = Setup(broker.bootstrap, name, tiny_model_dir, tiny_policy_file, workdir)
    await setup.create_outputs()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), 30)
    try:
        await asyncio.wait_for(admin.create_topics([NewTopic(name, 4, 1)]), 30)
    finally:
        await admin.close()
    return setup


def _lines_between(worker: WorkerProcess, start: float, end: float) -> list[dict]:
    def at(event: dict) -> float:
        stamp = event.get("timestamp", "")
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else float("nan")

    return [event for event in worker.events() if start <= at(event) <= end]


async def test_idle_outage_logs_little_and_the_worker_resumes(
    broker: Broker, tiny_model_dir: Path, tiny_policy_file: Path, tmp_path: Path
) -> None:
    setup = await _setup(broker, tiny_model_dir, tiny_policy_file, tmp_path, "outage-idle")
    setup.extra_env["MODERATION_LOG_REPEAT_WINDOW_S"] = "10"
    worker = WorkerProcess(setup, "w-outage")
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(broker.bootstrap, setup.input_topic, [post(1, "before the outage")])
        await read_topic(broker.bootstrap, setup.topic("decisions"), expect=1, timeout_s=30)

        broker.kill()
        down_at = time.time()
        await asyncio.sleep(25)
        up_at = time.time()
        outage = _lines_between(worker, down_at, up_at)
        await asyncio.to_thread(broker.start)
        assert worker.proc.poll() is None, worker.log_tail()

        await produce(broker.bootstrap, setup.input_topic, [post(2, "after the outage")])
        decisions = await read_topic(broker.bootstrap, setup.topic("decisions"), expect=2, timeout_s=90)
        deadline = time.monotonic() + 20  # the broker is probed every 5 s
        while not any(e.get("event") == "broker_back" for e in worker.events()) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    finally:
        code = await asyncio.to_thread(worker.terminate)
    assert {r.key for r in decisions} == {b"p00001", b"p00002"}
    assert code == 0, worker.log_tail()
    states = [e for e in worker.events() if e.get("event") in ("broker_lost", "broker_back")]
    assert [e["event"] for e in states] == ["broker_lost", "broker_back"], states  # once each, not per retry
    assert states[0]["level"] == "warning" and 10 <= states[1]["down_s"] <= 60, states
    per_second = len(outage) / (up_at - down_at)
    # was 3,600-6,500 lines/s: now the first of each kind, then one summary per window
    assert per_second < 4, f"{len(outage)} log lines in {up_at - down_at:.0f} s of outage"
    summaries = [e for e in outage if e["event"] == "log_lines_suppressed" or "similar lines suppressed" in e["event"]]
    assert summaries, [e["event"] for e in outage][:20]  # repeats are counted, not hidden


async def test_outage_mid_batch_fails_liveness_and_exits_promptly(
    broker: Broker, tiny_model_dir: Path, tiny_policy_file: Path, tmp_path: Path
) -> None:
    if not broker.kafka.status().ready:
        await asyncio.to_thread(broker.start)
    setup = await _setup(broker, tiny_model_dir, tiny_policy_file, tmp_path, "outage-batch")
    # one-post batches and a backlog: the worker is certainly in the middle of a batch when the broker freezes
    setup.extra_env.update(
        {
            "MODERATION_BATCH_TIMEOUT_S": "4",
            "MODERATION_SHUTDOWN_GRACE_S": "5",
            "MODERATION_MAX_BATCH": "1",
            "MODERATION_LOG_LEVEL": "debug",  # a "batch" line per batch, to see the stream under way
        }
    )
    await produce(broker.bootstrap, setup.input_topic, [post(i, f"post {i}") for i in range(5_000)])
    worker = WorkerProcess(setup, "w-stuck")
    try:
        await asyncio.to_thread(worker.wait_ready)
        deadline = time.monotonic() + 60
        while sum(b'"event": "batch"' in line for line in worker.log_lines()) < 100:  # mid-stream
            assert time.monotonic() < deadline, worker.log_tail()
            await asyncio.sleep(0.1)
        os.kill(broker.pid, signal.SIGSTOP)  # a frozen broker: the batch's produce hangs, nothing is refused
        frozen = time.monotonic()
        saw_unhealthy = False
        while worker.proc.poll() is None and time.monotonic() - frozen < 60:
            try:
                status, body = await asyncio.to_thread(worker.get, "/healthz", 1)
                if status == 503:
                    saw_unhealthy = True
                    assert orjson.loads(body)["fatal"].startswith("BatchTimeout")
            except OSError:
                pass  # the server is already gone
            await asyncio.sleep(0.2)
        exited = time.monotonic() - frozen
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        code = await asyncio.to_thread(worker.terminate)
    assert code == 1, worker.log_tail()
    # the batch timeout (4 s) plus the grace period (5 s) plus scheduling slack; it used to be 47-108 s
    assert exited < 4 + 5 + 6, f"exited {exited:.1f} s after the broker froze"
    assert saw_unhealthy, worker.log_tail()
    names = [e.get("event") for e in worker.events()]
    assert "batch_failed" in names
