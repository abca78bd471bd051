"""``moderation bench pipeline``: end to end through the real broker — the shipped worker against a naive one.

Measured in one run, on the same machine, broker, model and posts:

* **Sustained throughput.** A fresh input topic is pre-filled with N posts, then a worker process is
  started on it. Throughput is counted between the first and the last decision record (Kafka record
  timestamps), so model loading and the consumer-group join are not counted, and every post must be
  decided: posts decided after the first decision / seconds from the first to the last decision.
* **Latency.** A fresh worker is fed posts at a steady rate below both workers' capacity (half the
  slower one's measured throughput); latency is produce → decision record received by this process's
  consumer, p50/p99, after one second of warm-up traffic.
* **Throughput vs batch size.** The shipped worker's sustained throughput for several
  ``MODERATION_MAX_BATCH`` values (the default is the run above), plotted as a PNG.

The shipped worker is ``moderation worker`` as deployed (its default settings; topics, group and
model from ``MODERATION_*``). The naive worker is :mod:`moderation.devtools.bench.naive`. Posts are synthetic
social-media posts built from the model's own vocabulary, all distinct after normalisation, so the
shipped worker's dedupe cache never helps it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moderation.core.errors import BrokerError, ConfigError, ModerationError
from moderation.core.settings import Settings, load_settings
from moderation.devtools.bench.workload import length_profile, synthesize, vocabulary_words
from moderation.devtools.broker import KAFKA_VERSION
from moderation.devtools.launch import OUTPUTS, WorkerProcess, create_topics, kafka_broker, stop_process, topic_env
from moderation.pipeline.dedupe import text_key
from moderation.pipeline.infer import OnnxEngine
from moderation.pipeline.tokenize import TextTokenizer

SHIPPED, NAIVE, FREE = "shipped", "naive", "free"
FREE_BATCH = 512  # the free scorer's runs: big batches, as a GPU worker would use
DEFAULT_FREE_POSTS, QUICK_FREE_POSTS = 30_000, 400
DEFAULT_POSTS, QUICK_POSTS = 6000, 200
DEFAULT_SECONDS, QUICK_SECONDS = 20.0, 3.0
DEFAULT_BATCHES = (1, 8, 32, 64, 128)
QUICK_BATCHES = (8, 64)
PLOT_NAME = "throughput_vs_batch.png"
JSON_NAME = "pipeline.json"
START_TIMEOUT_S = 180.0


class BenchError(ModerationError):
    """A measurement could not be completed (a worker died, or posts were never decided)."""


@dataclass(frozen=True)
class Throughput:
    worker: str
    max_batch: int | None  # None: the naive worker has no batches
    posts: int
    decided: int  # distinct posts with a decision record
    duplicates: int  # decision records beyond one per post (redeliveries)
    window_s: float  # first → last decision record
    posts_per_s: float
    first_decision_s: float  # worker process start → first decision (model load, group join)
    processes: int = 1  # worker processes sharing the topic (one consumer group)
    code: str = "current"  # which checkout's worker ran: "current", or the baseline's label


@dataclass(frozen=True)
class Latency:
    worker: str
    max_batch: int | None
    rate: float
    posts: int  # measured posts (warm-up excluded)
    decided: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


class Worker(Protocol):
    proc: subprocess.Popen[bytes]

    def wait_ready(self, timeout_s: float = ...) -> None: ...

    def terminate(self, timeout_s: float = ...) -> int: ...

    def log_tail(self, lines: int = ...) -> str: ...


class NaiveProcess:
    """``python -m moderation.devtools.bench.naive`` as a subprocess; ready when it printed ``ready``."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moderation.devtools.bench.naive"],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"naive worker exited during start-up ({self.proc.returncode}):\n{self.log_tail()}")
            if b"ready" in self.log_path.read_bytes().splitlines():
                return
            time.sleep(0.2)
        raise BenchError(f"naive worker was not ready after {timeout_s:.0f}s; log: {self.log_path}")

    def terminate(self, timeout_s: float = 30) -> int:
        return stop_process(self.proc, timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def distinct_posts(tokenizer: TextTokenizer, n: int, seed: int = 11) -> list[str]:
    """``n`` synthetic posts, pairwise distinct after the dedupe stage's normalisation."""
    words = vocabulary_words(tokenizer)
    out: list[str] = []
    seen: set[bytes] = set()
    for round_ in range(20):
        for text in synthesize(words, max(n, 256), seed=seed + round_):
            key = text_key(text)
            if key not in seen:
                seen.add(key)
                out.append(text)
                if len(out) == n:
                    return out
    # a tiny vocabulary (test models) runs out of distinct short posts: number the rest
    i = 0
    while len(out) < n:
        text = f"{out[i % len(out)]} #{i}"
        if text_key(text) not in seen:
            seen.add(text_key(text))
            out.append(text)
        i += 1
    return out


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def sustained_rate(timestamps_ms: Sequence[int]) -> tuple[float, float]:
    """(posts/s, window s) from decision timestamps: posts decided after the first one / window."""
    if len(timestamps_ms) < 2:
        return float("nan"), 0.0
    ts = sorted(timestamps_ms)
    window = (ts[-1] - ts[0]) / 1000
    after_first = sum(1 for t in ts if t > ts[0])
    return (after_first / window if window > 0 else float("nan")), window


class Bench:
    """One benchmark run: its topics, its worker processes, its measurements."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        workdir: Path,
        texts: Sequence[str],
        progress: Progress,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """``extra_env``: settings every worker of the run gets (e.g. the model variant and providers)."""
        self.settings = settings
        self.extra_env = dict(extra_env or {})
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.texts = texts
        self.progress = progress
        self.run_id = f"bench-{int(time.time())}-{os.getpid()}"
        self.seq = itertools.count()
        self.topics_made: list[str] = []

    # --- plumbing -------------------------------------------------------------------------------------

    async def _topics(self, label: str) -> dict[str, str]:
        prefix = f"{self.run_id}-{next(self.seq)}-{label}"
        topics = {name: f"{prefix}.{name}" for name in ("posts", *OUTPUTS)}
        try:
            await create_topics(self.bootstrap, list(topics.values()), self.settings.topic_partitions)
        except BrokerError as exc:
            raise BenchError(str(exc)) from None
        self.topics_made.extend(topics.values())
        return topics

    async def delete_topics(self) -> None:
        if not self.topics_made:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=15_000)
        await asyncio.wait_for(admin.start(), 30)
        try:
            await asyncio.wait_for(admin.delete_topics(self.topics_made), 30)
        finally:
            await admin.close()

    def _env(self, topics: Mapping[str, str], max_batch: int | None) -> dict[str, str]:
        env = {
            **topic_env(self.bootstrap, topics, f"{topics['posts']}-group"),
            "MODERATION_CACHE_DIR": str(self.workdir / "cache"),
            "MODERATION_LOG_LEVEL": "warning",
            **self.extra_env,
        }
        if max_batch is not None:
            env["MODERATION_MAX_BATCH"] = str(max_batch)
        return env

    def _start(
        self,
        kind: str,
        topics: Mapping[str, str],
        max_batch: int | None,
        slot: int = 0,
        source: Path | None = None,
        env_override: Mapping[str, str] | None = None,
    ) -> Worker:
        env = {**self._env(topics, max_batch), **(env_override or {})}
        log = self.workdir / f"{topics['posts']}-{slot}.log"
        if kind == SHIPPED:
            return WorkerProcess(f"bench-{kind}-{slot}", env, log, source=source)
        if kind == FREE:
            return WorkerProcess(
                f"bench-{kind}-{slot}", env, log, module=("moderation.devtools.bench.free",), source=source
            )
        return NaiveProcess(env, log)

    def _post(self, i: int, prefix: str, text: str) -> tuple[bytes, bytes]:
        post_id = f"{prefix}-{i:06d}"
        doc = {"id": post_id, "text": text, "lang": "en", "created_at": time.time_ns() // 1_000_000}
        return post_id.encode(), orjson.dumps(doc)

    async def _observer(self, topic: str) -> AIOKafkaConsumer:
        """Reads the run's (fresh) decisions topic from its beginning."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
        await asyncio.wait_for(consumer.start(), 30)
        tps = [TopicPartition(topic, p) for p in range(self.settings.topic_partitions)]  # created by _topics
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return consumer

    @staticmethod
    def _check_alive(worker: Worker, what: str) -> None:
        if worker.proc.poll() is not None:
            raise BenchError(f"{what}: worker exited ({worker.proc.returncode}) mid-run:\n{worker.log_tail()}")

    # --- measurements ---------------------------------------------------------------------------------

    async def throughput(
        self,
        kind: str,
        max_batch: int | None,
        n: int,
        processes: int = 1,
        source: Path | None = None,
        code: str = "current",
        env: Mapping[str, str] | None = None,
    ) -> Throughput:
        """Sustained posts/s of ``processes`` workers of ``kind`` on a pre-filled topic; ``source``: run the
        worker of another checkout (``code`` names it in the results) to compare against in the same run."""
        label = (f"{kind}-b{max_batch}" if max_batch else kind) + (f"-x{processes}" if processes > 1 else "")
        what = f"{kind} worker" + (f", max_batch {max_batch}" if max_batch else "")
        what += f", {processes} processes" if processes > 1 else ""
        what += f" [{code}]" if source is not None else ""
        task = self.progress.add_task(f"throughput: {what}: pre-filling", total=n)
        topics = await self._topics(f"{label}-tput")
        prefix = topics["posts"]
        posts = [self._post(i, prefix, self.texts[i]) for i in range(n)]
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=10)
        await asyncio.wait_for(producer.start(), 30)
        try:
            await asyncio.gather(*[await producer.send(topics["posts"], value, key=key) for key, value in posts])
        finally:
            await producer.stop()
        ids = {key for key, _ in posts}
        observer = await self._observer(topics["decisions"])
        self.progress.update(task, description=f"throughput: {what}: starting")
        started = time.monotonic()
        workers = [self._start(kind, topics, max_batch, slot, source, env) for slot in range(processes)]
        first_at: float | None = None
        stamps: dict[bytes, int] = {}
        duplicates = 0
        deadline = started + START_TIMEOUT_S + n / 10
        try:
            while len(stamps) < n:
                if time.monotonic() > deadline:
                    raise BenchError(f"{what}: only {len(stamps)} of {n} posts decided in time")
                for worker in workers:
                    self._check_alive(worker, what)
                batches = await observer.getmany(timeout_ms=200, max_records=5000)
                for records in batches.values():
                    for rec in records:
                        if rec.key not in ids:
                            continue
                        if rec.key in stamps:
                            duplicates += 1
                        else:
                            stamps[rec.key] = rec.timestamp
                if stamps and first_at is None:
                    first_at = time.monotonic()
                    self.progress.update(task, description=f"throughput: {what}")
                self.progress.update(task, completed=len(stamps))
        finally:
            await asyncio.gather(*(asyncio.to_thread(w.terminate, 40) for w in workers))
            await observer.stop()
        rate, window = sustained_rate(list(stamps.values()))
        self.progress.update(task, description=f"throughput: {what}: {rate:,.0f} posts/s", completed=n)
        return Throughput(
            worker=kind,
            max_batch=max_batch,
            posts=n,
            decided=len(stamps),
            duplicates=duplicates,
            window_s=round(window, 3),
            posts_per_s=rate,
            first_decision_s=round((first_at or started) - started, 2),
            processes=processes,
            code=code,
        )

    async def latency(self, kind: str, max_batch: int | None, rate: float, seconds: float) -> Latency:
        what = f"{kind} worker" + (f", max_batch {max_batch}" if max_batch else "")
        warm = max(5, round(rate))  # the first second of traffic is warm-up, not measured
        n = warm + max(20, round(rate * seconds))
        n = min(n, len(self.texts))
        task = self.progress.add_task(f"latency @ {rate:g}/s: {what}: starting", total=n)
        topics = await self._topics(f"{kind}-lat")
        prefix = topics["posts"]
        observer = await self._observer(topics["decisions"])
        worker = self._start(kind, topics, max_batch)
        sent: dict[bytes, float] = {}
        arrived: dict[bytes, float] = {}
        try:
            await asyncio.to_thread(worker.wait_ready, START_TIMEOUT_S)
            self.progress.update(task, description=f"latency @ {rate:g}/s: {what}")
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
            await asyncio.wait_for(producer.start(), 30)

            async def produce() -> None:
                start = time.perf_counter()
                pending = []
                for i in range(n):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    key, value = self._post(i, prefix, self.texts[i])
                    sent[key] = time.perf_counter()
                    pending.append(await producer.send(topics["posts"], value, key=key))
                await asyncio.gather(*pending)

            producing = asyncio.create_task(produce())
            deadline = time.monotonic() + n / rate + 60
            try:
                while len(arrived) < n:
                    if time.monotonic() > deadline:
                        raise BenchError(f"latency, {what}: only {len(arrived)} of {n} posts decided in time")
                    self._check_alive(worker, what)
                    batches = await observer.getmany(timeout_ms=100)
                    now = time.perf_counter()
                    for records in batches.values():
                        for rec in records:
                            if rec.key in sent and rec.key not in arrived:
                                arrived[rec.key] = now
                    self.progress.update(task, completed=len(arrived))
                    if producing.done() and producing.exception():
                        raise BenchError(f"producing failed: {producing.exception()}")
                await producing
            finally:
                producing.cancel()
                await producer.stop()
        finally:
            await asyncio.to_thread(worker.terminate, 40)
            await observer.stop()
        measured = [f"{prefix}-{i:06d}".encode() for i in range(warm, n)]
        lat_ms = [(arrived[k] - sent[k]) * 1000 for k in measured if k in arrived]
        result = Latency(
            worker=kind,
            max_batch=max_batch,
            rate=rate,
            posts=len(measured),
            decided=len(lat_ms),
            p50_ms=round(percentile(lat_ms, 50), 1),
            p90_ms=round(percentile(lat_ms, 90), 1),
            p99_ms=round(percentile(lat_ms, 99), 1),
            max_ms=round(max(lat_ms), 1) if lat_ms else float("nan"),
        )
        self.progress.update(
            task, description=f"latency @ {rate:g}/s: {what}: p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms"
        )
        return result


