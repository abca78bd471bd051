"""``moderation bench faults``: the fault suite — no loss and no crash-loop under kills, outages, poison, codecs.

Everything runs against real processes: a private single-node broker (its own state dir and port, so
the shared broker other tests use is never touched) and real ``moderation worker`` processes started
as Kubernetes starts them (:class:`moderation.devtools.launch.WorkerProcess`). Each scenario gets fresh topics
and its own consumer group; outcomes are matched to inputs by their origin (partition, offset), which
every decision record and every DLQ record carries.

1. **kill** — a stream of posts; the worker is SIGKILLed ``--kills`` times mid-stream and restarted
   each time with the same worker id, HTTP port and environment (as a pod is), and the broker is
   stopped and started once (same state dir, same port). Counts sent / decided / missing /
   duplicates; per fault: the decided-but-uncommitted posts at that moment (what at-least-once
   redelivers), the duplicates that followed it, and the time from the restart to the first new
   decision.
2. **poison** — a corpus of malformed, hostile and edge-case messages (:func:`poison_corpus`), fed one
   at a time, each between valid posts. Each must give exactly one DLQ record or exactly one decision,
   the valid posts after it must be decided, and the worker must never exit.
3. **codecs** — posts compressed with gzip, snappy, lz4 and zstd, by aiokafka's producer and by
   librdkafka (confluent-kafka); each decided exactly once.

A worker that exits on its own is restarted (with a short back-off, as Kubernetes would) and declared
**crash-looping** once it exits ``CRASH_LOOP_EXITS`` times without writing a single output record in
between. In the poison and codec scenarios the suite then does what an operator would: commits the
group's offset past the offending message(s), restarts the worker and goes on, so one crash does not
hide the rest of the corpus. Any loss, any crash-loop and any unexpected exit fails the suite (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moderation.core.errors import ConfigError, ModerationError
from moderation.core.settings import Settings, load_settings
from moderation.devtools.broker import KAFKA_VERSION, LocalKafka
from moderation.devtools.broker.local import free_port as free_broker_port
from moderation.devtools.launch import OUTPUTS, WorkerProcess, create_topics, free_port, topic_env

CRASH_LOOP_EXITS = 2
"""Exits without any output record in between after which a worker is declared crash-looping."""
INPUT_MAX_MESSAGE_BYTES = 2_000_000
"""The poison input topic's ``max.message.bytes``: large enough for the ~1 MB poison messages."""
START_TIMEOUT_S = 180.0
RESTART_BOUND_S = 10.0
"""Full mode: a worker restarted after SIGKILL decides its first post within this (static membership)."""
CODECS = ("gzip", "snappy", "lz4", "zstd")
CLIENTS = ("aiokafka", "librdkafka")
JSON_NAME = "faults.json"


@dataclass(frozen=True)
class Profile:
    """How big a run is: ``quick`` for ``make test`` (tiny model, bounded), ``full`` for ``make faults``."""

    name: str
    posts: int  # kill scenario stream
    kills: int
    broker_restarts: int
    rate: float  # posts/s the stream is produced at
    valid_after: int  # valid posts after each poison message (same partition)
    codec_posts: int  # posts per client × codec
    outcome_timeout_s: float  # one poison message / codec batch: time to an outcome
    stall_timeout_s: float  # kill scenario: no new decision for this long ends it (the rest is missing)


QUICK = Profile(
    "quick",
    posts=3000,
    kills=2,
    broker_restarts=1,
    rate=600,
    valid_after=2,
    codec_posts=20,
    outcome_timeout_s=25,
    stall_timeout_s=120,
)
FULL = Profile(
    "full",
    posts=30_000,
    kills=5,
    broker_restarts=1,
    rate=250,  # about one worker's speed on 2 CPU cores, so every fault hits while posts are still arriving
    valid_after=3,
    codec_posts=200,
    outcome_timeout_s=60,
    stall_timeout_s=240,
)


class FaultError(ModerationError):
    """The suite itself could not run (broker or topics), as opposed to a check that failed."""


# --- the poison corpus ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poison:
    kind: str
    key: bytes | None
    value: bytes | None
    expect: str  # "dlq", "decision", or "either" (a valid post the worker may accept or reject)
    what: str


