"""``moderation demo``: the whole product on this machine in one command.

Starts (or reuses) the local broker, starts one real worker process and the reviewer console,
streams the committed sample posts through it, shows decisions live, then prints a summary and the
console's URL — the posts sent to review wait there to be tried (in a terminal, until Enter; without
one it says it is stopping and how to start the console yourself) — and stops what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from moderation.core.errors import InputError
from moderation.core.settings import Settings, load_settings
from moderation.devtools.launch import WorkerProcess, free_port, kafka_broker
from moderation.devtools.tools import produce_lines
from moderation.pipeline.decode import decode_post

SAMPLE_FILE = "sample_posts.jsonl"
DEMO_REVIEWER = "demo:demo"  # the demo console's login unless MODERATION_CONSOLE_USERS is set
ACTION_STYLE = {"allow": "green", "review": "yellow", "block": "bold red"}


def sample_lines() -> list[bytes]:
    raw = resources.files("moderation.devtools.demo_data").joinpath(SAMPLE_FILE).read_bytes()
    return [line for line in raw.split(b"\n") if line.strip()]


def stamp(lines: list[bytes], run_id: str, repeat: int, settings: Settings) -> tuple[list[bytes], dict[str, str]]:
    """Give every post a run-unique id, so decisions of earlier runs are never counted.

    Returns the lines to send and the text of each post the worker will decide on (the rest must
    end up in the DLQ); validity is judged by the worker's own decoder.
    """
    out: list[bytes] = []
    texts: dict[str, str] = {}
    for r in range(repeat):
        for line in lines:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                out.append(line)
                continue
            if isinstance(doc, dict) and isinstance(doc.get("id"), str):
                doc["id"] = f"{run_id}-{doc['id']}-{r}"
                line = orjson.dumps(doc)
            out.append(line)
            try:
                post = decode_post(
                    line, max_message_bytes=settings.max_message_bytes, max_text_chars=settings.max_text_chars
                )
            except InputError:
                continue
            texts[post.id] = post.text
    return out, texts


@dataclass
class Tally:
    expected_valid: int
    expected_bad: int
    actions: Counter[str] = field(default_factory=Counter)
    escalated: int = 0  # posts with at least one escalation trigger (each goes to LLM review once)
    triggers: Counter[str] = field(default_factory=Counter)  # trigger → posts it fired on
    dlq: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    recent: deque[tuple[str, str, str, str, str, str]] = field(default_factory=lambda: deque(maxlen=18))
    first_ms: float | None = None
    last_ms: float | None = None

    @property
    def decided(self) -> int:
        return sum(self.actions.values())

    def done(self) -> bool:
        return self.decided >= self.expected_valid and sum(self.dlq.values()) >= self.expected_bad


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def render(tally: Tally) -> Group:
    table = Table(title="moderation.decisions (live)", expand=True)
    table.add_column("post", ratio=3, no_wrap=True, overflow="ellipsis")
    table.add_column("action", min_width=6, no_wrap=True)
    table.add_column("top labels | category", ratio=2, no_wrap=True, overflow="ellipsis")
    table.add_column("reason", ratio=3, no_wrap=True, overflow="ellipsis")
    table.add_column("ms", min_width=4, justify="right", no_wrap=True)
    for text, action, labels, reason, latency, _ in tally.recent:
        table.add_row(text, f"[{ACTION_STYLE[action]}]{action}[/]", labels, reason, latency)
    counts = "  ".join(f"[{ACTION_STYLE[a]}]{a}[/] {tally.actions[a]}" for a in ("allow", "review", "block"))
    return Group(
        table,
        f"decided {tally.decided}/{tally.expected_valid}   {counts}   "
        f"dlq {sum(tally.dlq.values())}/{tally.expected_bad}   escalated {tally.escalated}",
    )


async def watch(
    bootstrap: str,
    settings: Settings,
    tally: Tally,
    texts: dict[str, str],
    live: Live,
    timeout_s: float,
    positioned: asyncio.Event,
) -> None:
    """Follow decisions and the DLQ from their current ends until every post is accounted for."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=settings.isolation_level
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in (settings.decisions_topic, settings.dlq_topic)
            for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp, end in ends.items():
            consumer.seek(tp, end)
        positioned.set()
        deadline = time.monotonic() + timeout_s
        while not tally.done() and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for rec in records:
                    if tp.topic == settings.dlq_topic:
                        headers = dict(rec.headers)
                        tally.dlq[headers.get("error.class", b"?").decode()] += 1
                        continue
                    doc = orjson.loads(rec.value)
                    if doc["post_id"] not in texts:
                        continue  # another run's post
                    absorb(tally, doc, texts)
            live.update(render(tally))
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # topic created by the worker just now
    return consumer.partitions_for_topic(topic) or {0}