def engine_ceiling(engine: OnnxEngine, texts: Sequence[str], batch: int, seconds: float) -> dict[str, float]:
    """The engine alone on the same posts, one per call and ``batch`` per call: what Kafka-free scoring costs."""
    from moderation.devtools.bench.engine import measure

    out: dict[str, float] = {}
    for size in (1, batch):
        _, wall, done = measure(engine.score, texts, size, seconds)
        out[f"batch_{size}_posts_per_s"] = done / wall
    return out


# --- report ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(settings: Settings, engine: OnnxEngine) -> dict[str, Any]:
    import onnxruntime as ort

    from moderation.devtools.bench.engine import _git_commit

    info = engine.info()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "provider": info["provider"],
        "model": f"{info['name']} {info['version']} ({info['variant']})",
        "model_dir": str(settings.model_dir),
        "kafka": f"Apache Kafka {KAFKA_VERSION}, single-node KRaft on the same machine",
        "load_avg_before": round(os.getloadavg()[0], 2),
    }


def plot(path: Path, sweep: Sequence[Throughput], naive: Throughput, default_batch: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted((t.max_batch or 1, t.posts_per_s) for t in sweep)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot([b for b, _ in points], [r for _, r in points], "o-", color="#1f6feb", label="shipped worker")
    for b, r in points:
        ax.annotate(f"{r:,.0f}", (b, r), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.axhline(naive.posts_per_s, color="#d1242f", linestyle="--", label=f"naive worker ({naive.posts_per_s:,.0f})")
    ax.axvline(default_batch, color="grey", linestyle=":", linewidth=1, label=f"default max_batch ({default_batch})")
    ax.set_xscale("log", base=2)
    ax.set_xticks([b for b, _ in points], [str(b) for b, _ in points])
    ax.set_xlabel("MODERATION_MAX_BATCH (posts per model call)")
    ax.set_ylabel("sustained posts/s (consumed → decided)")
    top = max([r for _, r in points] + [naive.posts_per_s])
    ax.set_ylim(0, top * 1.18 if top == top and top > 0 else 1)  # room for the labels (NaN-safe)
    ax.set_xlim(min(b for b, _ in points) / 1.5, max(b for b, _ in points) * 1.5)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"  # NaN-safe


def markdown(result: dict[str, Any], plot_link: str, json_link: str) -> str:
    env = result["machine"]
    tput = {t["worker"]: t for t in result["throughput"]}
    lat = {x["worker"]: x for x in result["latency"]}
    ship, naive = tput[SHIPPED], tput[NAIVE]
    lines = [
        "# Benchmarks",
        "",
        "## End to end through Kafka: the shipped worker vs a naive worker",
        "",
        f"Measured {env['when']} (commit `{env['git_commit']}`) with:",
        "",
        "```",
        result["command"],
        "```",
        "",
        "| worker | sustained posts/s | p50 latency | p99 latency | decided (throughput run) | decided (latency run) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, desc in (
        (SHIPPED, f"shipped (`moderation worker`, max_batch {ship['max_batch']})"),
        (NAIVE, "naive (aiokafka, one post per inference, commit per message)"),
    ):
        t, la = tput[kind], lat[kind]
        lines.append(
            f"| {desc} | {_fmt(t['posts_per_s'])} | {_fmt(la['p50_ms'])} ms | {_fmt(la['p99_ms'])} ms "
            f"| {t['decided']}/{t['posts']} | {la['decided']}/{la['posts']} |"
        )
    lines += [
        "",
        f"**The shipped worker sustains {result['ratio']:.1f}× the naive worker's throughput** "
        f"({_fmt(ship['posts_per_s'])} vs {_fmt(naive['posts_per_s'])} posts/s, same run, same posts, same model).",
        f"Latency (produce → decision received) is measured at {result['latency_rate']:g} posts/s for both, half "
        "the slower worker's throughput, so neither is saturated.",
        "",
        engine_line(result),
        "",
        *free_section(result),
        "### Throughput vs batch size (shipped worker)",
        "",
        f"![throughput vs max_batch]({plot_link})",
        "",
        "| MODERATION_MAX_BATCH | sustained posts/s | × naive |",
        "|---:|---:|---:|",
    ]
    for t in sorted(result["sweep"], key=lambda t: t["max_batch"]):
        lines.append(
            f"| {t['max_batch']} | {_fmt(t['posts_per_s'])} | {t['posts_per_s'] / naive['posts_per_s']:.1f}× |"
        )
    profile = result["posts_profile"]
    lines += [
        "",
        "### How it was measured",
        "",
        f"- Posts: {profile['posts']} synthetic social-media posts from the model's vocabulary, pairwise distinct "
        f"after normalisation (the dedupe cache never hits); tokens p50 {profile['tokens_p50']}, p90 "
        f"{profile['tokens_p90']}, max {profile['tokens_max']}; share per length bucket {profile['bucket_share']}.",
        f"- Throughput: a fresh {result['partitions']}-partition topic pre-filled with {ship['posts']} posts, then "
        "one worker process started on it; posts decided after the first decision ÷ seconds from the first to "
        "the last decision record (Kafka record timestamps), so start-up is excluded. Every post must be decided.",
        "- Latency: a fresh worker fed at a steady rate; produce → decision record consumed by the benchmark, "
        "first second of traffic excluded as warm-up.",
        "- Shipped worker: default settings (micro-batches of up to max_batch posts or 50 ms, inference in a "
        "thread, outputs pipelined, offsets committed after the outputs are acknowledged); it writes 2–3 records "
        "per post (decision, action topic, LLM review). Naive worker (`moderation/devtools/bench/naive.py`): one "
        "`engine.score([text])` per post, the same policy, `send_and_wait` of one decision record (acks=all), "
        "commit per message. Same model file, variant and ONNX Runtime settings.",
        "- Broker, worker and benchmark client share the machine's cores.",
        "",
        "### Machine",
        "",
        f"- CPU: {env['cpu']}, {env['cpu_count']} logical CPUs, {env['memory_gib']} GiB RAM; {env['os']}",
        f"- Python {env['python']}, onnxruntime {env['onnxruntime']} on {env['provider']}",
        f"- Model: {env['model']}",
        f"- {env['kafka']}",
        f"- Load average before the run: {env['load_avg_before']}",
        "",
        f"Raw numbers: `{json_link}`, written by each run (git-ignored).",
        "",
    ]
    return "\n".join(lines)


def free_section(result: dict[str, Any]) -> list[str]:
    """The worker's ceiling without the model (what a GPU worker is limited by), next to the real model's."""
    free = result.get("free") or []
    if not free:
        return []
    ship = {t["worker"]: t for t in result["throughput"]}[SHIPPED]
    one = next(t for t in free if t["processes"] == 1)
    lines = [
        "### The hot path without the model",
        "",
        "The same worker (decode, dedupe, policy, emit, produce, commits, through the same broker) with a "
        "scorer that returns fixed scores at no cost (`moderation/devtools/bench/free.py`, selectable only by "
        f"a benchmark), {one['posts']} posts per run, max_batch {one['max_batch']}: what limits a worker "
        "whose model is fast, as on a GPU.",
        "",
        "| worker | processes | sustained posts/s | decided |",
        "|---|---:|---:|---:|",
    ]
    for t in free:
        lines.append(f"| free scorer | {t['processes']} | {_fmt(t['posts_per_s'])} | {t['decided']}/{t['posts']} |")
    lines += [
        f"| real model (int8, CPU) | 1 | {_fmt(ship['posts_per_s'])} | {ship['decided']}/{ship['posts']} |",
        "",
        "All processes, the broker and the benchmark share the machine's cores, so on this 2-core machine a "
        "second process competes with the first for CPU; `moderation bench hotpath` measures more "
        "combinations and compares against another checkout in the same run.",
        "",
    ]
    return lines


def engine_line(result: dict[str, Any]) -> str:
    """How close each worker gets to the engine's own speed (the ceiling no worker can pass)."""
    alone = result["engine_alone"]
    tput = {t["worker"]: t for t in result["throughput"]}
    batch = tput[SHIPPED]["max_batch"]
    one, many = alone["batch_1_posts_per_s"], alone[f"batch_{batch}_posts_per_s"]
    return (
        f"For scale, the engine alone (tokenize + ONNX Runtime, no Kafka) on the same posts in the same run: "
        f"{_fmt(one)} posts/s one post per call, {_fmt(many)} posts/s {batch} per call "
        f"({many / one:.1f}× from batching on this machine). The shipped worker reaches "
        f"{tput[SHIPPED]['posts_per_s'] / many:.0%} of the batched engine; the naive worker "
        f"{tput[NAIVE]['posts_per_s'] / one:.0%} of the one-at-a-time engine."
    )


def print_tables(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="End to end through Kafka: shipped vs naive worker")
    for col in ("worker", "posts/s", "p50 ms", "p99 ms", "decided"):
        table.add_column(col, justify="left" if col == "worker" else "right")
    lat = {x["worker"]: x for x in result["latency"]}
    for t in result["throughput"]:
        la = lat[t["worker"]]
        name = f"{t['worker']} (max_batch {t['max_batch']})" if t["max_batch"] else t["worker"]
        table.add_row(
            name, _fmt(t["posts_per_s"]), _fmt(la["p50_ms"]), _fmt(la["p99_ms"]), f"{t['decided']}/{t['posts']}"
        )
    console.print(table)
    console.print(
        f"shipped / naive throughput: [bold]{result['ratio']:.1f}×[/]  "
        f"(latency at {result['latency_rate']:g} posts/s for both)"
    )
    console.print(engine_line(result))
    for t in result.get("free") or []:
        console.print(f"free scorer, {t['processes']} process(es): {_fmt(t['posts_per_s'])} posts/s")
    sweep = Table(title="Shipped worker: throughput vs MODERATION_MAX_BATCH")
    sweep.add_column("max_batch", justify="right")
    sweep.add_column("posts/s", justify="right")
    for t in sorted(result["sweep"], key=lambda t: t["max_batch"]):
        sweep.add_row(str(t["max_batch"]), _fmt(t["posts_per_s"]))
    console.print(sweep)


# --- entry point -----------------------------------------------------------------------------------------


def _command(args: argparse.Namespace) -> str:
    parts = ["moderation bench pipeline"]
    if getattr(args, "quick", False):
        parts.append("--quick")
    for flag, attr in (("--posts", "posts"), ("--seconds", "seconds"), ("--batch-sizes", "batch_sizes")):
        value = getattr(args, attr, None)
        if value is not None:
            parts.append(f"{flag} {value}")
    parts.append(f"--out {args.out or 'BENCHMARKS.md'}")
    return " ".join(parts)


async def measure_all(
    bench: Bench, n: int, seconds: float, batches: Sequence[int], default_batch: int, n_free: int
) -> dict[str, Any]:
    # the ceiling without the model first: one process, then two sharing the topic (one group)
    free = [await bench.throughput(FREE, FREE_BATCH, n_free, processes=p) for p in (1, 2)]
    shipped = await bench.throughput(SHIPPED, default_batch, n)
    naive = await bench.throughput(NAIVE, None, n)
    rate = max(1.0, round(0.5 * min(shipped.posts_per_s, naive.posts_per_s), 1))
    lat_shipped = await bench.latency(SHIPPED, default_batch, rate, seconds)
    lat_naive = await bench.latency(NAIVE, None, rate, seconds)
    sweep = [shipped if b == default_batch else await bench.throughput(SHIPPED, b, n) for b in batches]
    return {
        "throughput": [asdict(shipped), asdict(naive)],
        "latency": [asdict(lat_shipped), asdict(lat_naive)],
        "latency_rate": rate,
        "ratio": shipped.posts_per_s / naive.posts_per_s,
        "sweep": [asdict(t) for t in sweep],
        "free": [asdict(t) for t in free],
    }


@contextlib.contextmanager
def bench_session(
    settings: Settings, console: Console, texts: Sequence[str], extra_env: Mapping[str, str] | None = None
) -> Iterator[Bench]:
    """A benchmark run's broker (reused, or started and stopped), scratch directory and progress display;
    the topics it created are deleted at the end (best effort)."""
    with (
        kafka_broker(settings, console) as bootstrap,
        tempfile.TemporaryDirectory(prefix="moderation-bench-") as tmp,
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress,
    ):
        bench = Bench(settings, bootstrap, Path(tmp), texts, progress, extra_env=extra_env)
        try:
            yield bench
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(bench.delete_topics())


KEEP_MARKER = "<!-- sections below are measured by other commands; `make bench` keeps them -->"


def kept_sections(out: Path) -> str:
    """The part of an existing BENCHMARKS.md from KEEP_MARKER on (engine and load-test results), if any."""
    if not out.is_file():
        return ""
    text = out.read_text(encoding="utf-8")
    at = text.find(KEEP_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def run(args: argparse.Namespace) -> int:
    quick = bool(getattr(args, "quick", False))
    n = int(getattr(args, "posts", None) or (QUICK_POSTS if quick else DEFAULT_POSTS))
    seconds = float(args.seconds or (QUICK_SECONDS if quick else DEFAULT_SECONDS))
    batches = (
        tuple(int(b) for b in args.batch_sizes.split(",") if b.strip())
        if args.batch_sizes
        else (QUICK_BATCHES if quick else DEFAULT_BATCHES)
    )
    if n < 10 or seconds <= 0 or not batches or min(batches) < 1:
        raise ConfigError("need --posts ≥ 10, --seconds > 0 and batch sizes ≥ 1")
    out = Path(args.out or "BENCHMARKS.md")
    results_dir = out.parent / "bench-results"
    console = Console()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # leader-election retries on fresh topics are noise
    settings = load_settings()
    default_batch = settings.max_batch
    if default_batch not in batches:
        batches = tuple(sorted({*batches, default_batch}))

    engine = OnnxEngine.from_settings(settings)
    env = machine(settings, engine)
    tokenizer = engine.tokenizer
    texts = distinct_posts(tokenizer, max(n, 4 * n // 3, 400, QUICK_FREE_POSTS if quick else DEFAULT_FREE_POSTS))
    with console.status("the engine alone on the same posts (no Kafka) …"):
        ceiling = engine_ceiling(engine, texts[:n], default_batch, seconds=1.0 if quick else 4.0)
    del engine
    if env["load_avg_before"] > 0.5 * (os.cpu_count() or 1):
        console.print(
            f"[yellow]warning: load average {env['load_avg_before']} before the run: something else uses the "
            "CPU, so both workers are understated[/]"
        )
    console.print(
        f"[bold]moderation bench pipeline[/]: {n} posts per throughput run, latency runs of {seconds:g}s, "
        f"max_batch sweep {list(batches)}; model {env['model']} on {env['provider']}"
    )
    with bench_session(settings, console, texts) as bench:
        n_free = QUICK_FREE_POSTS if quick else DEFAULT_FREE_POSTS
        measured = asyncio.run(measure_all(bench, n, seconds, batches, default_batch, n_free))
    result: dict[str, Any] = {
        "command": _command(args),
        "machine": env,
        "posts_per_run": n,
        "partitions": settings.topic_partitions,
        "latency_seconds": seconds,
        "posts_profile": length_profile(tokenizer, texts[:n]),
        "engine_alone": ceiling,
        **measured,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / JSON_NAME
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_path = results_dir / PLOT_NAME
    naive = Throughput(**measured["throughput"][1])
    plot(
        plot_path,
        [Throughput(**t) for t in measured["sweep"]],
        naive,
        default_batch,
        f"{env['model']} · {env['cpu_count']} CPUs · {env['provider']} · {n} posts per point",
    )
    out.write_text(
        markdown(result, os.path.relpath(plot_path, out.parent), os.path.relpath(json_path, out.parent))
        + kept_sections(out),
        encoding="utf-8",
    )
    print_tables(console, result)
    console.print(f"wrote {out}, {plot_path} and {json_path}")
    return 0
