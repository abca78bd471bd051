"""``moderation bench soak``: one worker for a long time at a low fixed rate — does its memory level off,
and how much does it log?

A real ``moderation worker`` process (shipped model and policy, default settings, log level info) on a
private single-node broker (as the fault suite's: own state dir and port) is fed posts at a fixed rate
(default 28 posts/s, the 2 × 50k posts/hour of issue 18) for ``--seconds`` (default 80 min). The texts are
mostly distinct (:func:`soak_texts`: demo sample posts and synthetic posts, each with a few random
vocabulary words, plus ~10 % repeats of recent ones), so the model and the dedupe cache both work as on
real traffic, and the cache fills up instead of serving the same few texts.

Every ``SAMPLE_S`` the worker's resident set (``VmRSS`` of ``/proc/<pid>/status``) and its dedupe cache's
size (``moderation_dedupe_cache_entries``) are sampled. Reported: the RSS slope after the warm-up
(:data:`WARMUP_S`; least squares, MiB/h) over all samples after it and over the last half of them, and
the worker's log lines per hour at info over the same window (and by event). ``--baseline DIR`` soaks a
second worker from another checkout side by side (same broker, same posts, its own group and output
topics): before/after in one run.

Fails (exit 1) when a post is missing, a worker exits, the last-half slope exceeds ``MAX_SLOPE_MIB_H`` or
the log exceeds ``MAX_LINES_PER_HOUR`` (the issue's bar) — for the soaked worker, not the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import random
import shutil
import subprocess
import tempfile
import time
import urllib.error
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console

from moderation.core.errors import ConfigError
from moderation.core.settings import Settings, load_settings
from moderation.devtools.bench.faults import Observer, _machine, log_events, write_inline
from moderation.devtools.bench.workload import sample_texts, synthesize, vocabulary_words
from moderation.devtools.broker import LocalKafka
from moderation.devtools.broker.local import free_port as free_broker_port
from moderation.devtools.launch import OUTPUTS, WorkerProcess, create_topics, topic_env
from moderation.pipeline.dedupe import text_key

DEFAULT_SECONDS = 4800.0  # 80 min: at 28 posts/s the default 50k-entry dedupe cache is full after ~35 min
DEFAULT_RATE = 28.0  # posts/s: 2 × 50k posts/hour, the rate of issue 18's soak
SAMPLE_S = 10.0
WARMUP_S = 300.0
"""Warm-up: the first 5 min (a quarter of shorter runs) or, when it is later, until the dedupe cache is
full — until then its entries are bounded growth by design (MODERATION_DEDUPE_CACHE_SIZE), not a leak."""
MAX_SLOPE_MIB_H = 2.0
"""Bar for the RSS slope over the last half after warm-up: 2 MiB/h is 48 MiB a day, 2.3 % of the 2 GiB
limit (k8s/base/deployment.yaml) — a worker that grows faster runs out within weeks."""
MAX_LINES_PER_HOUR = 1000
JSON_NAME = "soak.json"
SECTION_BEGIN = "<!-- soak:begin (written by `moderation bench soak`; edits inside are replaced) -->"
SECTION_END = "<!-- soak:end -->"


def soak_texts(words: Sequence[str], sample: Sequence[str], *, seed: int = 18, repeats: float = 0.1) -> Iterator[str]:
    """Endless post texts, mostly distinct: a demo sample post or a synthetic one with 2-5 random
    vocabulary words before or after it; a share ``repeats`` are a recent text again (a spam wave)."""
    rng = random.Random(seed)
    recent: deque[str] = deque(maxlen=500)
    synthetic: list[str] = []
    chunk = 0
    while True:
        if recent and rng.random() < repeats:
            yield recent[rng.randrange(len(recent))]
            continue
        if sample and rng.random() < 0.5:
            base = sample[rng.randrange(len(sample))]
        else:
            if not synthetic:
                synthetic = synthesize(words, 1000, seed=seed * 1000 + chunk)
                chunk += 1
            base = synthetic.pop()
        extra = " ".join(words[rng.randrange(len(words))] for _ in range(rng.randint(2, 5)))
        text = f"{base} {extra}" if rng.random() < 0.5 else f"{extra} {base}"
        recent.append(text)
        yield text


def rss_bytes(pid: int) -> int | None:
    """Resident set of a process (``VmRSS``); None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cache_entries(metrics: str) -> int | None:
    for line in metrics.splitlines():
        if line.startswith("moderation_dedupe_cache_entries "):
            return int(float(line.split()[1]))
    return None