def absorb(tally: Tally, doc: dict[str, Any], texts: dict[str, str]) -> None:
    created = doc.get("created_at")
    decided = doc.get("decided_at")
    latency = ""
    if created and decided:
        ms = (_parse_iso(decided) - _parse_iso(created)).total_seconds() * 1000
        tally.latencies_ms.append(ms)
        latency = f"{ms:.0f}"
    now = time.time() * 1000
    tally.first_ms = tally.first_ms or now
    tally.last_ms = now
    tally.actions[doc["action"]] += 1
    triggers = set(doc.get("triggers") or ())
    tally.escalated += bool(triggers)
    tally.triggers.update(triggers)
    top = sorted(
        (
            (f"{t}.{label}", p)
            for t, probs in doc["scores"].items()
            if t != "category"
            for label, p in probs.items()
            if label != "ham"
        ),
        key=lambda kv: -kv[1],
    )[:2]
    category = max(doc["scores"].get("category", {"-": 0}).items(), key=lambda kv: kv[1])[0]
    labels = ", ".join(f"{name.split('.', 1)[1]} {p:.2f}" for name, p in top) + f" | {category}"
    reason = "; ".join(doc.get("reasons", [])[:2]) or "below all thresholds"
    tally.recent.appendleft((texts[doc["post_id"]], doc["action"], labels, reason, latency, doc["post_id"]))


def _parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    console = Console()
    with kafka_broker(settings, console) as bootstrap:
        return _run(args, settings, console, bootstrap)


def _run(args: argparse.Namespace, settings: Settings, console: Console, bootstrap: str) -> int:
    run_id = f"r{int(time.time())}"
    lines, texts = stamp(sample_lines(), run_id, args.repeat, settings)
    bad = len(lines) - len(texts)
    log_path = Path(settings.cache_dir) / "demo-worker.log"
    log_path.unlink(missing_ok=True)
    console.print(f"[bold]Starting a worker[/] (logs: {log_path}) …")
    worker = WorkerProcess("demo-worker", {"MODERATION_BOOTSTRAP_SERVERS": bootstrap}, log_path)
    review_console, console_url = start_console(bootstrap, settings)
    code = 1
    try:
        with console.status("loading models and joining the consumer group …"):
            worker.wait_ready(180)
        console.print(f"Worker ready. Streaming {len(lines)} posts ({bad} malformed) at {args.rate:.0f}/s.")
        tally = Tally(expected_valid=len(texts), expected_bad=bad)
        start = time.perf_counter()
        asyncio.run(_stream(bootstrap, settings, lines, texts, tally, args.rate, console))
        elapsed = time.perf_counter() - start
        console.print()
        summary(console, tally, elapsed)
        code = 0 if tally.done() else 1
        offer_console(console, review_console, console_url, tally.actions["review"], console_port=settings.console_port)
    finally:
        if review_console is not None:
            review_console.terminate(15)
        console.print(f"Worker stopped (exit {worker.terminate(settings.shutdown_grace_s + 10)}).")
    return code


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_console(bootstrap: str, settings: Settings) -> tuple[WorkerProcess | None, str]:
    """The reviewer console on 127.0.0.1 (port 8080 if free), next to the worker; the demo goes on without it."""
    port = settings.console_port if _port_free(settings.console_port) else free_port()
    env = {
        "MODERATION_BOOTSTRAP_SERVERS": bootstrap,
        "MODERATION_CONSOLE_PORT": str(port),
        "MODERATION_HTTP_HOST": "127.0.0.1",
        "MODERATION_CONSOLE_USERS": os.environ.get("MODERATION_CONSOLE_USERS") or DEMO_REVIEWER,
    }
    log_path = Path(settings.cache_dir) / "demo-console.log"
    log_path.unlink(missing_ok=True)
    try:
        proc = WorkerProcess("demo-console", env, log_path, module=("moderation.cli", "console"))
    except OSError:
        return None, ""
    return proc, f"http://127.0.0.1:{port}/"


