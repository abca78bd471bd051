"""``moderation produce`` and ``moderation tail``: small Kafka tools for demos, load and debugging."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from rich.progress import Progress

from moderation.core.bootstrap import resolved
from moderation.core.errors import BrokerError, ConfigError
from moderation.core.settings import Settings, load_settings
from moderation.worker.security import check_auth, client_kwargs


def read_lines(path: Path) -> list[bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return [line.rstrip(b"\r") for line in raw.split(b"\n") if line.strip()]


def post_key(line: bytes) -> bytes | None:
    """Key = post id when the line is a JSON object with a string id (so a post keeps its partition)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    post_id = doc.get("id") if isinstance(doc, dict) else None
    return post_id.encode() if isinstance(post_id, str) else None


async def start_client(client: AIOKafkaProducer | AIOKafkaConsumer, bootstrap: str) -> None:
    """Start a Kafka client, or raise one :class:`BrokerError` line when no broker answers (closing the
    client, and without aiokafka's own connection error lines)."""
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)  # "Unable connect to …": said once below, with what to do
    try:
        await client.start()
    except KafkaConnectionError:
        await client.stop()
        raise BrokerError(
            f"no Kafka broker answers at {bootstrap}: check MODERATION_BOOTSTRAP_SERVERS, or start the local "
            "broker with `moderation kafka up` (`moderation kafka status` says where it runs)"
        ) from None
    finally:
        aiokafka_log.setLevel(level)


async def produce_lines(
    bootstrap: str,
    topic: str,
    lines: list[bytes],
    *,
    rate: float = 0.0,
    repeat: int = 1,
    show: bool = True,
    prepare: Callable[[bytes], bytes] | None = None,
    kafka_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Send every line (``repeat`` times) at ``rate`` posts/s (0 = as fast as possible); returns count.

    ``prepare`` rewrites a line at the moment it is sent (e.g. to stamp ``created_at``); ``kafka_kwargs``:
    TLS/SASL for the producer (:func:`moderation.worker.security.client_kwargs`).
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", request_timeout_ms=30_000, **(kafka_kwargs or {})
    )
    await start_client(producer, bootstrap)
    total = len(lines) * repeat
    sent = 0
    start = time.perf_counter()
    try:
        with Progress(disable=not show, transient=True) as progress:
            task = progress.add_task(f"producing to {topic}", total=total)
            pending = []
            for _ in range(repeat):
                for line in lines:
                    if rate > 0:
                        delay = start + sent / rate - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    value = prepare(line) if prepare else line
                    pending.append(await producer.send(topic, value, key=post_key(line)))
                    sent += 1
                    progress.advance(task)
                    if len(pending) >= 1000:
                        await asyncio.gather(*pending)
                        pending.clear()
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def settings_with_broker() -> Settings:
    """Settings from the environment, pointed at the broker this command joins (said on stderr)."""
    settings, where = resolved(load_settings())
    print(f"kafka: {where.describe()}", file=sys.stderr)
    return settings


def run_produce(args: argparse.Namespace) -> int:
    settings = settings_with_broker()
    topic = args.topic or settings.input_topic
    lines = read_lines(Path(args.file))
    bootstrap = settings.bootstrap_servers
    asyncio.run(check_auth(settings))  # wrong credentials: one clear error line, not a traceback
    started = time.perf_counter()
    sent = asyncio.run(
        produce_lines(bootstrap, topic, lines, rate=args.rate, repeat=args.repeat, kafka_kwargs=client_kwargs(settings))
    )
    elapsed = time.perf_counter() - started
    print(f"sent {sent} posts to {topic} on {bootstrap} in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):.0f}/s)")
    return 0


async def tail_topic(settings: Settings, topic: str, *, from_beginning: bool, limit: int) -> int:
    await check_auth(settings)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        isolation_level=settings.isolation_level,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        **client_kwargs(settings),
    )
    await start_client(consumer, settings.bootstrap_servers)
    seen = 0
    try:
        async for record in consumer:
            value: object
            try:
                value = orjson.loads(record.value) if record.value else None
            except orjson.JSONDecodeError:
                value = (record.value or b"").decode("utf-8", "replace")
            line = {
                "partition": record.partition,
                "offset": record.offset,
                "key": record.key.decode("utf-8", "replace") if record.key else None,
                "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers},
                "value": value,
            }
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
            sys.stdout.flush()
            seen += 1
            if limit and seen >= limit:
                break
    finally:
        await consumer.stop()
    return seen


def run_tail(args: argparse.Namespace) -> int:
    settings = settings_with_broker()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail_topic(settings, args.topic, from_beginning=args.from_beginning, limit=args.max))
    return 0
