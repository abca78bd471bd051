"""LocalKafka against a real JVM: idempotent up/down, stale state, and failures that explain themselves.

Each test gets its own state dir (and so its own broker) but shares the jar cache, so these do not
disturb the session broker other tests use.
"""

from __future__ import annotations

import io
import socket
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console

from moderation.core.bootstrap import BrokerState, pid_alive, running_broker, write_state
from moderation.core.errors import BrokerError
from moderation.core.settings import Settings
from moderation.devtools.broker import KAFKA_VERSION, LocalKafka, probe
from moderation.devtools.broker.local import broker_pids, file_lock, free_port, port_free


def quiet_kafka(state_dir: Path) -> LocalKafka:
    return LocalKafka(Settings(kafka_state_dir=state_dir), console=Console(file=io.StringIO()))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- process and port helpers (no JVM) -----------------------------------------------------------------


def test_pid_alive_sees_live_dead_and_zombie_children() -> None:
    assert pid_alive(dead_pid()) is False
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(sleeper.pid)
        sleeper.kill()
        time.sleep(0.2)  # now a zombie until reaped: must count as dead
        assert pid_alive(sleeper.pid) is False
    finally:
        sleeper.kill()
        sleeper.wait()


def test_port_helpers() -> None:
    port = free_port()
    assert port_free(port)
    with socket.create_server(("127.0.0.1", port)):
        assert not port_free(port)
        assert free_port(exclude=(port,)) != port


def test_file_lock_times_out_with_advice(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            f"import fcntl,time; f=open({str(lock)!r},'a+'); fcntl.flock(f,2); print(1,flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"1"
        with pytest.raises(BrokerError, match="delete that file"), file_lock(lock, 0.5, "testing"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with file_lock(lock, 0.5, "testing"):  # released when the holder died
        pass


def test_status_of_nothing_and_of_a_stale_state_file(tmp_path: Path) -> None:
    kafka = quiet_kafka(tmp_path / "state")
    assert kafka.status().describe() == "not running"
    assert kafka.down() is False
    write_state(kafka.paths.state_file, _stale_state(kafka))
    assert kafka.status().describe().startswith("not running (stale state file")
    assert running_broker(kafka.settings) is None
    assert kafka.down() is False
    assert not kafka.paths.state_file.exists()


def _stale_state(kafka: LocalKafka) -> BrokerState:
    return BrokerState(
        pid=dead_pid(),
        port=1,
        controller_port=2,
        bootstrap="127.0.0.1:1",
        cluster_id="AbCdEfGhIjKlMnOpQrStUv",
        config=str(kafka.paths.config),
        log=str(kafka.paths.log),
        kafka_version=KAFKA_VERSION,
        started_at=0.0,
    )


# --- real broker ---------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_up_twice_is_one_broker_and_down_twice_leaves_nothing(tmp_path: Path) -> None:
    kafka = quiet_kafka(tmp_path / "state")
    write_state(kafka.paths.state_file, _stale_state(kafka))  # left behind by a crashed run
    port = free_port()

    first = kafka.up(port=port)
    try:
        assert first.started and first.state.bootstrap == f"127.0.0.1:{port}"
        second = quiet_kafka(tmp_path / "state").up()  # a second `moderation kafka up`
        assert not second.started
        assert second.state == first.state
        assert broker_pids(kafka.paths.config) == [first.state.pid]
        info = probe.metadata("127.0.0.1", port)
        assert info.brokers == ((1, "127.0.0.1", port),)
        assert info.cluster_id == first.state.cluster_id
        assert running_broker(kafka.settings) == first.state
        assert kafka.status().describe() == f"running on 127.0.0.1:{port} (pid {first.state.pid})"
    finally:
        assert kafka.down() is True
    assert not pid_alive(first.state.pid)
    assert broker_pids(kafka.paths.config) == []
    assert kafka.down() is False
    assert kafka.status().describe() == "not running"


@pytest.mark.kafka  # needs Java and the jars, though no broker starts
def test_up_on_a_busy_port_says_so(tmp_path: Path) -> None:
    kafka = quiet_kafka(tmp_path / "state")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} is already in use"):
            kafka.up(port=port)
    assert kafka.status().describe() == "not running"


@pytest.mark.kafka
def test_broker_that_dies_at_startup_fails_fast_with_its_log(tmp_path: Path) -> None:
    kafka = quiet_kafka(tmp_path / "state")
    # A data dir formatted for another node id: Kafka refuses to start and says why in its log.
    kafka.paths.data.mkdir(parents=True)
    (kafka.paths.data / "meta.properties").write_text(
        "version=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\nnode.id=7\ndirectory.id=AAAAAAAAAAAAAAAAAAAAAQ\n"
    )
    started = time.monotonic()
    with pytest.raises(BrokerError, match="exited during startup") as excinfo:
        kafka.up(port=free_port(), timeout_s=90)
    assert time.monotonic() - started < 60
    assert "Last lines of" in str(excinfo.value)
    assert "Stored node id 7" in str(excinfo.value)  # the broker's own explanation
    assert broker_pids(kafka.paths.config) == []
    assert not kafka.paths.state_file.exists()
