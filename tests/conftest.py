"""Shared pytest fixtures: the real local Kafka broker and per-test topics, then the engine's model."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from moderation.core.errors import BrokerError
from moderation.core.settings import Settings, parse_host_port
from moderation.devtools.broker import LocalKafka, probe

# --- Kafka (owned by the broker/CI engineer) ---------------------------------------------------------
KAFKA_OP_TIMEOUT_S = 30.0
TopicFactory = Callable[..., Awaitable[str]]
T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the broker are marked ``kafka`` so ``-m "not kafka"`` gives a JVM-free run."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped Kafka test is a failure: the broker is part of the project, not an optional extra."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and item.get_closest_marker("kafka") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"Kafka test skipped ({reason}); these must run. Fix the broker, do not skip."


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka 4.x broker for the whole session.

    An explicitly set ``MODERATION_BOOTSTRAP_SERVERS`` that answers wins (an external broker).
    Otherwise the project's local broker: reused when ``moderation kafka up`` already runs it (as
    in CI), else started here and stopped at the end. Never skips: no broker is a failure.
    """
    settings = Settings()
    if settings.bootstrap_servers.strip():  # empty is unset (moderation/core/bootstrap.py)
        host, port = parse_host_port(settings.bootstrap_servers)
        if probe.is_ready(host, port, timeout_s=5.0):
            yield settings.bootstrap_servers
            return
    kafka = LocalKafka(settings)
    try:
        result = kafka.up()
    except BrokerError as exc:
        pytest.fail(f"could not start the local Kafka broker: {exc}", pytrace=False)
    try:
        yield result.state.bootstrap
    finally:
        if result.started:
            kafka.down()


async def _bounded(aw: Awaitable[T], what: str, bootstrap: str) -> T:
    try:
        return await asyncio.wait_for(aw, KAFKA_OP_TIMEOUT_S)
    except TimeoutError:
        pass
    pytest.fail(
        f"Kafka at {bootstrap} did not {what} within {KAFKA_OP_TIMEOUT_S:.0f} s; "
        "is the broker alive? (`moderation kafka status`)",
        pytrace=False,
    )


@pytest.fixture
async def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> AsyncIterator[TopicFactory]:
    """``await topic_factory(partitions=4)`` → a fresh topic whose partitions all have a leader.

    Names start with the test name so a leftover topic points at its test; they are deleted
    afterwards (best effort: a test that killed the broker must not hang its teardown).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await _bounded(admin.start(), "accept an admin connection", kafka_bootstrap)
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:80] or "topic"
    created: list[str] = []

    async def make(partitions: int = 4, *, prefix: str | None = None) -> str:
        name = f"{prefix or base}-{uuid.uuid4().hex[:8]}"
        response = await _bounded(
            admin.create_topics([NewTopic(name, partitions, 1)]), f"create topic {name}", kafka_bootstrap
        )
        errors = [(topic, code, *rest) for topic, code, *rest in response.topic_errors if code]
        assert not errors, f"creating topic {name} failed: {errors}"
        created.append(name)
        deadline = time.monotonic() + KAFKA_OP_TIMEOUT_S
        while True:  # CreateTopics returns before every partition has a leader
            (desc,) = await _bounded(admin.describe_topics([name]), f"describe topic {name}", kafka_bootstrap)
            parts = desc["partitions"]
            if desc["error_code"] == 0 and len(parts) == partitions and all(p["leader"] >= 0 for p in parts):
                return name
            if time.monotonic() > deadline:
                pytest.fail(f"topic {name}: partitions still without a leader after {KAFKA_OP_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)

    try:
        yield make
    finally:
        with contextlib.suppress(Exception):
            if created:
                await asyncio.wait_for(admin.delete_topics(created), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), 10)


@pytest.fixture
async def new_topic(topic_factory: TopicFactory) -> str:
    """A fresh 4-partition topic for this test."""
    return await topic_factory(4)


# --- Engine: a tiny real model artifact directory (owned by the engine engineer) ------------------
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest + tokenizer + fp32/int8 ONNX following the model contract (tests/model_factory.py)."""
    try:
        from tests.model_factory import build_tiny_model
    except ModuleNotFoundError:  # tests/ is not a package: pytest put tests/ itself on sys.path
        from model_factory import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


# --- Worker/pipeline: a policy matching the tiny model's labels (owned by the lead) ---------------
TINY_POLICY_FILE = Path(__file__).parent / "data" / "tiny_policy.yaml"


@pytest.fixture(scope="session")
def tiny_policy_file() -> Path:
    return TINY_POLICY_FILE


@pytest.fixture
async def deployment(
    kafka_bootstrap: str, new_topic: str, tiny_model_dir: Path, tmp_path: Path
) -> AsyncIterator[object]:
    """An isolated worker deployment (own input/output topics, group, ports) on the real broker."""
    try:
        from tests.worker.harness import Setup
    except ModuleNotFoundError:
        from worker.harness import Setup
    setup = Setup(kafka_bootstrap, new_topic, tiny_model_dir, TINY_POLICY_FILE, tmp_path)
    await setup.create_outputs()
    yield setup


@pytest.fixture
def tiny_worker_env(
    kafka_bootstrap: str, tiny_model_dir: Path, tiny_policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Environment for commands that start their own workers: the session broker, the tiny model and policy."""
    monkeypatch.setenv("MODERATION_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("MODERATION_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("MODERATION_POLICY_FILE", str(tiny_policy_file))
