"""Is a Kafka broker answering? One raw Metadata request over TCP, bounded by a socket timeout.

A hand-rolled request instead of a client library because readiness checks run in plain (non-async)
code, must never retry behind our back and must give up at a hard deadline. Metadata v4 is the
oldest version Kafka 4.x still serves (KIP-896) and the newest without flexible encoding.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

METADATA_API_KEY = 3
METADATA_VERSION = 4
CLIENT_ID = b"moderation-probe"


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    controller_id: int
    brokers: tuple[tuple[int, str, int], ...]  # (node_id, host, port)


def encode_metadata_request(correlation_id: int) -> bytes:
    """Size-prefixed Metadata v4 request for no topics (we only want the broker list)."""
    header = struct.pack(">hhih", METADATA_API_KEY, METADATA_VERSION, correlation_id, len(CLIENT_ID))
    body = struct.pack(">ib", 0, 0)  # topics: empty array; allow_auto_topic_creation: false
    payload = header + CLIENT_ID + body
    return struct.pack(">i", len(payload)) + payload


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError("truncated Metadata response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        if self.pos + length > len(self.data):
            raise ValueError("truncated Metadata response")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8")


def decode_metadata_response(payload: bytes, correlation_id: int) -> ClusterInfo:
    """Parse a Metadata v4 response body (without the size prefix) up to the broker list."""
    reader = _Reader(payload)
    got = reader.take(">i")
    if got != correlation_id:
        raise ValueError(f"correlation id {got} does not match request {correlation_id}")
    reader.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(reader.take(">i")):
        node_id = reader.take(">i")
        host = reader.string() or ""
        port = reader.take(">i")
        reader.string()  # rack
        brokers.append((node_id, host, port))
    cluster_id = reader.string()
    controller_id = reader.take(">i")
    return ClusterInfo(cluster_id=cluster_id, controller_id=controller_id, brokers=tuple(brokers))


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def metadata(host: str, port: int, timeout_s: float = 2.0) -> ClusterInfo:
    """One Metadata round trip; raises OSError/ValueError when the broker is not (yet) serving."""
    correlation_id = 1
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(encode_metadata_request(correlation_id))
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if not 0 < size < 16 * 1024 * 1024:
            raise ValueError(f"implausible Metadata response size {size}")
        return decode_metadata_response(_recv_exact(sock, size), correlation_id)


def is_ready(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when the broker serves metadata and lists at least one broker (itself)."""
    try:
        info = metadata(host, port, timeout_s)
    except (OSError, ValueError):
        return False
    return bool(info.brokers) and info.cluster_id is not None
