"""Two real brokers: every process joins the one MODERATION_KAFKA_STATE_DIR's state file names.

The session broker (usually on 127.0.0.1:9092, where the old default pointed) is the "other" broker;
a private one on a free port, with its own state dir, is the one named. Nothing sets
MODERATION_BOOTSTRAP_SERVERS. Each process must say where it connected and why, and the other broker
must not see a topic or a consumer group of this run (issue 18: a worker joined another run's broker).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console

from moderation.core.bootstrap import BrokerState
from moderation.core.settings import Settings
from moderation.devtools.broker import LocalKafka
from moderation.devtools.launch import OUTPUTS, WorkerProcess, free_port, kafka_broker, topic_env
from tests.review.proc import ReviewProcess
from tests.worker.harness import post, read_topic


@pytest.fixture(scope="module")
def named_broker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, BrokerState]]:
    """A second real broker with its own state dir, on a free port (not the session broker's)."""
    kafka = LocalKafka(
        Settings(kafka_state_dir=tmp_path_factory.mktemp("named-broker") / "state", bootstrap_servers=""),
        console=Console(file=io.StringIO()),
    )
    up = kafka.up(port=free_port())
    assert up.state.bootstrap != kafka_bootstrap
    try:
        yield kafka.paths.state_dir, up.state
    finally:
        kafka.down()


async def topics_and_groups(bootstrap: str) -> tuple[set[str], set[str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), 30)
    try:
        topics = set(await admin.list_topics())
        groups = {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    return topics, groups


def connected(log_path: Path) -> dict[str, str]:
    events = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.startswith(b"{")]
    (event,) = [e for e in events if e.get("event") == "kafka_bootstrap"]
    return {"bootstrap": event["bootstrap"], "source": event["source"]}


async def test_every_process_joins_the_state_files_broker_and_says_so(
    kafka_bootstrap: str,
    named_broker: tuple[Path, BrokerState],
    tiny_model_dir: Path,
    tiny_policy_file: Path,
    tmp_path: Path,
) -> None:
    state_dir, state = named_broker
    expected = {"bootstrap": state.bootstrap, "source": f"state_file:{state_dir / 'broker.json'}"}
    run = f"which-{uuid.uuid4().hex[:8]}"
    named = {  # "" is unset: whatever the test session's environment says, no broker is named
        "MODERATION_BOOTSTRAP_SERVERS": "",
        "MODERATION_KAFKA_STATE_DIR": str(state_dir),
        "MODERATION_CACHE_DIR": str(tmp_path / "cache"),
        "MODERATION_LOG_FORMAT": "json",
    }
    worker_topics = {name: f"{run}.{name}" for name in ("posts", *OUTPUTS)}
    worker = WorkerProcess("which-worker", {
        **named, **topic_env("", worker_topics, f"{run}-workers"),
        "MODERATION_MODEL_DIR": str(tiny_model_dir), "MODERATION_POLICY_FILE": str(tiny_policy_file),
    }, tmp_path / "which-worker.log")  # fmt: skip
    review_env = {**named, "MODERATION_VERDICTS_TOPIC": f"{run}.verdicts"}
    llm = ReviewProcess("which-llm", ["llm-review"], {
        **review_env, "MODERATION_LLM_REVIEW_TOPIC": f"{run}.llm-in", "MODERATION_LLM_GROUP_ID": f"{run}-llm",
        "MODERATION_LLM_BASE_URL": "http://127.0.0.1:9/v1", "MODERATION_LLM_MODEL": "never-asked",
    }, tmp_path)  # fmt: skip
    console = ReviewProcess("which-console", ["console"], {
        **review_env, "MODERATION_REVIEW_TOPIC": f"{run}.review", "MODERATION_DECISIONS_TOPIC": f"{run}.decisions",
        "MODERATION_CONSOLE_PORT": str(free_port()), "MODERATION_CONSOLE_USERS": "ann:pw",
    }, tmp_path)  # fmt: skip
    try:
        await asyncio.gather(asyncio.to_thread(worker.wait_ready, 120), llm.wait_ready(120), console.wait_ready(120))

        posts = tmp_path / "posts.jsonl"
        posts.write_bytes(b"".join(post(i, f"hello number {i}")[1] + b"\n" for i in range(5)))
        cli_env = {**os.environ, **named, "MODERATION_VERDICTS_TOPIC": f"{run}.verdicts"}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "moderation.cli", *args], env=cli_env, cwd=tmp_path,
                                  capture_output=True, text=True, timeout=90)  # fmt: skip

        produced = await asyncio.to_thread(cli, "produce", "--file", str(posts), "--topic", worker_topics["posts"])
        decisions = await read_topic(state.bootstrap, worker_topics["decisions"], expect=5, idle_s=1, strict=True)
        tailed = await asyncio.to_thread(cli, "tail", worker_topics["decisions"], "--from-beginning", "--max", "1")
        feedback = await asyncio.to_thread(cli, "models", "feedback", "--feedback", str(tmp_path / "fb.jsonl"))
        with kafka_broker(Settings(kafka_state_dir=state_dir, bootstrap_servers="")) as bench_bootstrap:
            pass  # what demo, bench and loadtest run against
        named_topics, named_groups = await topics_and_groups(state.bootstrap)
        other_topics, other_groups = await topics_and_groups(kafka_bootstrap)
    finally:
        codes = {"worker": worker.terminate(), "llm-review": llm.terminate(), "console": console.terminate()}
    assert codes == {"worker": 0, "llm-review": 0, "console": 0}, (worker.log_tail(), llm.log_tail())

    for proc in (worker, llm, console):
        assert connected(proc.log_path) == expected, proc.log_path
    said = f"kafka: bootstrap={expected['bootstrap']} source={expected['source']}"
    for name, done in {"produce": produced, "tail": tailed, "models feedback": feedback}.items():
        assert done.returncode == 0 and said in done.stderr.splitlines(), (name, done.stdout, done.stderr)
    assert len(decisions) == 5 and len(tailed.stdout.splitlines()) == 1
    assert bench_bootstrap == state.bootstrap

    mine = {t for t in named_topics if t.startswith(run)}
    assert mine >= {worker_topics["posts"], worker_topics["decisions"], f"{run}.llm-in", f"{run}.verdicts",
                    f"{run}.review"}  # fmt: skip
    assert {f"{run}-workers", f"{run}-llm"} <= named_groups
    assert not {t for t in other_topics if t.startswith(run)}, "a process created topics on the other broker"
    assert not {g for g in other_groups if g.startswith(run)}, "a process joined a group on the other broker"
