"""The raw Metadata probe: wire encoding, decoding, and behaviour against sockets that misbehave."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from moderation.devtools.broker import probe


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def metadata_v4_response(correlation_id: int, brokers: list[tuple[int, str, int]], cluster_id: str | None) -> bytes:
    """Hand-built Metadata v4 response body, laid out as in Kafka's MetadataResponse.json."""
    body = struct.pack(">ii", correlation_id, 0) + struct.pack(">i", len(brokers))
    for node_id, host, port in brokers:
        body += struct.pack(">i", node_id) + _string(host) + struct.pack(">i", port) + _string(None)
    body += _string(cluster_id) + struct.pack(">i", brokers[0][0] if brokers else -1) + struct.pack(">i", 0)
    return body


def test_request_layout() -> None:
    raw = probe.encode_metadata_request(correlation_id=7)
    (size,) = struct.unpack(">i", raw[:4])
    assert size == len(raw) - 4
    api_key, version, correlation, client_len = struct.unpack(">hhih", raw[4:14])
    assert (api_key, version, correlation) == (3, 4, 7)
    assert raw[14 : 14 + client_len] == b"moderation-probe"
    assert raw[14 + client_len :] == struct.pack(">ib", 0, 0)  # no topics, no auto-creation


def test_decode_response() -> None:
    payload = metadata_v4_response(9, [(1, "127.0.0.1", 19092)], "AbCdEfGhIjKlMnOpQrStUv")
    info = probe.decode_metadata_response(payload, correlation_id=9)
    assert info == probe.ClusterInfo("AbCdEfGhIjKlMnOpQrStUv", 1, ((1, "127.0.0.1", 19092),))


def test_decode_rejects_truncated_or_foreign_responses() -> None:
    payload = metadata_v4_response(9, [(1, "127.0.0.1", 19092)], "cid")
    with pytest.raises(ValueError, match="truncated"):
        probe.decode_metadata_response(payload[:20], correlation_id=9)
    with pytest.raises(ValueError, match="correlation"):
        probe.decode_metadata_response(payload, correlation_id=10)


@pytest.fixture
def fake_server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server answering each connection with the next canned reply (b"" = close at once)."""
    replies: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # closing a socket does not wake a blocked accept() on Linux
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            with conn:
                reply = replies.pop(0) if replies else b""
                if reply:
                    conn.recv(4096)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, replies
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_probe_against_socket_server(fake_server: tuple[int, list[bytes]]) -> None:
    port, replies = fake_server
    body = metadata_v4_response(1, [(1, "127.0.0.1", port)], "cid")
    replies.append(struct.pack(">i", len(body)) + body)
    assert probe.is_ready("127.0.0.1", port)
    replies.append(b"")  # accepts, then hangs up: a broker still starting its request handlers
    assert not probe.is_ready("127.0.0.1", port)
    replies.append(struct.pack(">i", -5))  # nonsense size
    assert not probe.is_ready("127.0.0.1", port)
    body = metadata_v4_response(1, [], None)  # up, but no broker registered yet
    replies.append(struct.pack(">i", len(body)) + body)
    assert not probe.is_ready("127.0.0.1", port)


def test_probe_of_closed_port_is_false() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not probe.is_ready("127.0.0.1", port, timeout_s=1.0)