def offer_console(
    console: Console,
    proc: WorkerProcess | None,
    url: str,
    in_review: int,
    *,
    console_port: int = 8080,
    interactive: bool | None = None,
) -> None:
    """Say where the console is; in a terminal (``interactive``, default: stdin is one), keep it up until
    Enter so the queue can be tried; without one, say that it stops now and how to start it yourself."""
    if proc is None or proc.proc.poll() is not None:
        console.print("[yellow]The reviewer console did not start[/] (log: demo-console.log in the cache dir).")
        return
    own_users = bool(os.environ.get("MODERATION_CONSOLE_USERS"))
    user = "a MODERATION_CONSOLE_USERS login" if own_users else "demo / demo"
    console.print(
        f"[bold]Reviewer console:[/] {url} — log in as {user}; {in_review} post(s) of this run wait in its queue."
    )
    if sys.stdin.isatty() if interactive is None else interactive:
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            input("Press Enter to stop the console and the worker … ")
        return
    command = "MODERATION_HTTP_HOST=127.0.0.1 moderation console"
    command = command if own_users else f"MODERATION_CONSOLE_USERS={DEMO_REVIEWER} {command}"
    console.print(
        "[yellow]No terminal to wait on (stdin is not a TTY): stopping the console now.[/] The queue stays on the "
        f"broker; to try it, run `moderation kafka up` then `{command}` (http://127.0.0.1:{console_port}/).",
        soft_wrap=True,
    )


async def _stream(
    bootstrap: str,
    settings: Settings,
    lines: list[bytes],
    texts: dict[str, str],
    tally: Tally,
    rate: float,
    console: Console,
) -> None:
    timeout_s = 60 + len(lines) / max(rate, 1)
    with Live(render(tally), console=console, refresh_per_second=8) as live:
        positioned = asyncio.Event()
        watcher = asyncio.create_task(watch(bootstrap, settings, tally, texts, live, timeout_s, positioned))
        await positioned.wait()
        await produce_lines(bootstrap, settings.input_topic, lines, rate=rate, show=False, prepare=_with_created_at)
        await watcher


def _with_created_at(line: bytes) -> bytes:
    """created_at = now, so latency is measured from the producer's side."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if isinstance(doc, dict) and isinstance(doc.get("id"), str):
        doc["created_at"] = time.time_ns() // 1_000_000
        return orjson.dumps(doc)
    return line


def summary(console: Console, tally: Tally, elapsed: float) -> None:
    table = Table(title="Demo summary")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for action in ("allow", "review", "block"):
        table.add_row(f"posts → {action}", str(tally.actions[action]))
    table.add_row("posts escalated to LLM review", str(tally.escalated))
    if tally.triggers:
        table.add_row("  posts per trigger", ", ".join(f"{k} {v}" for k, v in tally.triggers.most_common()))
    table.add_row("dead-lettered", ", ".join(f"{k} {v}" for k, v in tally.dlq.most_common()) or "0")
    span = ((tally.last_ms or 0) - (tally.first_ms or 0)) / 1000
    table.add_row("decided / expected", f"{tally.decided} / {tally.expected_valid}")
    table.add_row("throughput (decisions/s, paced by --rate)", f"{tally.decided / max(span, 1e-3):.0f}")
    table.add_row("latency p50 (created → decided)", f"{percentile(tally.latencies_ms, 50):.0f} ms")
    table.add_row("latency p99", f"{percentile(tally.latencies_ms, 99):.0f} ms")
    table.add_row("wall time", f"{elapsed:.1f} s")
    console.print(table)
