"""Start-up, restart and the probes on the real broker: fail fast and clearly, resume quickly, tell the truth."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from pathlib import Path

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from moderation.devtools.launch import free_port
from tests.worker.harness import Setup, WorkerProcess, mixed_stream, post, produce, read_topic


def startup_failure(worker: WorkerProcess) -> dict:
    return next(e for e in worker.events() if e.get("event") == "startup_failed")


async def test_invalid_setting_exits_2_naming_the_variable(deployment: Setup) -> None:
    deployment.extra_env["MODERATION_MAX_BATCH"] = "0"
    worker = WorkerProcess(deployment, "w-bad-setting")
    assert await asyncio.to_thread(worker.proc.wait, 30) == 2
    error = startup_failure(worker)["error"]
    assert "MODERATION_MAX_BATCH" in error and "greater than or equal to 1" in error
    assert b"Traceback" not in b"\n".join(worker.log_lines())


async def test_http_port_in_use_exits_2_with_what_to_do(deployment: Setup) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        deployment.extra_env["MODERATION_HTTP_HOST"] = "127.0.0.1"
        worker = WorkerProcess(deployment, "w-port", http_port=port)
        assert await asyncio.to_thread(worker.proc.wait, 30) == 2
    error = startup_failure(worker)["error"]
    assert f"127.0.0.1:{port}" in error and "MODERATION_HTTP_PORT" in error
    assert b"Traceback" not in b"\n".join(worker.log_lines())


async def test_unreachable_broker_is_retried_then_exit_3(deployment: Setup) -> None:
    dead = f"127.0.0.1:{free_port()}"
    deployment.extra_env.update({"MODERATION_BOOTSTRAP_SERVERS": dead, "MODERATION_STARTUP_TIMEOUT_S": "6"})
    worker = WorkerProcess(deployment, "w-no-broker")
    started = time.monotonic()
    assert await asyncio.to_thread(worker.proc.wait, 90) == 3
    took = time.monotonic() - started
    retries = [e for e in worker.events() if e.get("event") == "broker_unreachable"]
    assert len(retries) >= 2, worker.log_tail()  # retried with backoff, not given up at once
    error = startup_failure(worker)["error"]
    assert dead in error and "MODERATION_BOOTSTRAP_SERVERS" in error
    assert took < 60, took


async def test_restart_after_sigkill_resumes_within_seconds_and_redoes_only_in_flight_work(deployment: Setup) -> None:
    """Static membership: the restarted worker (same id) gets its partitions back without waiting for the
    dead member's session to time out; commits after each batch bound the re-decided posts."""
    messages, valid, _ = mixed_stream(3_000, malformed_every=10**9)
    first = WorkerProcess(deployment, "w-static")
    await asyncio.to_thread(first.wait_ready)
    await produce(deployment.bootstrap, deployment.input_topic, messages[:1_500], rate=1_000)
    await read_topic(deployment.bootstrap, deployment.topic("decisions"), expect=1_500, timeout_s=60)
    producing = asyncio.create_task(produce(deployment.bootstrap, deployment.input_topic, messages[1_500:], rate=1_000))
    await asyncio.sleep(0.5)
    first.kill()  # mid-stream
    await producing
    before = len(await read_topic(deployment.bootstrap, deployment.topic("decisions"), expect=0, idle_s=1))

    restarted = time.monotonic()
    second = WorkerProcess(deployment, "w-static")  # same id, as a restarted container has
    try:
        more = await read_topic(
            deployment.bootstrap, deployment.topic("decisions"), expect=before + 1, timeout_s=60, idle_s=0
        )
        first_new = time.monotonic() - restarted
        decisions = await read_topic(deployment.bootstrap, deployment.topic("decisions"), expect=len(valid))
    finally:
        assert await asyncio.to_thread(second.terminate) == 0, second.log_tail()
    assert len(more) > before
    assert first_new < 10, f"first decision {first_new:.1f} s after the restart"
    counts = Counter(r.key.decode() for r in decisions)
    assert set(counts) == valid
    duplicates = sum(c - 1 for c in counts.values())
    # at most the batches in flight: the one being produced and the one whose commit was under way,
    # on each of the 4 partitions (64 posts a batch)
    assert duplicates <= 2 * 64 * 4, duplicates
    print(f"restart → first decision {first_new:.1f} s; {duplicates} posts decided twice")


async def test_readiness_follows_the_assignment_when_the_input_topic_goes_away(deployment: Setup) -> None:
    deployment.extra_env["MODERATION_METADATA_MAX_AGE_MS"] = "5000"
    worker = WorkerProcess(deployment, "w-topic-gone")
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.to_thread(worker.wait_ready)
        assert orjson.loads(worker.get("/readyz")[1])["assigned_partitions"] == 4
        await admin.start()
        await admin.delete_topics([deployment.input_topic])
        status = await _wait_status(worker, "/readyz", 503, timeout_s=60)
        assert status["assigned_partitions"] == 0 and worker.get("/healthz")[0] == 200

        # the topic comes back (producers auto-create it): the worker picks it up and decides again
        await produce(deployment.bootstrap, deployment.input_topic, [post(1, "back again")])
        await _wait_status(worker, "/readyz", 200, timeout_s=30)
        decisions = await read_topic(deployment.bootstrap, deployment.topic("decisions"), expect=1, timeout_s=30)
        assert [r.key for r in decisions] == [b"p00001"]
    finally:
        await admin.close()
        assert await asyncio.to_thread(worker.terminate) == 0, worker.log_tail()


async def _wait_status(worker: WorkerProcess, path: str, want: int, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = await asyncio.to_thread(worker.get, path)
        if status == want:
            return orjson.loads(body)
        assert time.monotonic() < deadline, f"{path} still {status} ({body!r}) after {timeout_s} s"
        assert worker.proc.poll() is None, worker.log_tail()
        await asyncio.sleep(0.5)


def test_slots_give_a_restarted_process_its_old_id(tmp_path: Path) -> None:
    from moderation.worker.identity import group_instance_id

    first, lock1 = group_instance_id("", "", "g", tmp_path, hostname="h")
    second, lock2 = group_instance_id("", "", "g", tmp_path, hostname="h")
    assert (first, second) == ("h-0", "h-1")  # two live workers on one host never share an id
    assert lock1 is not None and lock2 is not None
    lock1.release()  # the first one dies
    again, lock3 = group_instance_id("", "", "g", tmp_path, hostname="h")
    assert again == "h-0"  # its replacement takes its id back
    assert group_instance_id("", "pod-7", "g", tmp_path) == ("pod-7", None)
    assert group_instance_id("none", "pod-7", "g", tmp_path) == (None, None)
    assert group_instance_id("custom id", "pod-7", "g", tmp_path) == ("custom-id", None)
    for lock in (lock2, lock3):
        assert lock is not None
        lock.release()
