"""``moderation replay``: re-decide recorded decisions and say whether they reproduce.

How an appeal or an audit checks a decision. Decision records are read from the decisions topic (a
time range, explicit offsets or all of it, bounded by the end offsets at start, so the command ends);
each record's original post is fetched by its ``origin`` topic/partition/offset and re-scored by the
same :class:`~moderation.pipeline.batch.Pipeline` as the worker and ``moderation score``, with the
model and policy loaded here — which must be the ones the record names, else the record is skipped
(``--strict``: the run fails). Action, labels and triggers must be equal, scores within 1e-4.

Consumers have no group: partitions are assigned and seeked, and no offset is ever committed. The
comparison and the report are :mod:`moderation.worker.replay_report` (pure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from moderation.core.bootstrap import resolved
from moderation.core.errors import BrokerError, ConfigError
from moderation.core.logs import configure_logging
from moderation.core.settings import Settings, load_settings
from moderation.pipeline.batch import Message, Pipeline, now_ms
from moderation.pipeline.policy import PolicyStore
from moderation.pipeline.records import Decision, Origin
from moderation.worker.replay_report import NotReplayed, Report, Versions, Where, mismatched, render
from moderation.worker.security import check_auth, client_kwargs

CHUNK_RECORDS = 2_000  # decision records replayed per round (fetch their posts, score, compare)
SEEK_GAP = 500  # a gap this wide between wanted post offsets is seeked over instead of read through
STALL_S = 30.0  # no progress on an assigned partition for this long: the broker is gone

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


# --- what to replay -------------------------------------------------------------------------------------


def parse_time(text: str, now: int) -> int:
    """RFC 3339 (``2026-12-04T10:00:00Z``; no zone = UTC) or a duration back from ``now`` (``90s``,
    ``15m``, ``1h``, ``2d``, ``1w``) → epoch ms."""
    match = _RELATIVE.match(text)
    if match:
        return now - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 1000)
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"cannot read the time {text!r}: give RFC 3339 (2026-12-04T10:00:00Z) or a duration back from now "
            "(30m, 1h, 2d)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp() * 1000)


@dataclass(frozen=True)
class Selection:
    """Which decision records: partitions, offsets (``to_offset`` inclusive) and times (``until`` exclusive)
    combine; nothing set but ``everything`` means the whole topic."""

    everything: bool = False
    since_ms: int | None = None
    until_ms: int | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    post_ids: frozenset[str] = frozenset()

    @classmethod
    def from_args(cls, args: argparse.Namespace, now: int) -> Selection:
        if (args.from_offset is not None or args.to_offset is not None) and args.partition is None:
            raise ConfigError("--from-offset/--to-offset are offsets of one partition: add --partition P")
        ranged = args.since is not None or args.until is not None or args.partition is not None
        if args.all and ranged:
            raise ConfigError("--all replays the whole topic: leave out --since/--until/--partition, or drop --all")
        if not args.all and not ranged:
            raise ConfigError(
                "say which decisions to replay: --all, --since/--until TIME, or --partition P "
                "--from-offset A --to-offset B"
            )
        for name in ("partition", "from_offset", "to_offset"):
            if getattr(args, name) is not None and getattr(args, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be ≥ 0")
        if args.from_offset is not None and args.to_offset is not None and args.to_offset < args.from_offset:
            raise ConfigError(f"--to-offset {args.to_offset} is before --from-offset {args.from_offset}")
        since = parse_time(args.since, now) if args.since is not None else None
        until = parse_time(args.until, now) if args.until is not None else None
        if since is not None and until is not None and until <= since:
            raise ConfigError(f"--until ({args.until}) is not after --since ({args.since})")
        return cls(
            args.all, since, until, args.partition, args.from_offset, args.to_offset, frozenset(args.post_id or ())
        )

    def describe(self, topic: str) -> str:
        parts = [topic if self.partition is None else f"{topic} partition {self.partition}"]
        if self.from_offset is not None or self.to_offset is not None:
            parts.append(
                f"offsets {self.from_offset if self.from_offset is not None else 'start'}"
                f"..{self.to_offset if self.to_offset is not None else 'end'}"
            )
        for word, ms in (("since", self.since_ms), ("until", self.until_ms)):
            if ms is not None:
                parts.append(f"{word} {datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec='seconds')}")
        if self.post_ids:
            parts.append(f"posts {', '.join(sorted(self.post_ids)[:5])}{' …' if len(self.post_ids) > 5 else ''}")
        return " ".join(parts)

    def wants(self, timestamp_ms: int | None) -> bool:
        if timestamp_ms is None:
            return True
        return (self.since_ms is None or timestamp_ms >= self.since_ms) and (
            self.until_ms is None or timestamp_ms < self.until_ms
        )


# --- Kafka: bounded reads without a group ---------------------------------------------------------------


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """No group, no commits: replay reads, it never moves anybody's offsets."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="moderation-replay",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.isolation_level,
        metadata_max_age_ms=settings.metadata_max_age_ms,
        max_partition_fetch_bytes=max(4 * 1024 * 1024, settings.max_message_bytes + 65_536),
        **client_kwargs(settings),
    )


