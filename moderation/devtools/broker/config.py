"""Pure parts of the local broker: its config file and the facts we parse.

Kept free of processes and sockets so that the decisions (which keys the broker gets, which Java is
good enough) are unit-tested without a JVM. The state file (how other processes find the broker) is
:mod:`moderation.core.bootstrap`'s, since serving code reads it.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from moderation.core.errors import BrokerError

KAFKA_VERSION = "4.1.1"
MIN_JAVA = 17
NODE_ID = 1


def server_properties(*, port: int, controller_port: int, data_dir: Path, host: str = "127.0.0.1") -> dict[str, str]:
    """Settings for a single-node KRaft broker sized for a laptop or a CI runner.

    Replication factors of 1 and few internal partitions keep the first consumer group from
    waiting on 50 ``__consumer_offsets`` partitions; small segments keep test data cheap.
    """
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "4",
        "default.replication.factor": "1",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "min.insync.replicas": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.segment.bytes": str(16 * 1024 * 1024),
        "log.retention.hours": "24",
        "log.retention.check.interval.ms": "60000",
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "log.cleaner.threads": "1",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
    }


SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
_SCRAM_FORBIDDEN = re.compile(r'[\s,=\[\]"\\]')


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL listener with SCRAM users, for trying secure clients against the local broker.

    The broker keeps its PLAINTEXT listener on loopback for inter-broker traffic and readiness probes
    (``BrokerState.port``); clients get the SASL_SSL address as ``BrokerState.bootstrap``.
    """

    keystore: Path  # PKCS#12: the server's private key and certificate chain
    keystore_password: str
    truststore: Path  # PEM: the CA certificate(s)
    users: tuple[tuple[str, str], ...]  # (name, password), created at storage-format time
    mechanisms: tuple[str, ...] = SCRAM_MECHANISMS


def secure_listener_properties(
    props: Mapping[str, str], secure: SecureListener, *, port: int, host: str = "127.0.0.1"
) -> dict[str, str]:
    """``props`` plus a ``SASL_SSL`` listener on ``port`` that authenticates ``secure.users`` with SCRAM."""
    out = dict(props)
    out["listeners"] = f"{props['listeners']},SASL_SSL://{host}:{port}"
    out["advertised.listeners"] = f"{props['advertised.listeners']},SASL_SSL://{host}:{port}"
    out["listener.security.protocol.map"] = f"{props['listener.security.protocol.map']},SASL_SSL:SASL_SSL"
    out["sasl.enabled.mechanisms"] = ",".join(secure.mechanisms)
    for mechanism in secure.mechanisms:
        # SCRAM credentials live in the cluster metadata; the login module only has to be named
        out[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    out.update(
        {
            # PKCS#12, not PEM: a PEM keystore needs an encrypted PKCS#8 key, and Java 17 cannot read the
            # PBES2 encryption that current tools write
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(secure.keystore),
            "ssl.keystore.password": secure.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(secure.truststore),
            "ssl.client.auth": "none",
        }
    )
    return out


def scram_format_args(secure: SecureListener) -> list[str]:
    """``kafka-storage format`` arguments that create every user for every SCRAM mechanism."""
    args = []
    for mechanism in secure.mechanisms:
        if mechanism not in SCRAM_MECHANISMS:
            raise BrokerError(f"{mechanism} is not a SCRAM mechanism ({', '.join(SCRAM_MECHANISMS)})")
        for name, password in secure.users:
            if not name or not password or _SCRAM_FORBIDDEN.search(name + password):
                raise BrokerError(
                    f"SCRAM user {name!r}: name and password must be non-empty, without spaces, commas, "
                    "'=', brackets, quotes or backslashes (kafka-storage --add-scram syntax)"
                )
            args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    return args


def render_properties(props: Mapping[str, str], header: str = "") -> str:
    """Java ``.properties`` text; values here never need escaping beyond backslashes."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    for key, value in props.items():
        lines.append(f"{key}={value.replace(chr(92), chr(92) * 2)}")
    return "\n".join(lines) + "\n"


def parse_properties(text: str) -> dict[str, str]:
    """Inverse of :func:`render_properties` for the simple files we write (tests, status)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip().replace("\\\\", "\\")
    return out


_JAVA_VERSION = re.compile(r'version "(?P<major>\d+)(?:\.(?P<minor>\d+))?[^"]*"')


def parse_java_version(text: str) -> int:
    """Major version from ``java -version`` output (``"1.8.0_392"`` → 8, ``"17.0.15"`` → 17)."""
    match = _JAVA_VERSION.search(text)
    if match is None:
        raise BrokerError(
            f"could not read a Java version from `java -version` output: {text.strip()[:200]!r}; "
            f"install Java {MIN_JAVA}+ (e.g. `apt-get install openjdk-17-jre-headless`)."
        )
    major = int(match["major"])
    if major == 1 and match["minor"] is not None:
        return int(match["minor"])
    return major


def new_cluster_id() -> str:
    """A KRaft cluster id in Kafka's own format (``kafka-storage random-uuid``), without a JVM.

    Kafka prints a random UUID as URL-safe base64 without padding and re-rolls ids that start
    with ``-`` because they read like command-line flags.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


def tail(path: Path, lines: int = 30) -> str:
    """Last lines of a log file (for error messages); empty when the file does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    text = data[-64 * 1024 :].decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def jar_marker(jars: list[str]) -> str:
    """Content of the marker written after a complete Maven resolution."""
    return json.dumps({"kafka_version": KAFKA_VERSION, "jars": sorted(jars)}, indent=2) + "\n"


def jars_complete(libs_dir: Path, marker: Path) -> bool:
    """True when the marker lists this Kafka version and every jar it names is present."""
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("kafka_version") != KAFKA_VERSION:
        return False
    jars = data.get("jars")
    if not isinstance(jars, list) or not jars:
        return False
    return all((libs_dir / str(name)).is_file() and (libs_dir / str(name)).stat().st_size > 0 for name in jars)
