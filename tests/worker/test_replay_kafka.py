"""``moderation replay`` on the real broker: a real worker (shipped model, default policy) decides a stream,
then the decisions are replayed from ``moderation.decisions`` by a real subprocess, as an auditor runs it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from moderation.core.errors import InputError
from moderation.core.settings import DEFAULT_MODEL_DIR, DEFAULT_POLICY_FILE, PACKAGE_DIR
from moderation.pipeline.decode import decode_post
from tests.worker.harness import OUTPUTS, Setup, WorkerProcess, produce, read_topic

SAMPLE = PACKAGE_DIR / "devtools" / "demo_data" / "sample_posts.jsonl"
POSTS = 200


def stream(n: int) -> tuple[list[tuple[bytes | None, bytes]], int]:
    """``n`` posts of the demo sample's varied texts (clean, sports, news, spam, abuse, injections): the
    sample once as it is, then each text again with a few words added, so batches mix every kind; plus
    the sample's malformed lines (dead-lettered: no decision records). Returns (messages, malformed)."""
    sample, malformed = [], []
    for line in SAMPLE.read_bytes().split(b"\n"):
        if line.strip():
            try:
                decode_post(line)
            except InputError:
                malformed.append((None, line))
            else:
                sample.append(orjson.loads(line))
    tails = ["", " honestly", " what do you think?", " (via a friend)", " !!!"]
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(n):
        doc = dict(sample[i % len(sample)])
        doc["id"] = f"r{i:04d}"
        doc["text"] = doc["text"] + tails[(i // len(sample)) % len(tails)]
        out.append((doc["id"].encode(), orjson.dumps(doc)))
        if i % 40 == 20 and malformed:
            out.append(malformed.pop())
    return out + malformed, sum(1 for _, value in out + malformed if not value.startswith(b'{"id":"r'))


def replay(setup: Setup, *argv: str, **env: str) -> tuple[int, dict[str, Any] | None, str]:
    """``moderation replay --json ARGV`` as a subprocess: (exit code, report, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "moderation.cli", "replay", "--json", *argv],
        env={**os.environ, **setup.env(), **env},
        capture_output=True,
        timeout=120,
    )
    report = orjson.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, report, proc.stderr.decode()


@pytest.fixture
async def shipped(kafka_bootstrap: str, new_topic: str, tmp_path: Path) -> AsyncIterator[Setup]:
    """A deployment of the shipped model and the default policy on its own topics (the outputs deleted after)."""
    setup = Setup(kafka_bootstrap, new_topic, DEFAULT_MODEL_DIR, DEFAULT_POLICY_FILE, tmp_path)
    await setup.create_outputs()
    yield setup
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(admin.start(), 10)
        await asyncio.wait_for(admin.delete_topics([setup.topic(o) for o in OUTPUTS]), 10)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(admin.close(), 10)


async def test_decisions_of_a_stream_replay_to_100_percent(shipped: Setup, tmp_path: Path) -> None:
    posts, malformed = stream(POSTS)
    assert malformed >= 2  # the sample's bad JSON and bad UTF-8 lines sit between the posts
    worker = WorkerProcess(shipped, "w-replayed")
    try:
        await asyncio.to_thread(worker.wait_ready)
        await produce(shipped.bootstrap, shipped.input_topic, posts)
        decisions = await read_topic(shipped.bootstrap, shipped.topic("decisions"), expect=POSTS, idle_s=1, strict=True)
    finally:
        assert await asyncio.to_thread(worker.terminate) == 0, worker.log_tail()
    docs = [orjson.loads(r.value) for r in decisions]
    assert len({d["post_id"] for d in docs}) == POSTS
    assert {d["action"] for d in docs} == {"allow", "review", "block"}  # the stream is not all one kind

    code, report, err = await asyncio.to_thread(replay, shipped, "--all")
    assert report is not None, err
    assert f"kafka: bootstrap={shipped.bootstrap} source=env" in err  # says where it connected
    mismatch = report["differences"][:3]
    assert (report["total"], report["reproduced"], report["differing"]) == (len(docs), len(docs), 0), mismatch
    assert (report["missing"], report["undecodable"], report["skipped_version_mismatch"]) == (0, 0, 0), report
    assert code == 0 and report["exit_code"] == 0, err
    assert report["max_score_delta"] <= 1.5e-4

    # another policy version loaded: every record is skipped, one line says which versions and what to set
    policy = tmp_path / "policy.yaml"
    text = DEFAULT_POLICY_FILE.read_text(encoding="utf-8")
    recorded = docs[0]["policy_version"]
    policy.write_text(text.replace(f'version: "{recorded}"', 'version: "replay-test-2"', 1), encoding="utf-8")
    first = decisions[0]
    code, report, err = await asyncio.to_thread(
        replay,
        shipped,
        "--partition",
        str(first.partition),
        "--from-offset",
        "0",
        "--to-offset",
        "3",
        MODERATION_POLICY_FILE=str(policy),
    )
    assert code == 2, err
    assert report is not None and report["skipped_version_mismatch"] == report["total"] == 4, report
    (line,) = [ln for ln in err.splitlines() if ln.startswith("nothing replayed")]
    assert f"policy {recorded}, but" in line and "policy replay-test-2 is loaded" in line, line
    assert f"MODERATION_POLICY_FILE=<policy file of version {recorded}>" in line, line

    # posts gone by retention: reported as missing, the rest still reproduce
    tp = TopicPartition(shipped.input_topic, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=shipped.bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=10)}, timeout_ms=30_000)
    finally:
        await admin.close()
    gone = sum(1 for d in docs if d["origin"]["partition"] == 0 and d["origin"]["offset"] < 10)
    code, report, err = await asyncio.to_thread(replay, shipped, "--since", "10m")
    assert report is not None, err
    assert (report["missing"], report["reproduced"], report["differing"]) == (gone, len(docs) - gone, 0), report
    assert all("deleted by retention" in m["reason"] for m in report["missing_posts"]), report["missing_posts"]
    assert code == 0, err


async def test_a_missing_decisions_topic_is_one_line_and_is_not_created(kafka_bootstrap: str, tmp_path: Path) -> None:
    setup = Setup(
        kafka_bootstrap, f"replay-absent-{tmp_path.name[-12:]}", DEFAULT_MODEL_DIR, DEFAULT_POLICY_FILE, tmp_path
    )
    code, report, err = await asyncio.to_thread(replay, setup, "--all")
    assert code == 2 and report is None
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert f"the decisions topic '{setup.topic('decisions')}' does not exist on {kafka_bootstrap}" in line, err
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        # brokers auto-create topics a metadata request names: replay must never name one that is not there
        assert setup.topic("decisions") not in await admin.list_topics()
    finally:
        await admin.close()