class Partitions:
    """The partitions of topics, asked of the broker without creating any: a metadata request that names a
    missing topic creates it on a broker with ``auto.create.topics.enable`` (the default), so a topic is
    described only once the list of all topics has it; consumers are assigned only partitions found here."""

    def __init__(self, admin: AIOKafkaAdminClient) -> None:
        self.admin = admin
        self._known: dict[str, set[int] | None] = {}

    async def of(self, topic: str) -> set[int] | None:
        """The topic's partitions, or None when the broker has no such topic."""
        if topic not in self._known:
            found: set[int] | None = None
            if topic in set(await self.admin.list_topics()):
                (desc,) = await self.admin.describe_topics([topic])
                if desc["error_code"] == 0 and desc["partitions"]:
                    found = {int(p["partition"]) for p in desc["partitions"]}
            self._known[topic] = found
        return self._known[topic]


async def resolve_ranges(
    consumer: AIOKafkaConsumer,
    known: Partitions,
    topic: str,
    selection: Selection,
    notes: list[str],
    bootstrap: str = "the broker",
) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition ``[start, end)`` of decision records to read; ``end`` is at most the end offset now
    (the last stable offset under read_committed), so the read terminates."""
    partitions = await known.of(topic)
    if not partitions:
        raise ConfigError(
            f"the decisions topic {topic!r} does not exist on {bootstrap}: "
            "check MODERATION_DECISIONS_TOPIC and MODERATION_BOOTSTRAP_SERVERS"
        )
    if selection.partition is not None:
        if selection.partition not in partitions:
            raise ConfigError(f"{topic} has partitions 0..{max(partitions)}, not {selection.partition}")
        partitions = {selection.partition}
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    since = await consumer.offsets_for_times({tp: selection.since_ms for tp in tps}) if selection.since_ms else {}
    until = await consumer.offsets_for_times({tp: selection.until_ms for tp in tps}) if selection.until_ms else {}
    ranges: dict[TopicPartition, tuple[int, int]] = {}
    for tp in tps:
        start, stop = begin[tp], end[tp]
        if selection.from_offset is not None:
            if selection.from_offset < begin[tp]:
                notes.append(
                    f"{topic} partition {tp.partition} begins at offset {begin[tp]}: the decision records before it "
                    f"(from {selection.from_offset}) were deleted by retention"
                )
            start = max(start, selection.from_offset)
        if selection.to_offset is not None:
            stop = min(stop, selection.to_offset + 1)
        if selection.since_ms:
            found = since.get(tp)
            start = max(start, found.offset if found is not None else stop)
        if selection.until_ms:
            found = until.get(tp)
            if found is not None:
                stop = min(stop, found.offset)
        if start < stop:
            ranges[tp] = (start, stop)
    return ranges


async def read_ranges(
    consumer: AIOKafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]], max_records: int = CHUNK_RECORDS
) -> AsyncIterator[list[Any]]:
    """Every record in the ranges, a batch at a time, each partition read from its start up to its end."""
    if not ranges:
        return
    consumer.assign(list(ranges))
    for tp, (start, _) in ranges.items():
        consumer.seek(tp, start)
    active = {tp: stop for tp, (_, stop) in ranges.items()}
    progress_at = time.monotonic()
    while active:
        batch = await consumer.getmany(*active, timeout_ms=1000, max_records=max_records)
        out = [r for tp, records in batch.items() for r in records if r.offset < active.get(tp, -1)]
        for tp in list(active):
            if await consumer.position(tp) >= active[tp]:
                del active[tp]
                consumer.pause(tp)
        if batch:
            progress_at = time.monotonic()
        elif active and time.monotonic() - progress_at > STALL_S:
            raise BrokerError(
                f"reading {', '.join(f'{tp.topic}/{tp.partition}' for tp in active)} made no progress for "
                f"{STALL_S:g} s: is the broker up? (`moderation kafka status`)"
            )
        if out:
            yield out


@dataclass
class Fetched:
    """Original posts by (topic, partition, offset), and why the others could not be read."""

    records: dict[tuple[str, int, int], Any] = field(default_factory=dict)
    missing: dict[tuple[str, int, int], str] = field(default_factory=dict)


def runs(offsets: Sequence[int], gap: int = SEEK_GAP) -> list[tuple[int, int]]:
    """Sorted offsets → ``[first, last]`` runs, split where two offsets are more than ``gap`` apart."""
    out: list[tuple[int, int]] = []
    for offset in sorted(set(offsets)):
        if out and offset - out[-1][1] <= gap:
            out[-1] = (out[-1][0], offset)
        else:
            out.append((offset, offset))
    return out


async def fetch_posts(consumer: AIOKafkaConsumer, known: Partitions, wanted: Iterable[tuple[str, int, int]]) -> Fetched:
    """Read the wanted offsets, grouped by partition (seek to each run of offsets, read it through)."""
    fetched = Fetched()
    by_tp: dict[TopicPartition, list[int]] = defaultdict(list)
    for topic, partition, offset in set(wanted):
        partitions = await known.of(topic)
        if not partitions or partition not in partitions:
            fetched.missing[(topic, partition, offset)] = (
                f"topic {topic} does not exist" if not partitions else f"topic {topic} has no partition {partition}"
            )
        else:
            by_tp[TopicPartition(topic, partition)].append(offset)
    if not by_tp:
        return fetched
    begin = await consumer.beginning_offsets(list(by_tp))
    end = await consumer.end_offsets(list(by_tp))
    todo: dict[TopicPartition, list[tuple[int, int]]] = {}
    for tp, offsets in by_tp.items():
        keep = []
        for offset in offsets:
            if offset < begin[tp]:
                fetched.missing[(tp.topic, tp.partition, offset)] = (
                    f"deleted by retention (partition {tp.partition} of {tp.topic} now begins at {begin[tp]})"
                )
            elif offset >= end[tp]:
                fetched.missing[(tp.topic, tp.partition, offset)] = (
                    f"beyond the end of partition {tp.partition} of {tp.topic} ({end[tp]}): was the topic recreated?"
                )
            else:
                keep.append(offset)
        if keep:
            todo[tp] = runs(keep)
    needed = {(tp.topic, tp.partition, o) for tp, offsets in by_tp.items() for o in offsets} - set(fetched.missing)
    if not todo:
        return fetched
    consumer.assign(list(todo))
    for tp, tp_runs in todo.items():
        consumer.seek(tp, tp_runs[0][0])
    progress_at = time.monotonic()
    while todo:
        batch = await consumer.getmany(*todo, timeout_ms=1000)
        for records in batch.values():
            for r in records:
                if (r.topic, r.partition, r.offset) in needed:
                    fetched.records[(r.topic, r.partition, r.offset)] = r
        for tp in list(todo):
            position = await consumer.position(tp)
            while todo[tp] and position > todo[tp][0][1]:
                todo[tp].pop(0)
                if todo[tp]:
                    position = max(position, todo[tp][0][0])
                    consumer.seek(tp, position)
            if not todo[tp]:
                del todo[tp]
                consumer.pause(tp)
        if batch:
            progress_at = time.monotonic()
        elif todo and time.monotonic() - progress_at > STALL_S:
            raise BrokerError(
                f"reading posts from {', '.join(f'{tp.topic}/{tp.partition}' for tp in todo)} made no progress for "
                f"{STALL_S:g} s: is the broker up? (`moderation kafka status`)"
            )
    for key in needed - set(fetched.records):
        fetched.missing[key] = "not in the partition any more (compacted, or written by an aborted transaction)"
    return fetched


# --- replay ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """A decision record that can be replayed: the document and where it and its post are."""

    doc: dict[str, Any]
    where: Where

    @property
    def origin(self) -> tuple[str, int, int]:
        return (self.where.topic, self.where.partition, self.where.offset)


def read_record(record: Any) -> Recorded | None:
    """A Kafka record of the decisions topic → :class:`Recorded`, or None when it is no decision record."""
    try:
        doc = orjson.loads(record.value or b"")
        origin = doc["origin"]
        where = Where(
            str(doc["post_id"]),
            str(origin["topic"]),
            int(origin["partition"]),
            int(origin["offset"]),
            record.partition,
            record.offset,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return Recorded(doc, where) if isinstance(doc, dict) else None


def rescore(
    pipeline: Pipeline, fetched: Fetched, batch_size: int
) -> tuple[dict[tuple[str, int, int], Decision], dict[tuple[str, int, int], str]]:
    """Re-decide the fetched posts in micro-batches; (decisions, why a post did not decode) by origin."""
    messages = [
        Message(
            value=r.value, key=r.key, origin=Origin(r.topic, r.partition, r.offset, r.timestamp), received_ms=now_ms()
        )
        for r in fetched.records.values()
    ]
    decided: dict[tuple[str, int, int], Decision] = {}
    bad: dict[tuple[str, int, int], str] = {}
    for i in range(0, len(messages), batch_size):
        result = pipeline.run(messages[i : i + batch_size])
        for item in result.moderated:
            o = item.message.origin
            decided[(o.topic, o.partition, o.offset)] = item.decision
        for rejected in result.rejected:
            o = rejected.message.origin
            bad[(o.topic, o.partition, o.offset)] = f"{rejected.error.code}: {rejected.error.message}"
    return decided, bad


async def replay_chunk(
    records: list[Any],
    report: Report,
    selection: Selection,
    posts: AIOKafkaConsumer,
    known: Partitions,
    pipeline: Pipeline,
    batch_size: int,
) -> None:
    todo: list[Recorded] = []
    for record in records:
        if not selection.wants(record.timestamp):
            continue
        recorded = read_record(record)
        if recorded is not None and selection.post_ids and recorded.where.post_id not in selection.post_ids:
            continue
        report.total += 1
        if recorded is None:
            report.unreadable += 1
            continue
        versions = Versions.of_record(recorded.doc)
        if mismatched(versions, report.loaded):
            report.skipped[versions] += 1
            continue
        todo.append(recorded)
    if not todo:
        return
    fetched = await fetch_posts(posts, known, [r.origin for r in todo])
    decided, bad = await asyncio.to_thread(rescore, pipeline, fetched, batch_size)
    for r in todo:
        if r.origin in fetched.missing:
            report.missing.append(NotReplayed(r.where, fetched.missing[r.origin]))
        elif r.origin in bad:
            report.undecodable.append(NotReplayed(r.where, bad[r.origin]))
        elif decided[r.origin].post_id != r.where.post_id:
            report.missing.append(
                NotReplayed(
                    r.where, f"the origin offset holds post {decided[r.origin].post_id!r} now: was the topic recreated?"
                )
            )
        else:
            report.add_compared(r.where, r.doc, decided[r.origin])


async def replay(
    settings: Settings,
    selection: Selection,
    pipeline: Pipeline,
    loaded: Versions,
    on_progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Replay the selected decision records of ``settings.decisions_topic``; ``on_progress(done, total)``
    after each round (total: decision records in the ranges)."""
    topic = settings.decisions_topic
    report = Report(loaded, selection={"topic": topic, "describe": selection.describe(topic)})
    await check_auth(settings)
    decisions, posts = make_consumer(settings), make_consumer(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=30_000, **client_kwargs(settings)
    )
    try:
        try:
            for client in (admin, decisions, posts):
                await client.start()
        except KafkaError as exc:
            raise BrokerError(
                f"cannot connect to Kafka at {settings.bootstrap_servers} ({type(exc).__name__}: {exc}); check "
                "MODERATION_BOOTSTRAP_SERVERS and that the broker is up (locally: `moderation kafka status`)"
            ) from None
        known = Partitions(admin)
        ranges = await resolve_ranges(decisions, known, topic, selection, report.notes, settings.bootstrap_servers)
        report.selection["ranges"] = {str(tp.partition): [a, b] for tp, (a, b) in sorted(ranges.items())}
        planned = sum(b - a for a, b in ranges.values())
        done = 0
        async for chunk in read_ranges(decisions, ranges):
            await replay_chunk(chunk, report, selection, posts, known, pipeline, settings.max_batch)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, planned)
    finally:
        for stop in (decisions.stop, posts.stop, admin.close):
            with contextlib.suppress(Exception):  # a broker that went away must not hide the result or error
                await asyncio.wait_for(stop(), 10)
    return report