def _nest_objects(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * depth + leaf + b"}" * depth


def _nest_arrays(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def poison_corpus(max_text_chars: int, max_message_bytes: int) -> list[Poison]:
    """Every kind of message that must not stop a worker: malformed, hostile, huge and edge-case input.

    ``expect`` says what a correct worker does with it; "either" marks inputs that are valid posts but
    hard to emit (huge or deeply nested context, extreme dates), where a DLQ record with a reason is as
    acceptable as a decision — exactly one of them, never both, never neither.
    """
    out: list[Poison] = []

    def add(kind: str, value: bytes | None, expect: str, what: str, key: bytes | str | None = "id") -> None:
        k = f"poison-{kind}".encode() if key == "id" else key
        assert not isinstance(k, str)
        out.append(Poison(kind, k, value, expect, what))

    def doc(kind: str, body: bytes) -> bytes:
        """A JSON object with this kind's id and ``body`` spliced in as its remaining members."""
        head = b'{"id":"poison-' + kind.encode() + b'"'
        return head + (b"," + body if body else b"") + b"}"

    text = b'"text":"an ordinary post about the match"'

    def with_text(kind: str, body: bytes = b"") -> bytes:
        return doc(kind, text + (b"," + body if body else b""))

    # nesting
    add(
        "context_nested_300",
        with_text("context_nested_300", b'"context":' + _nest_objects(300)),
        "either",
        "valid post, context nested 300 objects deep (parses; the output records nest deeper)",
    )
    add(
        "context_nested_2000",
        with_text("context_nested_2000", b'"context":' + _nest_objects(2000)),
        "dlq",
        "context nested 2,000 objects deep (beyond any JSON parser's recursion limit)",
    )
    add(
        "context_arrays_nested_200",
        with_text("context_arrays_nested_200", b'"context":{"a":' + _nest_arrays(200) + b"}"),
        "either",
        "valid post, context holding arrays nested 200 deep",
    )
    add("arrays_nested_5000", _nest_arrays(5000), "dlq", "top-level arrays nested 5,000 deep")
    # created_at
    for kind, value, expect in (
        ("created_at_year_1", b'"0001-01-01T00:00:00+01:00"', "either"),
        ("created_at_year_9999", b'"9999-12-31T23:59:59-01:00"', "either"),
        ("created_at_year_0", b'"0000-01-01T00:00:00Z"', "dlq"),
        ("created_at_month_13", b'"2024-13-01T00:00:00Z"', "dlq"),
        ("created_at_no_offset", b'"2024-01-01T00:00:00"', "dlq"),
        ("created_at_epoch_1e18", b"1000000000000000000", "dlq"),
        ("created_at_epoch_1e29", b"100000000000000000000000000000", "dlq"),
        ("created_at_negative", b"-1", "dlq"),
        ("created_at_float", b"1700000000000.5", "either"),
        ("created_at_bool", b"true", "dlq"),
        ("created_at_object", b'{"ms":1}', "dlq"),
        ("created_at_nan", b"NaN", "dlq"),
        ("created_at_infinity", b"Infinity", "dlq"),
        ("created_at_neg_infinity", b"-Infinity", "dlq"),
    ):
        add(kind, with_text(kind, b'"created_at":' + value), expect, f"created_at = {value.decode()}")
    add("number_1e400", with_text("number_1e400", b'"context":{"n":1e400}'), "dlq", "a number that overflows a double")
    # size
    filler = max_message_bytes - 1000
    add(
        "raw_just_under_limit",
        doc("raw_just_under_limit", b'"text":"' + b"a" * filler + b'"'),
        "dlq",
        f"a {filler + 50:,}-byte message just under MAX_MESSAGE_BYTES (text over the char limit)",
    )
    add(
        "raw_just_over_limit",
        doc("raw_just_over_limit", b'"text":"' + b"a" * (max_message_bytes + 1000) + b'"'),
        "dlq",
        "a message just over MAX_MESSAGE_BYTES",
    )
    add(
        "context_980kb",
        with_text("context_980kb", b'"context":{"blob":"' + b"x" * 980_000 + b'"}'),
        "either",
        "valid short post with a 980 KB context (its output records would exceed the broker's limit)",
    )
    add(
        "author_id_900kb",
        with_text("author_id_900kb", b'"author_id":"' + b"u" * 900_000 + b'"'),
        "either",
        "valid post with a 900 KB author_id",
    )
    add(
        "context_20k_keys",
        with_text("context_20k_keys", b'"context":{' + b",".join(b'"k%d":%d' % (i, i) for i in range(20_000)) + b"}"),
        "either",
        "context with 20,000 keys",
    )
    add(
        "context_array_10k",
        with_text("context_array_10k", b'"context":{"a":[' + b",".join([b"0"] * 10_000) + b"]}"),
        "either",
        "context holding a 10,000-element array",
    )
    add("array_10k", b"[" + b",".join([b"0"] * 10_000) + b"]", "dlq", "a top-level 10,000-element array")
    # null / empty
    add("tombstone", None, "dlq", "null value (tombstone)")
    add("empty_bytes", b"", "dlq", "empty value")
    # encodings
    add("bad_utf8", doc("bad_utf8", b'"text":"caf\xc3\x28"'), "dlq", "invalid UTF-8 byte sequence")
    add("utf8_bom", b"\xef\xbb\xbf" + with_text("utf8_bom"), "either", "UTF-8 byte-order mark before the JSON")
    add(
        "lone_surrogate_escape",
        doc("lone_surrogate_escape", b'"text":"bad \\ud800 text"'),
        "dlq",
        'lone surrogate escape "\\ud800" in text',
    )
    add(
        "surrogate_bytes",
        doc("surrogate_bytes", b'"text":"bad \xed\xa0\x80 text"'),
        "dlq",
        "UTF-8-encoded surrogate (CESU-8) in text",
    )
    add("overlong_utf8", doc("overlong_utf8", b'"text":"over \xc0\xaf long"'), "dlq", "overlong UTF-8 encoding")
    add("latin1", doc("latin1", b'"text":"caf\xe9 au lait"'), "dlq", "Latin-1 text")
    add("utf16", with_text("utf16").decode().encode("utf-16"), "dlq", "the JSON encoded as UTF-16")
    add("key_not_utf8_no_id", b'{"text":"no id and a binary key"}', "dlq", "no id, key not UTF-8", key=b"\xff\xfe\xfd")
    # wrong types, field by field
    for label, value in (
        ("int", b"123"),
        ("list", b"[]"),
        ("object", b"{}"),
        ("bool", b"true"),
        ("empty", b'""'),
        ("blank", b'"   "'),
    ):
        add(f"id_{label}", b'{"id":' + value + b"," + text + b"}", "dlq", f"id = {value.decode()}")
    add("id_null_no_key", b'{"id":null,' + text + b"}", "dlq", "id null and no key", key=None)
    add("id_missing_key_stands_in", b"{" + text + b"}", "decision", "no id: the Kafka key stands in")
    add("id_10k_chars", b'{"id":"' + b"i" * 10_000 + b'",' + text + b"}", "dlq", "an id of 10,000 characters")
    add("id_256_chars", b'{"id":"' + b"j" * 256 + b'",' + text + b"}", "decision", "an id of 256 characters")
    for field_name, value, label in (
        ("text", b"17", "int"),
        ("text", b"null", "null"),
        ("text", b'["a"]', "list"),
        ("text", b'{"t":"a"}', "object"),
        ("text", b"false", "bool"),
        ("text", b"1e308", "float"),
        ("author_id", b"5", "int"),
        ("lang", b'{"code":"en"}', "object"),
        ("context", b'"a string"', "string"),
        ("context", b"[1,2]", "list"),
        ("context", b"42", "number"),
    ):
        kind = f"{field_name}_{label}"
        body = (b"" if field_name == "text" else text + b",") + b'"' + field_name.encode() + b'":' + value
        add(kind, doc(kind, body), "dlq", f"{field_name} = {value.decode()}")
    add("text_missing", doc("text_missing", b'"lang":"en"'), "dlq", "no text field")
    add("text_empty", doc("text_empty", b'"text":""'), "dlq", "empty text")
    add("text_whitespace", doc("text_whitespace", b'"text":" \\n\\t "'), "dlq", "whitespace-only text")
    add(
        "text_over_limit",
        doc("text_over_limit", b'"text":"' + b"x" * (max_text_chars + 1) + b'"'),
        "dlq",
        f"text of {max_text_chars + 1:,} characters (one over MAX_TEXT_CHARS)",
    )
    add(
        "text_at_limit",
        doc("text_at_limit", b'"text":"' + b"y " * (max_text_chars // 2) + b'"'),
        "decision",
        f"text of exactly {max_text_chars:,} characters",
    )
    # not an object / not JSON
    for kind, value in (
        ("json_array", b"[1,2,3]"),
        ("json_string", b'"a post"'),
        ("json_number", b"42"),
        ("json_null", b"null"),
        ("json_true", b"true"),
        ("truncated_json", b'{"id":"x","text":"hel'),
        ("trailing_garbage", b'{"id":"poison-trailing_garbage","text":"a"} xyz'),
        ("single_quotes", b"{'id':'x','text':'a'}"),
        ("json_comment", b'{"id":"x",/* c */"text":"a"}'),
        ("binary_garbage", random.Random(7).randbytes(1000)),
        ("gzip_bytes", b"\x1f\x8b\x08\x00" + random.Random(8).randbytes(200)),
    ):
        add(kind, value, "dlq", f"not a JSON object: {value[:24]!r}")
    # duplicate keys, odd characters
    add(
        "duplicate_keys",
        b'{"id":"poison-duplicate_keys","text":"first","text":"second","id":"poison-duplicate_keys"}',
        "either",
        "duplicate keys",
    )
    add("null_byte_raw", doc("null_byte_raw", b'"text":"nul \x00 byte"'), "dlq", "raw NUL byte in a string")
    add("null_byte_escaped", doc("null_byte_escaped", b'"text":"nul \\u0000 byte"'), "either", "escaped NUL in text")
    add(
        "control_chars_raw",
        doc("control_chars_raw", b'"text":"ctl \x01\x1f chars"'),
        "dlq",
        "raw control characters in a string",
    )
    add(
        "control_chars_escaped",
        doc("control_chars_escaped", b'"text":"ctl \\u0001\\u001b[31m\\u007f chars"'),
        "either",
        "escaped control characters and an ANSI escape in text",
    )
    add(
        "text_zero_width",
        doc("text_zero_width", '"text":"\u200b\u200b\u200d\ufeff"'.encode()),
        "either",
        "text of zero-width characters only",
    )
    add(
        "text_zalgo",
        doc("text_zalgo", ('"text":"' + "z\u0301\u0316\u0342" * 2000 + '"').encode()),
        "either",
        "8,000 characters of stacked combining marks",
    )
    add(
        "text_nfkc_expansion",
        doc("text_nfkc_expansion", ('"text":"' + "\ufdfa" * 1000 + '"').encode()),
        "either",
        "1,000 characters that NFKC-normalise to 18,000",
    )
    add(
        "text_emoji",
        doc("text_emoji", b'"text":"' + b"\\ud83d\\ude00 " * 500 + b'"'),
        "decision",
        "500 emoji as surrogate-pair escapes",
    )
    add(
        "text_rtl_override",
        doc("text_rtl_override", '"text":"\u202egnp.exe \u2066hello\u2069"'.encode()),
        "decision",
        "bidi override characters",
    )
    add("huge_key_100kb", with_text("huge_key_100kb"), "either", "a valid post with a 100 KB key", key=b"k" * 100_000)
    return out


# --- observing outputs ----------------------------------------------------------------------------------


Origin = tuple[int, int]  # (partition, offset) of an input message


class Observer:
    """Reads a deployment's decisions and DLQ topics from the beginning and tallies them by origin."""

    def __init__(self, bootstrap: str, decisions: str, dlq: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.topics = (decisions, dlq)
        self.partitions = partitions
        self.consumer: AIOKafkaConsumer | None = None
        self.decided: dict[str, list[int]] = defaultdict(list)  # post id → decision record timestamps (ms)
        self.decided_at: dict[Origin, int] = Counter()  # origin → decision records
        self.dlq_at: dict[Origin, list[str]] = defaultdict(list)  # origin → error.class of each DLQ record
        self.duplicate_ts: list[int] = []  # timestamps of decision records beyond a post's first
        self.last_output_ms = 0  # newest output record timestamp

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await asyncio.wait_for(self.consumer.start(), 30)
        tps = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def stop(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.consumer.stop(), 30)

    async def poll(self, timeout_ms: int = 200) -> int:
        assert self.consumer is not None
        try:
            batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        except KafkaError:  # the broker is being restarted: try again on the next poll
            await asyncio.sleep(timeout_ms / 1000)
            return 0
        n = 0
        for tp, records in batches.items():
            for rec in records:
                n += 1
                self.last_output_ms = max(self.last_output_ms, rec.timestamp)
                if tp.topic == self.topics[0]:
                    self._decision(rec)
                else:
                    headers = {k: v for k, v in rec.headers or ()}
                    try:
                        origin = (int(headers["origin.partition"]), int(headers["origin.offset"]))
                    except (KeyError, ValueError):
                        origin = (-1, -1)
                    self.dlq_at[origin].append(headers.get("error.class", b"?").decode(errors="replace"))
        return n

    def _decision(self, rec: Any) -> None:
        try:
            doc = orjson.loads(rec.value)
            origin = (int(doc["origin"]["partition"]), int(doc["origin"]["offset"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            origin = (-1, -1)
        key = rec.key.decode(errors="replace") if rec.key is not None else ""
        stamps = self.decided[key]
        if stamps:
            self.duplicate_ts.append(rec.timestamp)
        stamps.append(rec.timestamp)
        self.decided_at[origin] += 1

    async def drain(self, idle_s: float = 1.0, max_s: float = 30.0) -> None:
        """Poll until nothing arrived for ``idle_s`` (the records already written are all read)."""
        deadline = time.monotonic() + max_s
        quiet = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet < idle_s:
            if await self.poll(100):
                quiet = time.monotonic()

    def first_decision_after(self, t_ms: int) -> int | None:
        found = [ts for stamps in self.decided.values() for ts in stamps if ts >= t_ms]
        return min(found) if found else None

    def outcomes(self, origin: Origin) -> tuple[int, list[str]]:
        return self.decided_at.get(origin, 0), self.dlq_at.get(origin, [])


# --- a supervised worker --------------------------------------------------------------------------------


@dataclass
class Exit:
    at: float  # wall clock
    code: int | None
    error: str  # the worker's last error log line, summarised
    after_output: bool  # the worker wrote an output record since it was (re)started


class Supervised:
    """One worker "pod": restarted with the same name, port and environment whenever it stops.

    ``exits`` are the exits the suite did not cause; ``crash_looping`` is set once the worker exited
    ``CRASH_LOOP_EXITS`` times in a row without writing any output record in between.
    """

    def __init__(self, name: str, env: Mapping[str, str], workdir: Path, observer: Observer) -> None:
        self.name = name
        self.env = dict(env)
        self.log_path = workdir / f"{name}.log"
        self.observer = observer
        self.http_port = free_port()
        self.worker: WorkerProcess | None = None
        self.started_at: list[float] = []
        self.exits: list[Exit] = []
        self.kills = 0
        self.crash_looping = False
        self._silent_exits = 0

    def start(self) -> None:
        self.started_at.append(time.time())
        self.worker = WorkerProcess(self.name, self.env, self.log_path, self.http_port)

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        assert self.worker is not None
        await asyncio.to_thread(self.worker.wait_ready, timeout_s)

    def alive(self) -> bool:
        return self.worker is not None and self.worker.proc.poll() is None

    def output_since_start(self) -> bool:
        return bool(self.started_at) and self.observer.last_output_ms >= self.started_at[-1] * 1000

    async def kill(self) -> None:
        assert self.worker is not None
        self.kills += 1
        await asyncio.to_thread(self.worker.kill)

    async def check(self) -> bool:
        """Restart the worker if it exited on its own (after a back-off); False once it is crash-looping."""
        if self.crash_looping:
            return False
        if self.worker is None or self.worker.proc.poll() is None:
            return True
        code = self.worker.proc.returncode
        progressed = self.output_since_start()
        self.exits.append(Exit(time.time(), code, last_error(self.log_path), progressed))
        self._silent_exits = 0 if progressed else self._silent_exits + 1
        if self._silent_exits >= CRASH_LOOP_EXITS:
            self.crash_looping = True
            return False
        await asyncio.sleep(min(2.0**self._silent_exits, 8.0))  # Kubernetes' CrashLoopBackOff, shortened
        self.start()
        return True

    async def give_up(self) -> None:
        """Declare the worker crash-looping and stop the restarted one (SIGTERM: it leaves the group)."""
        self.crash_looping = True
        await self.stop()

    def forgive(self) -> None:
        """After the suite skipped what the worker crashed on: a fresh start, not a continued loop."""
        self.crash_looping = False
        self._silent_exits = 0

    async def stop(self) -> int | None:
        if self.worker is None or self.worker.proc.poll() is not None:
            return None
        return await asyncio.to_thread(self.worker.terminate, 40)

    def starting_lines(self) -> int:
        return sum(1 for e in log_events(self.log_path) if e.get("event") == "starting")


def log_events(path: Path) -> Iterator[dict[str, Any]]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return
    for line in lines:
        if line.startswith(b"{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(line)
                if isinstance(doc, dict):
                    yield doc


def last_error(path: Path) -> str:
    """Why the worker's latest run failed, from its log since its last ``starting`` line: the last event
    that names an exception type (``event: ErrorType: message``), else the first error logged with a
    traceback (the root cause, e.g. a fetcher crash), else the last error, else the last line."""
    typed = traced = other = ""
    for e in log_events(path):
        if e.get("event") == "starting":
            typed = traced = other = ""
        elif e.get("error_type"):
            typed = f"{e.get('event')}: {e['error_type']}: {str(e.get('error', ''))[:200]}"
        elif e.get("level") in ("error", "critical"):
            other = str(e.get("event"))[:240]
            if e.get("exception") and not traced:
                traced = other
    if typed or traced or other:
        return typed or traced or other
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:240] if lines else ""
    return ""


# --- the suite --------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class FaultEvent:
    kind: str  # "kill" or "broker restart"
    at_s: float  # since the scenario started
    decided_before: int
    uncommitted_decided: int | None  # decided posts whose offset was not committed: what must be redone
    duplicates: int = 0  # decision records after this fault (and before the next) for already decided posts
    restart_to_first_decision_s: float | None = None
    downtime_s: float | None = None  # broker restarts: stop + start
    _t_ms: int = 0  # wall clock of the restart (worker) / broker up again, for the first-decision time


class Suite:
    def __init__(
        self,
        settings: Settings,
        profile: Profile,
        workdir: Path,
        progress: Progress,
        console: Console,
        texts: Sequence[str],
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.workdir = workdir
        self.progress = progress
        self.console = console
        self.texts = texts
        self.partitions = settings.topic_partitions
        self.kafka = LocalKafka(
            Settings(kafka_state_dir=workdir / "broker", cache_dir=settings.cache_dir),
            console=Console(file=io.StringIO()),
        )
        self.port = free_broker_port()
        self.bootstrap = ""
        self.run_id = f"faults-{int(time.time())}"
        self.checks: list[Check] = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))

    # -- infrastructure --

    async def broker_up(self) -> float:
        started = time.monotonic()
        up = await asyncio.to_thread(self.kafka.up, self.port)
        self.bootstrap = up.state.bootstrap
        return time.monotonic() - started

    async def broker_down(self) -> None:
        await asyncio.to_thread(self.kafka.down)

    async def deployment(self, label: str, input_config: Mapping[str, str] | None = None) -> dict[str, str]:
        prefix = f"{self.run_id}-{label}"
        topics = {name: f"{prefix}.{name}" for name in ("posts", *OUTPUTS)}
        await create_topics(self.bootstrap, [topics["posts"]], self.partitions, input_config)
        await create_topics(self.bootstrap, [topics[o] for o in OUTPUTS], self.partitions)
        return topics

    def worker_env(self, topics: Mapping[str, str]) -> dict[str, str]:
        return {
            **topic_env(self.bootstrap, topics, f"{topics['posts']}-group"),
            "MODERATION_CACHE_DIR": str(self.workdir / "cache"),
            "MODERATION_LOG_LEVEL": "info",
            "MODERATION_SHUTDOWN_GRACE_S": "15",
            # the private broker is PLAINTEXT, whatever the caller's environment says about the real one
            "MODERATION_SECURITY_PROTOCOL": "PLAINTEXT",
            "MODERATION_SASL_USERNAME": "",
            "MODERATION_SASL_PASSWORD": "",
            "MODERATION_SSL_CAFILE": "",
            "MODERATION_SSL_CERTFILE": "",
            "MODERATION_SSL_KEYFILE": "",
        }

    async def committed(self, group: str) -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await asyncio.wait_for(admin.start(), 30)
        try:
            offsets = await asyncio.wait_for(admin.list_consumer_group_offsets(group), 30)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def skip_past(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Commit the group's offset past ``offset`` (as ``kafka-consumer-groups --reset-offsets`` would),
        retrying while the dead member still holds the group."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False)
        await asyncio.wait_for(consumer.start(), 30)
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        deadline = time.monotonic() + 120
        try:
            while True:
                try:
                    await consumer.commit({tp: offset + 1})
                    return
                except KafkaError as exc:
                    if time.monotonic() > deadline:
                        raise FaultError(
                            f"could not move group {group} past {topic}/{partition}@{offset}: {exc}"
                        ) from exc
                    await asyncio.sleep(2)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    # -- scenario 1: kills and a broker restart during a stream --

    async def kill_scenario(self) -> dict[str, Any]:
        p = self.profile
        n = p.posts
        topics = await self.deployment("kill")
        group = f"{topics['posts']}-group"
        observer = Observer(self.bootstrap, topics["decisions"], topics["dlq"], self.partitions)
        await observer.start()
        sup = Supervised("faults-kill-0", self.worker_env(topics), self.workdir, observer)
        task = self.progress.add_task("kill: starting the worker", total=n)
        began = time.monotonic()
        sup.start()
        await sup.wait_ready()
        plan = ["kill"] * p.kills
        for i in range(p.broker_restarts):
            plan.insert(min(len(plan), (len(plan) + 1) // 2 + i), "broker restart")
        thresholds = [round(n * (i + 1) / (len(plan) + 1)) for i in range(len(plan))]
        events: list[FaultEvent] = []
        sent: set[str] = set()
        producing = asyncio.create_task(self._stream(topics["posts"], n, sent))
        last_progress, last_decided = time.monotonic(), 0
        aborted = ""
        try:
            while True:
                await observer.poll(200)
                decided = len(observer.decided)
                if decided != last_decided:
                    last_progress, last_decided = time.monotonic(), decided
                self.progress.update(task, completed=min(decided, n), description=self._kill_desc(events, plan, sup))
                if not await sup.check():
                    aborted = f"worker crash-looping: {sup.exits[-1].error}"
                    break
                if producing.done():
                    if producing.exception() is not None:
                        raise FaultError(f"producing the stream failed: {producing.exception()!r}")
                    if not (set(sent) - observer.decided.keys()) and len(events) == len(plan):
                        break
                for e in events:
                    if e.restart_to_first_decision_s is None:
                        first = observer.first_decision_after(e._t_ms)
                        if first is not None:
                            e.restart_to_first_decision_s = round((first - e._t_ms) / 1000, 2)
                if time.monotonic() - last_progress > p.stall_timeout_s:
                    aborted = f"no new decision for {p.stall_timeout_s:.0f}s"
                    break
                due = len(events) < len(plan) and len(observer.decided) >= thresholds[len(events)]
                settled = all(e.restart_to_first_decision_s is not None for e in events)
                if due and settled and sup.alive() and sup.output_since_start():
                    events.append(await self._fault(plan[len(events)], sup, observer, group, began))
            await observer.drain(idle_s=3)
        finally:
            producing.cancel()
            with contextlib.suppress(BaseException):
                await producing
            code = await sup.stop()
            await observer.stop()
        # duplicates: decision records for an already decided post, attributed to the latest recovery before them
        for ts in observer.duplicate_ts:
            before = [e for e in events if e._t_ms <= ts]
            if before:
                before[-1].duplicates += 1
        missing = sorted(sent - observer.decided.keys())
        dupes = sum(len(v) - 1 for k, v in observer.decided.items() if k in sent)
        dlq = sum(len(v) for v in observer.dlq_at.values())
        self.progress.update(
            task, description=f"kill: {len(events)} faults, {len(missing)} missing, {dupes} duplicates"
        )
        result = {
            "posts": n,
            "sent": len(sent),
            "decided": len(sent & observer.decided.keys()),
            "missing": len(missing),
            "missing_sample": missing[:10],
            "duplicates": dupes,
            "dlq": dlq,
            "kills": sum(1 for e in events if e.kind == "kill"),
            "broker_restarts": sum(1 for e in events if e.kind == "broker restart"),
            "planned": plan,
            "events": [{k: v for k, v in asdict(e).items() if not k.startswith("_")} for e in events],
            "unexpected_exits": [asdict(x) for x in sup.exits],
            "worker_stop_code": code,
            "aborted": aborted,
            "max_batch_x_partitions": self.settings.max_batch * self.partitions,
            "seconds": round(time.monotonic() - began, 1),
        }
        self.check(
            "kill: every post decided",
            not missing and len(sent) == n,
            f"{len(sent)} sent, {result['decided']} decided, {len(missing)} missing"
            + (f" ({aborted})" if aborted else ""),
        )
        self.check(
            "kill: all faults injected",
            len(events) == len(plan),
            f"{result['kills']} kills + {result['broker_restarts']} broker restarts of {len(plan)} planned",
        )
        self.check(
            "kill: no crash-loop, no unexpected exit",
            not sup.exits and not sup.crash_looping,
            "none" if not sup.exits else f"{len(sup.exits)} exits; last: {sup.exits[-1].error}",
        )
        in_flight = self.settings.max_batch * self.partitions
        over = [e for e in events if e.duplicates > min(in_flight, e.uncommitted_decided or in_flight)]
        self.check(
            f"kill: duplicates per fault ≤ posts in flight (uncommitted decided, at most max_batch × partitions "
            f"= {in_flight})",
            not over,
            ", ".join(f"{e.kind}@{e.at_s:.0f}s: {e.duplicates} (uncommitted {e.uncommitted_decided})" for e in over)
            or "per fault: " + ", ".join(str(e.duplicates) for e in events),
        )
        if p.name == "full":  # quick mode reports it; the shared CI machine is too noisy to fail on it
            slow = [
                e
                for e in events
                if e.kind == "kill"
                and (e.restart_to_first_decision_s is None or e.restart_to_first_decision_s > RESTART_BOUND_S)
            ]
            self.check(
                f"kill: a restarted worker decides within {RESTART_BOUND_S:.0f} s",
                not slow,
                "restart → first decision: "
                + ", ".join(_fmt(e.restart_to_first_decision_s) + " s" for e in events if e.kind == "kill"),
            )
        self.check("kill: nothing dead-lettered", dlq == 0, f"{dlq} DLQ records")
        return result

    def _kill_desc(self, events: list[FaultEvent], plan: list[str], sup: Supervised) -> str:
        state = "running" if sup.alive() else "down"
        return f"kill: {len(events)}/{len(plan)} faults, worker {state}"

    async def _stream(self, topic: str, n: int, sent: set[str]) -> None:
        """``n`` posts at the profile's rate; idempotent, with retries long enough to ride out a broker restart."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=120_000,
            retry_backoff_ms=500,
        )
        await asyncio.wait_for(producer.start(), 30)
        try:
            start = time.perf_counter()
            pending: dict[str, asyncio.Future[Any]] = {}
            for i in range(n):
                delay = start + i / self.profile.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                post_id = f"{topic}-{i:06d}"
                value = orjson.dumps(
                    {
                        "id": post_id,
                        "text": self.texts[i % len(self.texts)],
                        "lang": "en",
                        "created_at": time.time_ns() // 1_000_000,
                    }
                )
                pending[post_id] = await producer.send(topic, value, key=post_id.encode())
                if len(pending) >= 500:
                    await self._settle(pending, sent)
            await self._settle(pending, sent)
        finally:
            await producer.stop()

    @staticmethod
    async def _settle(pending: dict[str, asyncio.Future[Any]], sent: set[str]) -> None:
        results = await asyncio.gather(*pending.values(), return_exceptions=True)
        failed = [pid for pid, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            raise FaultError(f"{len(failed)} posts could not be produced: {results[0]!r}")
        sent.update(pending)
        pending.clear()

    async def _fault(self, kind: str, sup: Supervised, observer: Observer, group: str, began: float) -> FaultEvent:
        decided_before = len(observer.decided)
        at_s = round(time.monotonic() - began, 1)
        if kind == "kill":
            await sup.kill()
            await observer.drain(idle_s=1.0, max_s=10)
            uncommitted = await self._uncommitted(group, observer)
            event = FaultEvent(kind, at_s, decided_before, uncommitted, _t_ms=int(time.time() * 1000))
            sup.start()  # as Kubernetes restarts the container: same name, port and environment
            return event
        stopped = time.monotonic()
        await self.broker_down()
        await self.broker_up()
        downtime = round(time.monotonic() - stopped, 1)
        event = FaultEvent(kind, at_s, decided_before, None, downtime_s=downtime, _t_ms=int(time.time() * 1000))
        return event

    async def _uncommitted(self, group: str, observer: Observer) -> int | None:
        try:
            committed = await self.committed(group)
        except (KafkaError, TimeoutError):
            return None
        return sum(1 for (part, off) in observer.decided_at if part >= 0 and off >= committed.get(part, 0))

    # -- scenario 2: the poison corpus --

    async def poison_scenario(self) -> dict[str, Any]:
        p = self.profile
        corpus = poison_corpus(self.settings.max_text_chars, self.settings.max_message_bytes)
        topics = await self.deployment("poison", {"max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)})
        group = f"{topics['posts']}-group"
        observer = Observer(self.bootstrap, topics["decisions"], topics["dlq"], self.partitions)
        await observer.start()
        sup = Supervised("faults-poison-0", self.worker_env(topics), self.workdir, observer)
        task = self.progress.add_task("poison: starting the worker", total=len(corpus))
        began = time.monotonic()
        sup.start()
        await sup.wait_ready()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=0, max_request_size=3 * INPUT_MAX_MESSAGE_BYTES
        )
        await asyncio.wait_for(producer.start(), 30)
        rows: list[dict[str, Any]] = []
        valid: dict[Origin, str] = {}  # origin → post id of the valid posts around the poison
        stalled = 0
        try:
            for i, item in enumerate(corpus):
                if stalled >= 2:  # a live worker that stopped producing outcomes: the rest would only time out
                    rows.append(
                        {
                            "kind": item.kind,
                            "what": item.what,
                            "expect": item.expect,
                            "origin": (-1, -1),
                            "status": "not run",
                            "bytes": None,
                            "error": "worker stalled on earlier kinds",
                        }
                    )
                    continue
                self.progress.update(task, completed=i, description=f"poison: {item.kind}")
                part = i % self.partitions
                before = await self._send_valid(producer, topics["posts"], part, f"v{i:03d}a")
                # decided first, so the poison message starts its own batch: skipping past it skips nothing else
                await self._await_outcome(sup, observer, decided=[before[0]])
                meta = await (await producer.send(topics["posts"], item.value, key=item.key, partition=part))
                origin = (meta.partition, meta.offset)
                after = [
                    await self._send_valid(producer, topics["posts"], part, f"v{i:03d}b{j}")
                    for j in range(p.valid_after)
                ]
                for o, pid in [before, *after]:
                    valid[o] = pid
                wanted = [o for o, _ in after]
                status = await self._await_outcome(sup, observer, outcome=[origin], decided=wanted)
                stalled = stalled + 1 if status == "timeout" else 0
                if status == "crash-loop":
                    await self.skip_past(group, topics["posts"], origin[0], origin[1])
                    sup.forgive()
                    await asyncio.sleep(1)
                    sup.start()
                rows.append(
                    {
                        "kind": item.kind,
                        "what": item.what,
                        "expect": item.expect,
                        "origin": origin,
                        "status": status,
                        "bytes": None if item.value is None else len(item.value),
                        "error": sup.exits[-1].error if status != "ok" and sup.exits else "",
                    }
                )
            self.progress.update(task, completed=len(corpus), description="poison: settling")
            await self._await_outcome(sup, observer, decided=list(valid))
            await observer.drain(idle_s=3)
        finally:
            await producer.stop()
            alive_at_end = sup.alive()
            starts = sup.starting_lines()
            code = await sup.stop()
            await observer.stop()
        bad = []
        for row in rows:
            part, off = row.pop("origin")
            decisions, dlq = observer.outcomes((part, off))
            row.update(decisions=decisions, dlq=len(dlq), dlq_class=",".join(sorted(set(dlq))))
            row["outcome"] = (
                "dlq"
                if dlq and not decisions
                else "decision"
                if decisions and not dlq
                else ("both" if decisions else "none")
            )
            row["ok"] = (
                (decisions + len(dlq) == 1) and row["expect"] in ("either", row["outcome"]) and row["status"] == "ok"
            )
            if not row["ok"]:
                bad.append(row)
        missing_valid = sorted(pid for o, pid in valid.items() if not observer.decided_at.get(o))
        self.progress.update(task, description=f"poison: {len(rows) - len(bad)}/{len(rows)} kinds handled")
        result = {
            "kinds": len(rows),
            "ok": len(rows) - len(bad),
            "dlq": sum(r["dlq"] for r in rows),
            "decided": sum(1 for r in rows if r["outcome"] == "decision"),
            "valid_posts": len(valid),
            "valid_missing": len(missing_valid),
            "valid_missing_sample": missing_valid[:10],
            "worker_starts": starts,
            "worker_alive_at_end": alive_at_end,
            "worker_stop_code": code,
            "unexpected_exits": [asdict(x) for x in sup.exits],
            "rows": rows,
            "seconds": round(time.monotonic() - began, 1),
        }
        crashed = [r["kind"] for r in rows if r["status"] != "ok"]
        self.check(
            "poison: every message → exactly one DLQ record or one decision",
            not bad,
            f"{len(rows) - len(bad)}/{len(rows)} kinds; failing: "
            + ", ".join(f"{r['kind']} ({r['status'] if r['status'] != 'ok' else r['outcome']})" for r in bad)
            if bad
            else f"all {len(rows)} kinds",
        )
        self.check(
            "poison: the worker never exits",
            not sup.exits and starts == 1 and alive_at_end,
            f"{len(sup.exits)} exits, {starts} starts" + (f"; crashed on: {', '.join(crashed)}" if crashed else ""),
        )
        self.check(
            "poison: every valid post around a poison message decided",
            not missing_valid,
            f"{len(valid) - len(missing_valid)}/{len(valid)} decided",
        )
        return result

    async def _send_valid(self, producer: AIOKafkaProducer, topic: str, partition: int, pid: str) -> tuple[Origin, str]:
        post_id = f"{topic}-{pid}"
        text = self.texts[zlib.crc32(pid.encode()) % len(self.texts)]
        fut = await producer.send(
            topic, orjson.dumps({"id": post_id, "text": text}), key=post_id.encode(), partition=partition
        )
        meta = await fut
        return (meta.partition, meta.offset), post_id

    async def _await_outcome(
        self, sup: Supervised, observer: Observer, *, outcome: Sequence[Origin] = (), decided: Sequence[Origin] = ()
    ) -> str:
        """Poll until each of ``outcome`` has a decision or a DLQ record and each of ``decided`` a decision;
        restart the worker when it exits. Returns ok / crashed (done, after a restart) / crash-loop / timeout."""

        def done() -> bool:
            return all(observer.decided_at.get(o) or observer.dlq_at.get(o) for o in outcome) and all(
                observer.decided_at.get(o) for o in decided
            )

        exits = seen = len(sup.exits)
        deadline = time.monotonic() + self.profile.outcome_timeout_s
        while True:
            await observer.poll(100)
            if done():
                return "ok" if len(sup.exits) == exits else "crashed"
            if not await sup.check():
                return "crash-loop"
            if len(sup.exits) - exits > CRASH_LOOP_EXITS:  # exits that each wrote something first: still a loop
                await sup.give_up()
                return "crash-loop"
            if len(sup.exits) > seen:  # restarted: model load and group join get their own time
                seen = len(sup.exits)
                deadline = time.monotonic() + self.profile.outcome_timeout_s
            if time.monotonic() > deadline:
                return "timeout"

    # -- scenario 3: compression codecs --

    async def codec_scenario(self) -> dict[str, Any]:
        p = self.profile
        topics = await self.deployment("codecs")
        group = f"{topics['posts']}-group"
        observer = Observer(self.bootstrap, topics["decisions"], topics["dlq"], self.partitions)
        await observer.start()
        sup = Supervised("faults-codecs-0", self.worker_env(topics), self.workdir, observer)
        cases = [(client, codec) for client in CLIENTS for codec in CODECS]
        task = self.progress.add_task("codecs: starting the worker", total=len(cases))
        began = time.monotonic()
        sup.start()
        await sup.wait_ready()
        rows: list[dict[str, Any]] = []
        try:
            for i, (client, codec) in enumerate(cases):
                self.progress.update(task, completed=i, description=f"codecs: {codec} via {client}")
                part = i % self.partitions
                ids = [f"{topics['posts']}-{client}-{codec}-{j:04d}" for j in range(p.codec_posts)]
                values = [
                    (pid.encode(), orjson.dumps({"id": pid, "text": self.texts[(i * 97 + j) % len(self.texts)]}))
                    for j, pid in enumerate(ids)
                ]
                row: dict[str, Any] = {"client": client, "codec": codec, "posts": len(ids)}
                try:
                    if client == "aiokafka":
                        offsets = await self._produce_aiokafka(topics["posts"], part, codec, values)
                    else:
                        offsets = await asyncio.to_thread(
                            self._produce_librdkafka, topics["posts"], part, codec, values
                        )
                except Exception as exc:  # e.g. aiokafka without the codec library: it cannot produce (or consume) it
                    row.update(status="producer failed", error=f"{type(exc).__name__}: {exc}"[:300], sent=0)
                    rows.append(row)
                    continue
                row["sent"] = len(offsets)
                status = await self._await_outcome(sup, observer, decided=[(part, x) for x in offsets])
                if status == "crash-loop":
                    await self.skip_past(group, topics["posts"], part, max(offsets))
                    sup.forgive()
                    await asyncio.sleep(1)
                    sup.start()
                row.update(
                    status=status,
                    error=sup.exits[-1].error if status != "ok" and sup.exits else "",
                    _origins=[(part, x) for x in offsets],
                )
                rows.append(row)
            await observer.drain(idle_s=2)
        finally:
            alive_at_end = sup.alive()
            starts = sup.starting_lines()
            await sup.stop()
            await observer.stop()
        for row in rows:
            origins = row.pop("_origins", [])
            counts = [observer.decided_at.get(o, 0) for o in origins]
            row.update(
                decided=sum(1 for c in counts if c),
                duplicates=sum(max(0, c - 1) for c in counts),
                dlq=sum(len(observer.dlq_at.get(o, [])) for o in origins),
            )
            row["ok"] = (
                row["status"] == "ok" and row["sent"] == row["posts"] == row["decided"] and not row["duplicates"]
            )
        self.progress.update(
            task,
            completed=len(cases),
            description=f"codecs: {sum(r['ok'] for r in rows)}/{len(rows)} decided exactly once",
        )
        bad = [r for r in rows if not r["ok"]]
        self.check(
            "codecs: every codec × client decided exactly once",
            not bad,
            ", ".join(f"{r['codec']}/{r['client']} ({r['status']})" for r in bad) or f"all {len(rows)}",
        )
        self.check(
            "codecs: the worker never exits",
            not sup.exits and starts == 1 and alive_at_end,
            f"{len(sup.exits)} exits, {starts} starts",
        )
        return {
            "rows": rows,
            "worker_starts": starts,
            "unexpected_exits": [asdict(x) for x in sup.exits],
            "seconds": round(time.monotonic() - began, 1),
        }

    async def _produce_aiokafka(
        self, topic: str, partition: int, codec: str, values: Sequence[tuple[bytes, bytes]]
    ) -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=50, compression_type=codec)
        await asyncio.wait_for(producer.start(), 30)
        try:
            futures = [await producer.send(topic, v, key=k, partition=partition) for k, v in values]
            return [m.offset for m in await asyncio.wait_for(asyncio.gather(*futures), 60)]
        finally:
            await producer.stop()

    def _produce_librdkafka(
        self, topic: str, partition: int, codec: str, values: Sequence[tuple[bytes, bytes]]
    ) -> list[int]:
        from confluent_kafka import Producer

        offsets: list[int] = []
        errors: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                offsets.append(int(msg.offset()))

        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "compression.codec": codec,
                "linger.ms": 50,
                "acks": "all",
                "enable.idempotence": True,
                "log_level": 3,  # errors only: "coordinator load in progress" retries on a fresh broker are noise
            }
        )
        for k, v in values:
            producer.produce(topic, value=v, key=k, partition=partition, on_delivery=delivered)
        remaining = producer.flush(60)
        if errors or remaining:
            raise FaultError(f"librdkafka could not deliver {codec} posts: {errors[:3]} ({remaining} left)")
        return offsets


# --- report ------------------------------------------------------------------------------------------------


def verdict(checks: Sequence[Check]) -> str:
    return "pass" if checks and all(c.ok for c in checks) else "fail"


def print_summary(console: Console, result: dict[str, Any]) -> None:
    table = Table(title=f"Fault suite ({result['mode']}): {result['verdict'].upper()}")
    table.add_column("check")
    table.add_column("", justify="center")
    table.add_column("detail")
    for c in result["checks"]:
        table.add_row(c["name"], "[green]ok[/]" if c["ok"] else "[red]FAIL[/]", c["detail"])
    console.print(table)
    kill = result["scenarios"].get("kill")
    if kill:
        faults = Table(title="Faults during the stream")
        for col in ("fault", "at s", "decided before", "uncommitted decided", "duplicates", "to first decision s"):
            faults.add_column(col, justify="left" if col == "fault" else "right")
        for e in kill["events"]:
            faults.add_row(
                e["kind"],
                f"{e['at_s']:.0f}",
                str(e["decided_before"]),
                _fmt(e["uncommitted_decided"]),
                str(e["duplicates"]),
                _fmt(e["restart_to_first_decision_s"]),
            )
        console.print(faults)
    poison = result["scenarios"].get("poison")
    if poison:
        bad = [r for r in poison["rows"] if not r["ok"]]
        if bad:
            t = Table(title="Poison kinds not handled")
            for col in ("kind", "expect", "outcome", "status", "error"):
                t.add_column(col)
            for r in bad:
                t.add_row(r["kind"], r["expect"], r["outcome"], r["status"], r["error"][:100])
            console.print(t)
    codecs = result["scenarios"].get("codecs")
    if codecs:
        t = Table(title="Codecs")
        for col in ("client", "codec", "sent", "decided", "dup", "status"):
            t.add_column(col)
        for r in codecs["rows"]:
            t.add_row(
                r["client"],
                r["codec"],
                str(r["sent"]),
                str(r.get("decided", 0)),
                str(r.get("duplicates", 0)),
                r["status"] if not r.get("error") else f"{r['status']}: {r['error'][:80]}",
            )
        console.print(t)


def _fmt(value: Any) -> str:
    return "—" if value is None else str(value)


SECTION_BEGIN = "<!-- faults:{mode}:begin (written by `moderation bench faults`; edits inside are replaced) -->"
SECTION_END = "<!-- faults:{mode}:end -->"
HEADER = """# Reliability

What the fault suite (`moderation bench faults`; `make faults` runs the full mode) does to real
`moderation worker` processes on a real broker, and what came out, measured. The suite starts its own
private single-node broker (own state dir and port; the shared one is never touched) and, per scenario,
fresh topics, a fresh consumer group and a worker started as Kubernetes starts it:

1. **kill**: a stream of posts; the worker is SIGKILLed mid-stream (full mode: 5 times) and restarted
   with the same worker id, port and environment, and the broker is stopped and started once (same
   state dir, same port). Fails on any post without a decision, on an unexpected exit and on a fault
   followed by more duplicates than the posts that were decided but not yet committed at that moment.
2. **poison**: every kind of malformed, hostile, huge or edge-case message (`poison_corpus()` in
   `moderation/devtools/bench/faults.py`), one at a time between valid posts. Each must give exactly one DLQ
   record or exactly one decision; the valid posts after it must be decided; the worker must never exit.
3. **codecs**: posts compressed with gzip, snappy, lz4 and zstd by aiokafka and by librdkafka
   (confluent-kafka), each decided exactly once.

The **soak** (`moderation bench soak`; `make soak`) is the slow counterpart: one worker at a fixed
28 posts/s of mostly distinct texts for 80 min on a private broker, its RSS sampled every 10 s, the
slope after warm-up (once the dedupe cache is full) and its log lines per hour at info; with
`--baseline DIR` a worker of another checkout runs beside it on the same posts.

A worker that exits on its own is restarted with a short back-off and declared crash-looping after two
exits without output in between; the suite then commits the group past the offending message (as an
operator would) so the rest of the corpus still runs. A short version runs inside `make test`
(`tests/devtools/bench/test_faults.py`: quick mode, tiny test model). Each section below is rewritten by the run
that measured it; JSON with every number: `bench-results/faults.json` (git-ignored).
"""


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"## Fault suite, {result['mode']} mode: **{result['verdict'].upper()}** ({result['machine']['model']})",
        "",
        f"`{result['command']}` at commit `{result['machine']['git_commit']}`, {result['machine']['when']}, "
        f"{result['duration_s']:.0f} s; model {result['machine']['model']}; {result['machine']['cpu_count']} CPUs; "
        f"{result['machine']['kafka']}.",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for c in result["checks"]:
        lines.append(f"| {c['name']} | {'ok' if c['ok'] else '**FAIL**'} | {c['detail'].replace('|', '/')} |")
    kill = result["scenarios"].get("kill")
    if kill:
        lines += [
            "",
            f"**Kills and a broker restart during a stream**: {kill['sent']:,} posts sent, "
            f"{kill['decided']:,} decided, "
            f"**{kill['missing']} missing**, {kill['duplicates']} duplicates, {kill['dlq']} DLQ; "
            f"{kill['kills']} SIGKILLs + {kill['broker_restarts']} broker restart in {kill['seconds']:.0f} s.",
            "",
            "| fault | at s | decided before | decided but uncommitted | duplicates after "
            "| restart → first decision s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for e in kill["events"]:
            lines.append(
                f"| {e['kind']} | {e['at_s']:.0f} | {e['decided_before']:,} | {_fmt(e['uncommitted_decided'])} "
                f"| {e['duplicates']} | {_fmt(e['restart_to_first_decision_s'])} |"
            )
        lines.append("")
        lines.append(
            f"(MODERATION_MAX_BATCH × partitions = {kill['max_batch_x_partitions']}; broker restart "
            "downtime: " + ", ".join(f"{e['downtime_s']} s" for e in kill["events"] if e["downtime_s"]) + ".)"
        )
    poison = result["scenarios"].get("poison")
    if poison:
        lines += [
            "",
            f"**Poison corpus**: {poison['ok']}/{poison['kinds']} kinds handled (exactly one DLQ record or one "
            f"decision each); {poison['valid_posts'] - poison['valid_missing']}/{poison['valid_posts']} valid posts "
            f"around them decided; worker started {poison['worker_starts']}×, "
            f"{len(poison['unexpected_exits'])} unexpected exits.",
            "",
            "| kind | expected | outcome | DLQ class | status |",
            "|---|---|---|---|---|",
        ]
        for r in poison["rows"]:
            status = r["status"] + (f": {r['error'][:90]}" if r["error"] else "")
            mark = "" if r["ok"] else " ✗"
            lines.append(
                f"| {r['kind']}{mark} | {r['expect']} | {r['outcome']} | {r['dlq_class'] or ''} "
                f"| {status.replace('|', '/')} |"
            )
    codecs = result["scenarios"].get("codecs")
    if codecs:
        lines += [
            "",
            f"**Compressed input** (posts per case: {codecs['rows'][0]['posts'] if codecs['rows'] else 0}):",
            "",
            "| client | codec | sent | decided | duplicates | status |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in codecs["rows"]:
            status = r["status"] + (f": {r['error'][:90]}" if r.get("error") else "")
            lines.append(
                f"| {r['client']} | {r['codec']} | {r['sent']} | {r.get('decided', 0)} "
                f"| {r.get('duplicates', 0)} | {status.replace('|', '/')} |"
            )
    lines += ["", f"Raw numbers: `{result['json']}` (git-ignored), written by each run."]
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- faults:{mode}:readme (written by `moderation bench faults`) -->"
README_END = "<!-- /faults:{mode}:readme -->"


def _span(values: Sequence[float | int | None], unit: str = "") -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "—"
    low, high = min(known), max(known)
    return f"{low:g}{unit}" if low == high else f"{low:g}–{high:g}{unit}"


def readme_figures(result: Mapping[str, Any]) -> str:
    """The README's one-sentence account of a run, copied there by the run that measured it."""
    m = result["machine"]
    parts = [f"**{result['verdict'].upper()}** at commit `{m['git_commit']}` with {m['model']}"]
    kill = result["scenarios"].get("kill") or {}
    if "events" in kill:
        kills = [e for e in kill["events"] if e["kind"] == "kill"]
        exact = all(e["duplicates"] == e["uncommitted_decided"] for e in kills)
        bounded = all(
            e["uncommitted_decided"] is not None and e["duplicates"] <= e["uncommitted_decided"] for e in kills
        )
        relation = "each time exactly" if exact else "at most" if bounded else "sometimes more than"
        parts.append(
            f"{kill['kills']} SIGKILLs and {kill['broker_restarts']} broker restart in a {kill['sent']:,}-post stream: "
            f"{kill['missing']} posts lost, {_span([e['duplicates'] for e in kill['events']])} re-decided per fault "
            f"({relation} the posts decided but not yet committed at that moment), restart to first decision "
            f"{_span([e['restart_to_first_decision_s'] for e in kills], ' s')}"
        )
    poison = result["scenarios"].get("poison") or {}
    if "kinds" in poison:
        parts.append(
            f"poison corpus {poison['ok']}/{poison['kinds']} kinds handled with {len(poison['unexpected_exits'])} "
            "worker exits"
        )
    codecs = result["scenarios"].get("codecs") or {}
    if "rows" in codecs:
        parts.append(
            f"{sum(1 for r in codecs['rows'] if r['ok'])}/{len(codecs['rows'])} codec × client cases decided once"
        )
    return "; ".join(parts)


def write_inline(path: Path, begin: str, end: str, text: str) -> bool:
    """Replace what stands between two markers in ``path`` (kept in place); False, file untouched, when
    the file or a marker is missing."""
    try:
        doc = path.read_text(encoding="utf-8")
    except OSError:
        return False
    a = doc.find(begin)
    b = doc.find(end, a + len(begin)) if a >= 0 else -1
    if a < 0 or b < 0:
        return False
    path.write_text(doc[: a + len(begin)] + text + doc[b:], encoding="utf-8")
    return True


def write_section(path: Path, mode: str, body: str, *, begin: str = "", end: str = "") -> None:
    """Replace this mode's section of ``path`` (created with a header if missing), keep everything else;
    ``begin``/``end``: the markers of another command's section (the soak's)."""
    begin, end = begin or SECTION_BEGIN.format(mode=mode), end or SECTION_END.format(mode=mode)
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    section = f"{begin}\n{body}{end}\n"
    a, b = text.find(begin), text.find(end)
    if a >= 0 and b > a:
        text = text[:a] + section + text[b + len(end) :].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


# --- entry point ---------------------------------------------------------------------------------------------


def _machine(settings: Settings) -> dict[str, Any]:
    from moderation.devtools.bench.engine import _git_commit
    from moderation.devtools.bench.pipeline import cpu_model
    from moderation.models.manifest import load_manifest

    try:
        manifest = load_manifest(settings.model_dir)
        model = f"{manifest.name} {manifest.version}"
    except Exception:  # the suite reports the model; a broken one shows up as a worker that cannot start
        model = str(settings.model_dir)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit() + ("-dirty" if _tree_dirty() else ""),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "model": model,
        "model_dir": str(settings.model_dir),
        "policy_file": str(settings.policy_file),
        "kafka": f"Apache Kafka {KAFKA_VERSION}, a private single-node KRaft broker on the same machine",
        "load_avg_before": round(os.getloadavg()[0], 2),
    }


def _tree_dirty() -> bool:
    """Tracked files differ from the commit: the numbers are for the working tree, not for the commit alone."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def _texts(settings: Settings, n: int) -> list[str]:
    from moderation.devtools.bench.pipeline import distinct_posts
    from moderation.pipeline.tokenize import TextTokenizer

    return distinct_posts(TextTokenizer(settings.model_dir / "tokenizer.json", 128), n)


def _command(args: argparse.Namespace, scenarios: Sequence[str]) -> str:
    parts = ["moderation bench faults"]
    if getattr(args, "quick", False):
        parts.append("--quick")
    for flag, attr in (("--posts", "posts"), ("--kills", "kills")):
        if getattr(args, attr, None) is not None:
            parts.append(f"{flag} {getattr(args, attr)}")
    if list(scenarios) != ["kill", "poison", "codecs"]:
        parts.append(f"--scenarios {','.join(scenarios)}")
    return " ".join(parts)


async def run_suite(suite: Suite, scenarios: Sequence[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    startup = suite.progress.add_task("private broker: starting", total=None)
    took = await suite.broker_up()
    suite.progress.update(
        startup, description=f"private broker on {suite.bootstrap} (up in {took:.0f} s)", total=1, completed=1
    )
    try:
        for name in scenarios:
            runner = {"kill": suite.kill_scenario, "poison": suite.poison_scenario, "codecs": suite.codec_scenario}
            try:
                results[name] = await runner[name]()
            except (FaultError, KafkaError, TimeoutError, ModerationError) as exc:
                suite.check(f"{name}: scenario ran", False, f"{type(exc).__name__}: {exc}"[:400])
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await suite.broker_down()
    return results


def run(args: argparse.Namespace) -> int:
    quick = bool(getattr(args, "quick", False))
    base = QUICK if quick else FULL
    profile = Profile(
        **{
            **asdict(base),
            "posts": getattr(args, "posts", None) or base.posts,
            "kills": base.kills if getattr(args, "kills", None) is None else args.kills,
        }
    )
    scenarios = [s.strip() for s in (getattr(args, "scenarios", None) or "kill,poison,codecs").split(",") if s.strip()]
    unknown = set(scenarios) - {"kill", "poison", "codecs"}
    if unknown or not scenarios:
        raise ConfigError(f"unknown scenario(s) {sorted(unknown)}: use kill, poison, codecs (comma separated)")
    if profile.posts < 100 or profile.kills < 0:
        raise ConfigError("need --posts ≥ 100 and --kills ≥ 0")
    out = Path(args.out or f"bench-results/{JSON_NAME}")
    report = getattr(args, "report", None)
    md_path = None if report == "-" else Path(report or "RELIABILITY.md")
    console = Console()
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # broker restarts and poison make aiokafka noisy
    settings = load_settings()
    if not (settings.model_dir / "tokenizer.json").is_file():
        raise ConfigError(f"no model in {settings.model_dir} (MODERATION_MODEL_DIR)")
    machine = _machine(settings)
    texts = _texts(settings, min(profile.posts, 5000))
    console.print(
        f"[bold]moderation bench faults[/] ({profile.name}): scenarios {', '.join(scenarios)}; "
        f"{profile.posts:,} posts, {profile.kills} kills, {profile.broker_restarts} broker restart; "
        f"model {machine['model']}"
    )
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="moderation-faults-"))
    keep = True  # worker and broker logs survive a failed or interrupted run
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            suite = Suite(settings, profile, workdir, progress, console, texts)
            scenario_results = asyncio.run(run_suite(suite, scenarios))
        checks = suite.checks
        result: dict[str, Any] = {
            "command": _command(args, scenarios),
            "mode": profile.name,
            "profile": asdict(profile),
            "machine": machine,
            "duration_s": round(time.monotonic() - started, 1),
            "verdict": verdict(checks),
            "checks": [asdict(c) for c in checks],
            "scenarios": scenario_results,
            "json": str(out),
            "logs": str(workdir),
        }
        keep = result["verdict"] != "pass"
        if not keep:
            result["logs"] = "(deleted: all checks passed)"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        readme = None
        if md_path is not None:
            write_section(md_path, profile.name, markdown(result))
            readme = md_path.parent / "README.md"  # its figures, where it has this mode's markers
            mode = profile.name
            if not write_inline(
                readme, README_BEGIN.format(mode=mode), README_END.format(mode=mode), readme_figures(result)
            ):
                readme = None
        print_summary(console, result)
        console.print(
            f"wrote {out}"
            + (f" and {md_path}" if md_path else "")
            + (f" and the figures in {readme}" if readme else "")
            + (f"; worker and broker logs kept in {workdir}" if keep else "")
        )
        return 0 if result["verdict"] == "pass" else 1
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
