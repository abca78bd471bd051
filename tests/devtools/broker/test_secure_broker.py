"""Secure broker connections on a real broker: SASL_SSL with SCRAM, certificates made by the test.

One broker for the module (its own state dir and ports, stopped at the end even on failure); a real
``moderation worker`` decides posts through it, and a wrong password stops the worker at once with a
clear message and exit code 3 instead of a retry loop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from moderation.core.errors import BrokerAuthError
from moderation.worker.security import check_auth, client_kwargs
from tests.devtools.broker.secure_kafka import SecureBroker, make_ca, secure_kafka
from tests.worker.harness import Setup, WorkerProcess, mixed_stream, produce, read_topic

pytestmark = pytest.mark.kafka  # a skip is a failure here too (tests/conftest.py)

BAD_CREDENTIALS_EXIT = 3  # README "Secure connections": the broker refused us; not retried


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    with secure_kafka(tmp_path_factory.mktemp("secure-kafka")) as broker:
        yield broker


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
async def test_clients_round_trip_over_sasl_ssl(secure_broker: SecureBroker, mechanism: str) -> None:
    kwargs = client_kwargs(secure_broker.settings(mechanism))
    topic = f"secure-roundtrip-{uuid.uuid4().hex[:8]}"  # auto-created by the broker
    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    await produce(secure_broker.bootstrap, topic, sent, client_kwargs=kwargs)
    got = await read_topic(secure_broker.bootstrap, topic, expect=20, idle_s=0.5, strict=True, client_kwargs=kwargs)
    assert sorted((r.key, r.value) for r in got) == sorted(sent)


async def test_check_auth_names_the_user_and_the_settings_to_fix(secure_broker: SecureBroker) -> None:
    await check_auth(secure_broker.settings())  # the right password passes
    started = time.monotonic()
    with pytest.raises(BrokerAuthError) as caught:
        await check_auth(secure_broker.settings(password="not-the-password"))
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "authentication failed for user alice (SCRAM-SHA-512)" in message
    assert "MODERATION_SASL_PASSWORD" in message and "not-the-password" not in message


async def test_a_broker_certificate_from_another_ca_is_refused(secure_broker: SecureBroker, tmp_path: Path) -> None:
    other_ca = make_ca(tmp_path).cafile
    settings = secure_broker.settings().model_copy(update={"ssl_cafile": other_ca})
    with pytest.raises(BrokerAuthError, match=r"TLS certificate of the broker .* was rejected .*MODERATION_SSL_CAFILE"):
        await check_auth(settings)
    # by name as well as by IP: the test certificate names both
    by_name = secure_broker.settings().model_copy(
        update={"bootstrap_servers": secure_broker.bootstrap.replace("127.0.0.1", "localhost")}
    )
    await check_auth(by_name)


def test_produce_and_tail_commands_connect_with_the_settings(secure_broker: SecureBroker, tmp_path: Path) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "a", "text": "hello"}\n{"id": "b", "text": "world"}\n')
    topic = f"secure-cli-{uuid.uuid4().hex[:8]}"

    def moderation(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **secure_broker.env(password=password)}
        cmd = [sys.executable, "-m", "moderation.cli", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)

    produced = moderation("produce", "--file", str(posts), "--topic", topic)
    assert produced.returncode == 0, produced.stderr
    tailed = moderation("tail", topic, "--from-beginning", "--max", "2")
    assert tailed.returncode == 0, tailed.stderr
    assert sorted(orjson.loads(line)["key"] for line in tailed.stdout.splitlines()) == ["a", "b"]
    denied = moderation("tail", topic, "--from-beginning", "--max", "2", password="wrong-password")
    assert denied.returncode == 2
    # first where it connected (every command says so), then one line: what went wrong and what to do
    lines = denied.stderr.strip().splitlines()
    assert lines[0].startswith("kafka: bootstrap=") and len(lines) == 2, denied.stderr
    assert lines[1].startswith("error: authentication failed for user alice (SCRAM-SHA-512)"), denied.stderr
    assert "Traceback" not in denied.stderr


async def test_worker_decides_posts_over_sasl_ssl(
    secure_broker: SecureBroker, tiny_model_dir: Path, tiny_policy_file: Path, tmp_path: Path
) -> None:
    setup = Setup(
        secure_broker.bootstrap,
        f"secure-posts-{uuid.uuid4().hex[:8]}",
        tiny_model_dir,
        tiny_policy_file,
        tmp_path,
        extra_env=secure_broker.env(),
    )
    kwargs = client_kwargs(secure_broker.settings())
    messages, valid, bad = mixed_stream(200)
    worker = WorkerProcess(setup, "secure-w1")  # creates its topics itself, over SASL_SSL
    try:
        await asyncio.to_thread(worker.wait_ready, 120)
        await produce(setup.bootstrap, setup.input_topic, messages, client_kwargs=kwargs)
        decisions = await read_topic(
            setup.bootstrap, setup.topic("decisions"), expect=len(valid), strict=True, client_kwargs=kwargs
        )
        dlq = await read_topic(setup.bootstrap, setup.topic("dlq"), expect=bad, strict=True, client_kwargs=kwargs)
    finally:
        code = await asyncio.to_thread(worker.terminate)
    assert code == 0, worker.log_tail()
    assert {r.key.decode() for r in decisions} == valid and len(decisions) == len(valid)
    assert all(orjson.loads(r.value)["action"] in {"allow", "review", "block"} for r in decisions)
    assert len(dlq) == bad
    assert secure_broker.password not in worker.log_path.read_text(errors="replace")  # SecretStr: never logged


async def test_wrong_password_fails_fast_with_a_clear_error(
    secure_broker: SecureBroker, tiny_model_dir: Path, tiny_policy_file: Path, tmp_path: Path
) -> None:
    setup = Setup(
        secure_broker.bootstrap,
        f"secure-denied-{uuid.uuid4().hex[:8]}",
        tiny_model_dir,
        tiny_policy_file,
        tmp_path,
        extra_env=secure_broker.env(password="wrong-password"),
    )
    worker = WorkerProcess(setup, "secure-denied")
    started = time.monotonic()
    try:
        code = await asyncio.to_thread(worker.proc.wait, 30)
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    assert time.monotonic() - started < 30
    assert code == BAD_CREDENTIALS_EXIT, worker.log_tail()
    failures = [doc for doc in worker.events() if doc.get("event") == "startup_failed"]
    assert failures, worker.log_tail()
    error = failures[-1]["error"]
    assert "authentication failed for user alice (SCRAM-SHA-512)" in error
    assert "MODERATION_SASL_PASSWORD" in error
    assert "wrong-password" not in worker.log_path.read_text(errors="replace")