def largest_batch(metrics: str) -> int | None:
    """Upper bound of the largest batch so far, from ``moderation_batch_size``'s buckets (the first bucket
    that holds every batch). ONNX Runtime's CPU arena grows to the largest batch × length it has scored
    and keeps it, so RSS steps up with this bound."""
    buckets: list[tuple[float, float]] = []
    total = None
    for line in metrics.splitlines():
        if line.startswith("moderation_batch_size_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("moderation_batch_size_count "):
            total = float(line.split()[1])
    if not total:
        return None
    return next((int(le) for le, count in sorted(buckets) if count >= total and le != float("inf")), None)


def slope_mib_per_h(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour; None for fewer than 3 samples."""
    if len(samples) < 3:
        return None
    t = np.array([s for s, _ in samples]) / 3600
    y = np.array([m for _, m in samples])
    return float(np.polyfit(t, y, 1)[0])


def log_rate(path: Path, start: float, end: float) -> tuple[int, float, dict[str, int], int]:
    """(lines in [start, end], lines per hour there, their events by count, all lines of the run)."""
    lines = 0
    events: Counter[str] = Counter()
    total = 0
    for e in log_events(path):
        stamp = e.get("timestamp")
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if isinstance(stamp, str) else None
        if at is not None and start <= at <= end:
            lines += 1
            events[str(e.get("event"))[:60]] += 1
    with contextlib.suppress(OSError):
        total = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    hours = max(end - start, 1e-9) / 3600
    return lines, lines / hours, dict(events.most_common(12)), total


@dataclass
class Soaked:
    """One worker under the soak and what was sampled of it."""

    name: str
    worker: WorkerProcess
    observer: Observer
    source: str  # "this checkout" or the baseline's path
    samples: list[dict[str, Any]] = field(default_factory=list)  # t_s, rss_mib, cache_entries, decided
    exited: int | None = None

    def sample(self, t_s: float) -> None:
        rss = rss_bytes(self.worker.proc.pid)
        if self.worker.proc.poll() is not None:
            self.exited = self.worker.proc.returncode
            return
        entries, largest = None, None
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            status, body = self.worker.get("/metrics", 2)
            text = body.decode() if status == 200 else ""
            entries, largest = cache_entries(text), largest_batch(text)
        if rss is not None:
            self.samples.append(
                {
                    "t_s": round(t_s, 1),
                    "rss_mib": round(rss / 2**20, 2),
                    "cache_entries": entries,
                    "largest_batch_le": largest,
                    "decided": len(self.observer.decided),
                }
            )


class Soak:
    def __init__(self, settings: Settings, seconds: float, rate: float, workdir: Path, console: Console) -> None:
        self.settings = settings
        self.seconds = seconds
        self.rate = rate
        self.warmup_s = min(WARMUP_S, seconds / 4)
        self.cache_full_at_s: float | None = None
        self.workdir = workdir
        self.console = console
        self.kafka = LocalKafka(
            Settings(kafka_state_dir=workdir / "broker", cache_dir=settings.cache_dir),
            console=Console(file=io.StringIO()),
        )
        self.port = free_broker_port()
        self.bootstrap = ""
        self.run_id = f"soak-{int(time.time())}"
        self.sent: set[str] = set()
        self.distinct: set[bytes] = set()

    def worker_env(self, topics: Mapping[str, str], label: str) -> dict[str, str]:
        return {
            **topic_env(self.bootstrap, topics, f"{self.run_id}-{label}-group"),
            "MODERATION_CACHE_DIR": str(self.workdir / f"cache-{label}"),
            "MODERATION_LOG_LEVEL": "info",
            "MODERATION_SECURITY_PROTOCOL": "PLAINTEXT",  # the private broker, whatever the environment says
            "MODERATION_SASL_USERNAME": "",
            "MODERATION_SASL_PASSWORD": "",
            "MODERATION_SSL_CAFILE": "",
            "MODERATION_SSL_CERTFILE": "",
            "MODERATION_SSL_KEYFILE": "",
        }

    async def start_worker(self, label: str, posts: str, source: Path | None) -> Soaked:
        topics = {"posts": posts, **{o: f"{self.run_id}-{label}.{o}" for o in OUTPUTS}}
        await create_topics(self.bootstrap, [topics[o] for o in OUTPUTS], self.settings.topic_partitions)
        observer = Observer(self.bootstrap, topics["decisions"], topics["dlq"], self.settings.topic_partitions)
        await observer.start()
        worker = WorkerProcess(
            f"soak-{label}", self.worker_env(topics, label), self.workdir / f"{label}.log", source=source
        )
        await asyncio.to_thread(worker.wait_ready, 180)
        return Soaked(label, worker, observer, _describe(source))

    async def stream(self, topic: str, texts: Iterator[str], started: float) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await asyncio.wait_for(producer.start(), 30)
        pending: list[tuple[str, asyncio.Future[Any]]] = []
        try:
            i = 0
            while (due := started + i / self.rate) < started + self.seconds:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                post_id = f"s{i:08d}"
                text = next(texts)
                self.distinct.add(text_key(text))
                value = orjson.dumps(
                    {"id": post_id, "text": text, "lang": "en", "created_at": time.time_ns() // 1_000_000}
                )
                pending.append((post_id, await producer.send(topic, value, key=post_id.encode())))
                if len(pending) >= 200:
                    await self._settle(pending)
                i += 1
            await self._settle(pending)
        finally:
            await producer.stop()

    async def _settle(self, pending: list[tuple[str, asyncio.Future[Any]]]) -> None:
        await asyncio.gather(*(f for _, f in pending))
        self.sent.update(pid for pid, _ in pending)
        pending.clear()

    async def run(self, baseline: Path | None) -> dict[str, Any]:
        up = await asyncio.to_thread(self.kafka.up, self.port)
        self.bootstrap = up.state.bootstrap
        soaked: list[Soaked] = []
        try:
            posts = f"{self.run_id}.posts"
            await create_topics(self.bootstrap, [posts], self.settings.topic_partitions)
            soaked.append(await self.start_worker("worker", posts, None))
            if baseline is not None:
                soaked.append(await self.start_worker("baseline", posts, baseline))
            words = vocabulary_words(_tokenizer(self.settings))
            # the demo sample holds a post over the text limit on purpose (for the DLQ): the soak wants decisions
            sample = [t for t in sample_texts() if len(t) <= self.settings.max_text_chars // 2]
            texts = soak_texts(words, sample)
            started, wall_start = time.monotonic(), time.time()
            streaming = asyncio.create_task(self.stream(posts, texts, started))
            next_sample = started
            while not streaming.done():
                for s in soaked:
                    await s.observer.poll(100)
                if time.monotonic() >= next_sample:
                    for s in soaked:
                        await asyncio.to_thread(s.sample, time.monotonic() - started)
                    next_sample += SAMPLE_S
                    self._progress(soaked, time.monotonic() - started)
                if any(s.exited is not None for s in soaked):
                    streaming.cancel()
                    break
            with contextlib.suppress(asyncio.CancelledError):
                await streaming
            stream_end = time.time()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and any(self.sent - s.observer.decided.keys() for s in soaked):
                for s in soaked:
                    await s.observer.poll(200)
            for s in soaked:
                await s.observer.drain(idle_s=2)
            full = [x["t_s"] for x in soaked[0].samples if (x["cache_entries"] or 0) >= self.settings.dedupe_cache_size]
            if full and self.settings.dedupe_cache_size > 0:
                self.cache_full_at_s = full[0]
                self.warmup_s = max(self.warmup_s, full[0])
            return {s.name: self._result(s, wall_start, stream_end) for s in soaked}
        finally:
            for s in soaked:
                code = await asyncio.to_thread(s.worker.terminate, 40)
                if s.exited is None and code != 0:
                    s.exited = code
                await s.observer.stop()
            await asyncio.to_thread(self.kafka.down)

    def _progress(self, soaked: Sequence[Soaked], t_s: float) -> None:
        parts = [
            f"{s.name}: rss {s.samples[-1]['rss_mib']:.1f} MiB, cache {s.samples[-1]['cache_entries']}, "
            f"decided {s.samples[-1]['decided']:,}"
            for s in soaked
            if s.samples
        ]
        self.console.print(f"[dim]{t_s / 60:5.1f} min[/] sent {len(self.sent):,}; " + "; ".join(parts))

    def _result(self, s: Soaked, wall_start: float, stream_end: float) -> dict[str, Any]:
        after = [x for x in s.samples if x["t_s"] >= self.warmup_s]
        half = after[len(after) // 2 :]
        pairs = [(x["t_s"], x["rss_mib"]) for x in after]
        lines, per_hour, events, total_lines = log_rate(s.worker.log_path, wall_start + self.warmup_s, stream_end)
        summaries = [e for e in log_events(s.worker.log_path) if e.get("event") == "summary" and e.get("posts")]
        p99s = [e["e2e_ms"]["p99"] for e in summaries if isinstance(e.get("e2e_ms"), dict) and e["e2e_ms"]["p99"]]
        missing = len(self.sent - s.observer.decided.keys())
        rss = [x["rss_mib"] for x in s.samples]
        return {
            "source": s.source,
            "sent": len(self.sent),
            "decided": len(self.sent & s.observer.decided.keys()),
            "missing": missing,
            "dlq": sum(len(v) for v in s.observer.dlq_at.values()),
            "exited": s.exited,
            "warmup_s": self.warmup_s,
            "rss_mib": {
                "first": rss[0] if rss else None,
                "at_warmup_end": after[0]["rss_mib"] if after else None,
                "last": rss[-1] if rss else None,
                "max": max(rss) if rss else None,
            },
            "slope_mib_per_h": slope_mib_per_h(pairs),
            "last_half_slope_mib_per_h": slope_mib_per_h([(x["t_s"], x["rss_mib"]) for x in half]),
            "cache_entries_last": s.samples[-1]["cache_entries"] if s.samples else None,
            "log_lines_after_warmup": lines,
            "log_lines_per_hour": round(per_hour),
            "log_events_after_warmup": events,
            "log_lines_total": total_lines,
            "summary_e2e_p99_ms_max": max(p99s) if p99s else None,
            "samples": s.samples,
        }


def _describe(source: Path | None) -> str:
    """Which code a worker runs: this checkout, or another one named by its commit when it has one."""
    if source is None:
        return "this checkout"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"commit {out.stdout.strip()}"
    return str(source)


def _tokenizer(settings: Settings) -> Any:
    from moderation.pipeline.tokenize import TextTokenizer

    return TextTokenizer(settings.model_dir / "tokenizer.json", 128)


def checks(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    w = result["workers"]["worker"]
    slope = w["last_half_slope_mib_per_h"]
    return [
        {"name": "every post decided", "ok": w["missing"] == 0 and w["sent"] > 0,
         "detail": f"{w['sent']:,} sent, {w['decided']:,} decided, {w['missing']} missing, {w['dlq']} DLQ"},
        {"name": "the worker never exited", "ok": w["exited"] is None,
         "detail": "ran throughout" if w["exited"] is None else f"exit code {w['exited']}"},
        {"name": f"RSS levels off: last-half slope ≤ {MAX_SLOPE_MIB_H:g} MiB/h", "ok": slope is not None
         and slope <= MAX_SLOPE_MIB_H, "detail": f"{_f(slope)} MiB/h (after warm-up: {_f(w['slope_mib_per_h'])})"},
        {"name": f"log lines per hour at info ≤ {MAX_LINES_PER_HOUR:,}", "ok": w["log_lines_per_hour"]
         <= MAX_LINES_PER_HOUR, "detail": f"{w['log_lines_per_hour']:,}/h ({w['log_lines_after_warmup']} lines)"},
    ]  # fmt: skip


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def markdown(result: Mapping[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"## Soak: **{result['verdict'].upper()}**",
        "",
        f"`{result['command']}` at commit `{m['git_commit']}`, {m['when']}, {result['duration_s']:.0f} s; "
        f"model {m['model']}; {m['cpu_count']} CPUs (shared; load before {m['load_avg_before']}); {m['kafka']}.",
        "",
        f"{result['rate']:g} posts/s for {result['seconds'] / 60:.0f} min ({result['distinct_share']:.0%} of the "
        f"texts distinct after normalisation), a worker at its default settings and log level info; RSS "
        f"(`VmRSS`) sampled every {SAMPLE_S:g} s; slopes are least squares over the samples after the "
        f"warm-up and over the last half of those. Warm-up: the first {result['warmup_s'] / 60:.1f} min — "
        + (
            f"until the dedupe cache was full ({result['dedupe_cache_size']:,} entries, "
            f"`MODERATION_DEDUPE_CACHE_SIZE`) at {result['cache_full_at_s'] / 60:.1f} min."
            if result["cache_full_at_s"] is not None
            else f"the dedupe cache ({result['dedupe_cache_size']:,} entries) did not fill up in this run, so its "
            "filling is part of the slope."
        ),
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for c in result["checks"]:
        lines.append(f"| {c['name']} | {'ok' if c['ok'] else '**FAIL**'} | {c['detail']} |")
    lines += [
        "",
        "| worker | RSS start → warm-up end → last (max) MiB | slope after warm-up MiB/h | last half MiB/h "
        "| dedupe cache entries | log lines/h at info | missing |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, w in result["workers"].items():
        r = w["rss_mib"]
        lines.append(
            f"| {name} ({w['source']}) | {r['first']} → {r['at_warmup_end']} → {r['last']} ({r['max']}) "
            f"| {_f(w['slope_mib_per_h'])} | {_f(w['last_half_slope_mib_per_h'])} | {w['cache_entries_last']} "
            f"| {w['log_lines_per_hour']:,} | {w['missing']} |"
        )
    w = result["workers"]["worker"]
    events = ", ".join(f"{k} {v}" for k, v in w["log_events_after_warmup"].items())
    lines += ["", f"Log lines after warm-up by event (worker): {events or 'none'}.", ""]
    step = max(1, len(w["samples"]) // 12)
    lines += [
        "| min | RSS MiB | dedupe cache entries | largest batch so far (≤) | decided |",
        "|---:|---:|---:|---:|---:|",
    ]
    for x in w["samples"][::step]:
        lines.append(
            f"| {x['t_s'] / 60:.0f} | {x['rss_mib']} | {x['cache_entries']} | {x.get('largest_batch_le')} "
            f"| {x['decided']:,} |"
        )
    lines += ["", f"Raw numbers and every sample: `{result['json']}` (git-ignored), written by each run."]
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- soak:readme (written by `moderation bench soak`) -->"
README_END = "<!-- /soak:readme -->"


def readme_figures(result: Mapping[str, Any]) -> str:
    """The README's sentence on a soak, copied there by the run that measured it."""
    w = result["workers"]["worker"]
    text = (
        f"{w['log_lines_per_hour']:,} log lines/h at info and an RSS slope of "
        f"{_f(w['last_half_slope_mib_per_h'])} MiB/h over the last half after warm-up "
        f"({_f(w['slope_mib_per_h'])} over all of it; {w['rss_mib']['at_warmup_end']} → {w['rss_mib']['last']} MiB) "
        f"at {result['rate']:g} posts/s for {result['seconds'] / 60:.0f} min, "
        f"commit `{result['machine']['git_commit']}`"
    )
    base = result["workers"].get("baseline")
    if base:
        text += (
            f"; the worker of {base['source']} beside it: {base['log_lines_per_hour']:,} lines/h, "
            f"{_f(base['last_half_slope_mib_per_h'])} MiB/h ({_f(base['slope_mib_per_h'])}; "
            f"{base['rss_mib']['at_warmup_end']} → {base['rss_mib']['last']} MiB)"
        )
    return text


def write_section(path: Path, body: str) -> None:
    from moderation.devtools.bench.faults import write_section as write

    write(path, "soak", body, begin=SECTION_BEGIN, end=SECTION_END)


def _command(args: argparse.Namespace, seconds: float, rate: float) -> str:
    parts = ["moderation bench soak", f"--seconds {seconds:g}", f"--rate {rate:g}"]
    if getattr(args, "baseline", None):
        parts.append(f"--baseline {args.baseline}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    seconds = float(getattr(args, "seconds", None) or DEFAULT_SECONDS)
    rate = float(getattr(args, "rate", None) or DEFAULT_RATE)
    if seconds < 60 or rate <= 0:
        raise ConfigError("need --seconds ≥ 60 and --rate > 0")
    if not Path("/proc/self/status").is_file():
        raise ConfigError("the soak reads a worker's RSS from /proc/<pid>/status: it runs on Linux only")
    baseline = Path(args.baseline).resolve() if getattr(args, "baseline", None) else None
    if baseline is not None and not (baseline / "moderation" / "cli.py").is_file():
        raise ConfigError(f"--baseline {baseline}: not a checkout of this project (no moderation/cli.py)")
    out = Path(args.out or f"bench-results/{JSON_NAME}")
    report = getattr(args, "report", None)
    md_path = None if report == "-" else Path(report or "RELIABILITY.md")
    console = Console()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the observer's start-up retries are not news
    settings = load_settings()
    if not (settings.model_dir / "tokenizer.json").is_file():
        raise ConfigError(f"no model in {settings.model_dir} (MODERATION_MODEL_DIR)")
    machine = _machine(settings)
    console.print(
        f"[bold]moderation bench soak[/]: {rate:g} posts/s for {seconds / 60:.0f} min, model {machine['model']}"
        + (f", baseline {baseline}" if baseline else "")
    )
    workdir = Path(tempfile.mkdtemp(prefix="moderation-soak-"))
    started = time.monotonic()
    soak = Soak(settings, seconds, rate, workdir, console)
    workers = asyncio.run(soak.run(baseline))
    result: dict[str, Any] = {
        "command": _command(args, seconds, rate),
        "machine": machine,
        "seconds": seconds,
        "rate": rate,
        "warmup_s": soak.warmup_s,
        "cache_full_at_s": soak.cache_full_at_s,
        "dedupe_cache_size": settings.dedupe_cache_size,
        "duration_s": round(time.monotonic() - started, 1),
        "distinct_share": len(soak.distinct) / max(1, len(soak.sent)),
        "workers": workers,
        "json": str(out),
    }
    result["checks"] = checks(result)
    result["verdict"] = "pass" if all(c["ok"] for c in result["checks"]) else "fail"
    result["logs"] = str(workdir) if result["verdict"] != "pass" else "(deleted: all checks passed)"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    readme = None
    if md_path is not None:
        write_section(md_path, markdown(result))
        readme = md_path.parent / "README.md"  # its figure, where it has the markers
        if not write_inline(readme, README_BEGIN, README_END, readme_figures(result)):
            readme = None
    for c in result["checks"]:
        console.print(f"{'[green]ok[/]' if c['ok'] else '[red]FAIL[/]'} {c['name']}: {c['detail']}")
    console.print(
        f"wrote {out}"
        + (f" and {md_path}" if md_path else "")
        + (f" and the figure in {readme}" if readme else "")
        + f"; logs {result['logs']}"
    )
    if result["verdict"] == "pass":
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result["verdict"] == "pass" else 1
