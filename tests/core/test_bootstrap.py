"""Which broker a process joins: the named one, else the local broker of the state file, else a clear error.

No JVM here: a "broker" is a process whose command line names ``kafka.Kafka`` and the recorded config,
which is exactly what the state file check looks at. The real brokers are in
tests/integration/test_which_broker.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from moderation.core.bootstrap import BrokerState, resolve_bootstrap, resolved, write_state
from moderation.core.errors import BrokerError
from moderation.core.settings import Settings


def state(pid: int, state_dir: Path, port: int = 40123) -> BrokerState:
    return BrokerState(
        pid=pid, port=port, controller_port=port + 1, bootstrap=f"127.0.0.1:{port}", cluster_id="AbCdEfGhIjKlMn",
        config=str(state_dir / "server.properties"), log=str(state_dir / "broker.log"), kafka_version="4.1.1",
        started_at=0.0,
    )  # fmt: skip


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def fake_broker(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live process that looks like the broker of ``tmp_path`` (argv: kafka.Kafka <config>)."""
    config = tmp_path / "server.properties"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka", str(config)])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(autouse=True)
def no_broker_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODERATION_BOOTSTRAP_SERVERS", raising=False)


def test_the_state_files_running_broker(tmp_path: Path, fake_broker: subprocess.Popen[bytes]) -> None:
    write_state(tmp_path / "broker.json", state(fake_broker.pid, tmp_path))
    settings, where = resolved(Settings(kafka_state_dir=tmp_path))
    assert settings.bootstrap_servers == where.servers == "127.0.0.1:40123"
    assert where.source == f"state_file:{tmp_path / 'broker.json'}"
    assert where.describe() == f"bootstrap=127.0.0.1:40123 source=state_file:{tmp_path / 'broker.json'}"


def test_a_named_broker_wins_over_the_state_file(
    tmp_path: Path, fake_broker: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_state(tmp_path / "broker.json", state(fake_broker.pid, tmp_path))
    assert resolve_bootstrap(Settings(kafka_state_dir=tmp_path, bootstrap_servers="kafka:9093")).source == "setting"
    monkeypatch.setenv("MODERATION_BOOTSTRAP_SERVERS", "kafka:9093")
    where = resolve_bootstrap(Settings(kafka_state_dir=tmp_path))
    assert (where.servers, where.source) == ("kafka:9093", "env")


def test_nothing_named_and_nothing_running_says_both_ways(tmp_path: Path) -> None:
    with pytest.raises(BrokerError) as missing:
        resolve_bootstrap(Settings(kafka_state_dir=tmp_path))
    message = str(missing.value)
    assert "MODERATION_BOOTSTRAP_SERVERS" in message and "moderation kafka up" in message
    assert f"no state file {tmp_path / 'broker.json'}" in message and "\n" not in message
    assert "9092" not in message  # no default address, not even as a hint


def test_a_stale_state_file_is_not_running(tmp_path: Path, fake_broker: subprocess.Popen[bytes]) -> None:
    gone = dead_pid()
    write_state(tmp_path / "broker.json", state(gone, tmp_path))
    with pytest.raises(BrokerError, match=f"stale: broker pid {gone} is not running") as stale:
        resolve_bootstrap(Settings(kafka_state_dir=tmp_path))
    assert "MODERATION_BOOTSTRAP_SERVERS" in str(stale.value) and "moderation kafka up" in str(stale.value)
    # a live pid that is some other process now (pid reuse) is just as stale
    write_state(tmp_path / "broker.json", state(os.getpid(), tmp_path))
    with pytest.raises(BrokerError, match="stale"):
        resolve_bootstrap(Settings(kafka_state_dir=tmp_path))
    (tmp_path / "broker.json").write_text("{half a file")
    with pytest.raises(BrokerError, match="unreadable"):
        resolve_bootstrap(Settings(kafka_state_dir=tmp_path))


COMMANDS = {
    "worker": ["worker"],
    "llm-review": ["llm-review"],
    "console": ["console"],
    "models feedback": ["models", "feedback", "--feedback", "feedback.jsonl"],
    "produce": ["produce", "--file", "posts.jsonl"],
    "tail": ["tail", "posts", "--max", "1"],
}


def test_every_command_without_a_broker_stops_with_one_line_naming_both_ways(tmp_path: Path) -> None:
    (tmp_path / "posts.jsonl").write_text('{"id": "p1", "text": "hello"}\n')
    env = {
        **{k: v for k, v in os.environ.items() if k.upper() != "MODERATION_BOOTSTRAP_SERVERS"},
        "MODERATION_KAFKA_STATE_DIR": str(tmp_path / "no-broker"),
        "MODERATION_CACHE_DIR": str(tmp_path / "cache"),
        "MODERATION_LOG_FORMAT": "json",
        "MODERATION_HTTP_PORT": "0",
        "MODERATION_LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "MODERATION_LLM_MODEL": "m",
    }
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "moderation.cli", *args], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, args in COMMANDS.items()
    }  # fmt: skip
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (name, out, err)
        lines = [line for line in (out + err).decode().splitlines() if line.strip()]
        if name in ("worker", "llm-review", "console"):  # long-running: a JSON log line, as Kubernetes reads it
            (failure,) = [orjson.loads(line) for line in lines if '"startup_failed"' in line]
            message = failure["error"]
        else:
            (message,) = lines
        assert "MODERATION_BOOTSTRAP_SERVERS" in message and "moderation kafka up" in message, (name, message)
        assert "Traceback" not in "\n".join(lines)
