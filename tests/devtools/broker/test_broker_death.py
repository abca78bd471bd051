"""A broker that dies under a test makes the test fail with a clear error within its timeouts, never hang."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from rich.console import Console

from moderation.core.settings import Settings
from moderation.devtools.broker import LocalKafka
from moderation.devtools.broker.local import free_port
from tests.worker.harness import produce, read_topic

pytestmark = pytest.mark.kafka


async def test_killed_broker_fails_reads_and_writes_with_a_clear_error(tmp_path: Path) -> None:
    kafka = LocalKafka(Settings(kafka_state_dir=tmp_path / "state"), console=Console(file=io.StringIO()))
    up = kafka.up(port=free_port())
    try:
        bootstrap = up.state.bootstrap
        await produce(bootstrap, "doomed", ((None, b"{}") for _ in range(50)))

        # a reader waiting for records that will never come, then the broker dies under it
        reader = asyncio.create_task(read_topic(bootstrap, "doomed", expect=100, timeout_s=8, strict=True))
        await asyncio.sleep(2)
        os.kill(up.state.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises((TimeoutError, ConnectionError), match=r"doomed: .*50 of 100 records.*broker still up"):
            await reader

        # and anything started afterwards fails at once, naming the address it could not reach
        with pytest.raises(KafkaConnectionError, match=f"Unable to bootstrap from .*{up.state.port}"):
            await produce(bootstrap, "doomed", [(None, b"{}")])
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            await read_topic(bootstrap, "doomed", expect=1, timeout_s=5)
        assert time.monotonic() - started < 60
    finally:
        kafka.down()
