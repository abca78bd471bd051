"""Pure parts of the local broker: config rendering, state files, Java versions, jar markers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation.core.bootstrap import BrokerState, read_state, write_state
from moderation.core.errors import BrokerError
from moderation.core.settings import parse_host_port
from moderation.devtools.broker.config import (
    KAFKA_VERSION,
    jar_marker,
    jars_complete,
    new_cluster_id,
    parse_java_version,
    parse_properties,
    render_properties,
    server_properties,
    tail,
)


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = server_properties(port=19092, controller_port=19093, data_dir=tmp_path / "data")
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "data")
    # A single replica must be enough for every internal topic, or consumer groups never start.
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
        "default.replication.factor",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert props["num.partitions"] == "4"
    assert int(props["log.segment.bytes"]) <= 64 * 1024 * 1024


def test_rendered_properties_parse_back(tmp_path: Path) -> None:
    props = server_properties(port=1, controller_port=2, data_dir=Path("C:\\kafka\\data"))
    text = render_properties(props, header="line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    assert text.endswith("\n")
    assert parse_properties(text) == props


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6)', 17),
        ('java version "1.8.0_392"\nJava(TM) SE Runtime Environment', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "23-ea" 2024-09-17', 23),
        ('java version "11.0.2" 2019-01-15 LTS', 11),
        ('Picked up JAVA_TOOL_OPTIONS: -Xss2m\nopenjdk version "17.0.1" 2021-10-19', 17),
    ],
)
def test_parse_java_version(output: str, major: int) -> None:
    assert parse_java_version(output) == major


def test_parse_java_version_garbage_says_what_to_install() -> None:
    with pytest.raises(BrokerError, match="install Java 17"):
        parse_java_version("bash: java: command not found")


def test_cluster_id_matches_kafka_format() -> None:
    ids = {new_cluster_id() for _ in range(500)}
    assert len(ids) == 500
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("localhost:19092,other:9093", ("localhost", 19092)),
        ("PLAINTEXT://kafka:29092", ("kafka", 29092)),
        ("kafka", ("kafka", 9092)),
        (":9094", ("127.0.0.1", 9094)),
    ],
)
def test_parse_host_port(bootstrap: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(bootstrap) == expected


def test_parse_host_port_rejects_non_numeric_port() -> None:
    with pytest.raises(BrokerError, match="not a number"):
        parse_host_port("host:abc")


def _state(**overrides: object) -> BrokerState:
    fields: dict[str, object] = {
        "pid": 4242,
        "port": 9092,
        "controller_port": 40000,
        "bootstrap": "127.0.0.1:9092",
        "cluster_id": "AbCdEfGhIjKlMnOpQrStUv",
        "config": "/tmp/x/server.properties",
        "log": "/tmp/x/broker.log",
        "kafka_version": KAFKA_VERSION,
        "started_at": 1.5,
    }
    fields.update(overrides)
    return BrokerState(**fields)  # type: ignore[arg-type]


def test_state_file_roundtrip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "broker.json"
    write_state(path, _state())
    assert read_state(path) == _state()
    assert [p.name for p in path.parent.iterdir()] == ["broker.json"]  # no temp file left behind
    write_state(path, _state(pid=7, port=1234))
    assert read_state(path) == _state(pid=7, port=1234)


def test_missing_or_corrupt_state_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "broker.json"
    assert read_state(path) is None
    path.write_text("{not json")
    assert read_state(path) is None
    path.write_text(json.dumps({"pid": 1}))
    assert read_state(path) is None
    with pytest.raises(BrokerError, match="kafka down"):
        BrokerState.from_json('{"pid": "x"}')


@given(pid=st.integers(1, 2**22), port=st.integers(1, 65535), started=st.floats(0, 2e9))
def test_state_json_roundtrip(pid: int, port: int, started: float) -> None:
    state = _state(pid=pid, port=port, bootstrap=f"127.0.0.1:{port}", started_at=started)
    assert BrokerState.from_json(state.to_json()) == state


def test_jar_marker_completeness(tmp_path: Path) -> None:
    libs, marker = tmp_path / "libs", tmp_path / "libs.complete.json"
    libs.mkdir()
    assert not jars_complete(libs, marker)  # no marker: never resolved
    for name in ("a.jar", "b.jar"):
        (libs / name).write_bytes(b"PK")
    marker.write_text(jar_marker(["b.jar", "a.jar"]))
    assert jars_complete(libs, marker)
    (libs / "a.jar").unlink()
    assert not jars_complete(libs, marker)  # a jar deleted after the fact
    (libs / "a.jar").write_bytes(b"")
    assert not jars_complete(libs, marker)  # truncated download
    (libs / "a.jar").write_bytes(b"PK")
    marker.write_text(json.dumps({"kafka_version": "3.9.0", "jars": ["a.jar", "b.jar"]}))
    assert not jars_complete(libs, marker)  # other Kafka version
    marker.write_text("")
    assert not jars_complete(libs, marker)


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    assert tail(log) == ""
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"