def load_pipeline(settings: Settings) -> tuple[Pipeline, Versions]:
    """The pipeline ``moderation score`` and the worker run, and what it is (model + policy versions)."""
    from moderation.pipeline.infer import OnnxEngine  # ORT import is slow and not needed for --help

    engine = OnnxEngine.from_settings(settings)
    info = engine.info()
    policies = PolicyStore.from_settings(settings, available_labels=info["labels"])
    return Pipeline.from_settings(engine, policies, settings), Versions.loaded(info, policies.policy.version)


def run(args: argparse.Namespace) -> int:
    selection = Selection.from_args(args, now_ms())  # usage errors first, before anything loads
    if args.show < 0:
        raise ConfigError("--show must be ≥ 0 (0 lists every difference)")
    settings = load_settings()
    configure_logging("console" if sys.stderr.isatty() else "json", "warning")
    settings, where = resolved(settings)
    print(f"kafka: {where.describe()}", file=sys.stderr)
    pipeline, loaded = load_pipeline(settings)
    print(f"replaying with {loaded.text()}", file=sys.stderr)

    from rich.console import Console
    from rich.progress import Progress

    tty = sys.stderr.isatty()
    with Progress(console=Console(stderr=True), disable=not tty, transient=True) as progress:
        task = progress.add_task("replaying decisions", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = asyncio.run(replay(settings, selection, pipeline, loaded, advance))

    code = report.exit_code(args.strict)
    machine = args.json or args.out
    if machine or report.all_mismatched():
        for line in [] if report.all_mismatched() else report.mismatch_lines():
            print(line, file=sys.stderr)
        print(report.verdict(args.strict), file=sys.stderr)
    if machine:
        text = orjson.dumps(report.to_json(args.show, args.strict), option=orjson.OPT_INDENT_2).decode()
        if args.out:
            try:
                Path(args.out).write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot write the report to {args.out}: {exc.strerror}") from None
        else:
            print(text)
    elif not report.all_mismatched():
        render(report, Console(), args.show, args.strict)
    return code
