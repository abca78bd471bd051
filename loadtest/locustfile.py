"""Locust load test: users produce posts to Kafka, a listener turns the worker's decisions into requests.

Each Locust user is a producer posting at a constant rate (``--post-rate`` posts/s shared by all
users). A listener greenlet reads ``moderation.decisions`` (and the DLQ) and, for every post this
run produced, fires a Locust request event: request type ``kafka``, name = the decision's action
(``allow`` / ``review`` / ``block``, or ``dlq`` for malformed input), response time = produce →
decision seen by the listener. A post with no decision after ``--decision-timeout`` seconds, or one
the broker refused, is a failure — so the HTML report's percentiles are end-to-end moderation
latencies and its failures are posts the system lost or was too slow for.

Kafka client: confluent-kafka (librdkafka). Its calls used here never block (``produce``,
``consume(timeout=0)``, ``poll(0)``) and its network I/O runs in librdkafka's own native threads,
so it cooperates with Locust's gevent loop without monkey-patching concerns.

Run it with ``make loadtest`` (starts the broker and a worker; see ``moderation/devtools/loadtest.py``) or
by hand against a running deployment::

    MODERATION_BOOTSTRAP_SERVERS=127.0.0.1:9092 locust -f loadtest/locustfile.py --headless \\
        -u 14 -r 14 --run-time 60s --post-rate 14 --html report.html --csv report
"""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from locust import User, constant_throughput, events, task
from locust.env import Environment
from locust.runners import MasterRunner

from moderation.core.bootstrap import resolved
from moderation.core.errors import InputError
from moderation.core.settings import Settings
from moderation.devtools.bench.workload import DEMO_DATA_DIR, synthesize, vocabulary_words
from moderation.pipeline.decode import decode_post
from moderation.pipeline.tokenize import TextTokenizer

SAMPLE_FILE = DEMO_DATA_DIR / "sample_posts.jsonl"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("moderation load test")
    group.add_argument(
        "--post-rate",
        type=float,
        env_var="LOADTEST_RATE",
        default=14.0,
        help="Posts per second produced by all users together (14/s ≈ 50k posts/hour).",
    )
    group.add_argument(
        "--decision-timeout",
        type=float,
        env_var="LOADTEST_DECISION_TIMEOUT_S",
        default=30.0,
        help="Seconds a post may wait for its decision before it counts as a failure.",
    )
    group.add_argument(
        "--sample-share",
        type=float,
        env_var="LOADTEST_SAMPLE_SHARE",
        default=0.5,
        help="Share of posts drawn from the labelled demo sample (clean/toxic/spam/categories/uncertain); "
        "the rest are synthetic posts with a realistic length mix.",
    )
    group.add_argument(
        "--malformed-share",
        type=float,
        env_var="LOADTEST_MALFORMED_SHARE",
        default=0.02,
        help="Share of deliberately broken messages (bad JSON/UTF-8, missing text): expected in the DLQ.",
    )
    group.add_argument(
        "--drain-timeout",
        type=float,
        env_var="LOADTEST_DRAIN_TIMEOUT_S",
        default=None,
        help="After the run time, wait this long for outstanding decisions (default: the decision timeout).",
    )


# --- what the users post ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    post_id: str
    key: bytes
    value: bytes
    expect: str  # "decision" or "dlq"


class PostMix:
    """Realistic posts: labelled sample posts, synthetic posts of social-media length, some malformed ones.

    Every post gets a run-unique id (and Kafka key), so decisions of other runs or of other traffic on
    the same topics are never counted.
    """

    def __init__(self, settings: Settings, sample_share: float, malformed_share: float, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.counter = itertools.count()
        self.sample_share = sample_share
        self.malformed_share = malformed_share
        self.samples: list[dict[str, Any]] = []
        self.malformed: list[bytes] = [b"{not json", b"\xff\xfe not utf-8", b'{"text": ""}']
        for line in SAMPLE_FILE.read_bytes().splitlines():
            if not line.strip():
                continue
            try:  # judged by the worker's own decoder (every post is sent with a key): what it dead-letters
                decode_post(
                    line,
                    key=b"key",
                    max_message_bytes=settings.max_message_bytes,
                    max_text_chars=settings.max_text_chars,
                )
            except InputError:
                self.malformed.append(line)
                continue
            self.samples.append(json.loads(line))
        self.synthetic = self._synthetic(settings)

    @staticmethod
    def _synthetic(settings: Settings) -> list[str]:
        """Posts built from the served model's own vocabulary (same tokenizer paths as real traffic)."""
        tokenizer_path = Path(settings.model_dir) / "tokenizer.json"
        if not tokenizer_path.exists():
            return []
        tokenizer = TextTokenizer(tokenizer_path, 128, settings.bucket_lengths())
        return synthesize(vocabulary_words(tokenizer), 4000, seed=1)

    def next(self) -> Outgoing:
        n = next(self.counter)
        post_id = f"lt-{self.run_id}-{n:07d}"
        key = post_id.encode()
        r = self.rng.random()
        if r < self.malformed_share:
            return Outgoing(post_id, key, self.rng.choice(self.malformed), "dlq")
        if r < self.malformed_share + self.sample_share or not self.synthetic:
            doc = dict(self.rng.choice(self.samples))
            context = dict(doc.get("context") or {})  # keeps producer flags (high-stakes posts)
        else:
            doc = {"text": self.rng.choice(self.synthetic), "lang": "en"}
            context = {"sample_kind": "synthetic"}
        doc.update(
            id=post_id,
            author_id=doc.get("author_id") or f"u{self.rng.randrange(5000)}",
            created_at=time.time_ns() // 1_000_000,
            context={**context, "source": "locust"},
        )
        return Outgoing(post_id, key, json.dumps(doc).encode(), "decision")


# --- Kafka: one producer, one listener per Locust process -----------------------------------------------


class KafkaBridge:
    """Produces posts and matches decisions (and DLQ records) to them; fires Locust request events."""

    def __init__(self, environment: Environment, settings: Settings) -> None:
        opts = environment.parsed_options
        self.environment = environment
        self.settings = settings
        self.timeout_s = float(opts.decision_timeout if opts else 30.0)
        self.mix = PostMix(
            settings,
            sample_share=float(opts.sample_share if opts else 0.5),
            malformed_share=float(opts.malformed_share if opts else 0.02),
        )
        # post id → (perf_counter at produce, what is expected); insertion order = send order
        self.pending: dict[str, tuple[float, str]] = {}
        self.produced = 0
        self.producer = Producer(
            {"bootstrap.servers": settings.bootstrap_servers, "acks": "all", "linger.ms": 5, "client.id": "locust"}
        )
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": f"locust-listener-{self.mix.run_id}",  # never commits; assign() below
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                "client.id": "locust-listener",
            }
        )
        self._assign_at_end([settings.decisions_topic, settings.dlq_topic])
        self.running = True
        self.listener = gevent.spawn(self._listen)

    def _assign_at_end(self, topics: list[str]) -> None:
        """Start reading at the current end of each topic: only decisions made from now on count."""
        assignment = []
        for topic in topics:
            meta = self.consumer.list_topics(topic, timeout=15).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise RuntimeError(
                    f"topic {topic!r} does not exist on {self.settings.bootstrap_servers}: start a worker first "
                    "(it creates its topics), or run `make loadtest`, which does"
                )
            for partition in meta.partitions:
                tp = TopicPartition(topic, partition)
                _, high = self.consumer.get_watermark_offsets(tp, timeout=15)
                assignment.append(TopicPartition(topic, partition, high))
        self.consumer.assign(assignment)

    # --- producing (called from user greenlets) ---

    def send(self) -> None:
        post = self.mix.next()
        self.pending[post.post_id] = (time.perf_counter(), post.expect)
        for attempt in range(50):
            try:
                self.producer.produce(
                    self.settings.input_topic,
                    post.value,
                    post.key,
                    on_delivery=lambda err, _msg, pid=post.post_id: self._delivered(pid, err),
                )
                self.produced += 1
                return
            except BufferError:  # librdkafka's local queue is full: let it drain
                self.producer.poll(0)
                gevent.sleep(0.01 * (attempt + 1))
            except KafkaException as exc:
                self._fail(post.post_id, "produce", exc)
                return
        self._fail(post.post_id, "produce", BufferError("producer queue stayed full"))

    def _delivered(self, post_id: str, err: Any) -> None:
        if err is not None:
            self._fail(post_id, "produce", KafkaException(err))

    # --- listening ---

    def _listen(self) -> None:
        while self.running:
            try:
                messages = self.consumer.consume(num_messages=1000, timeout=0)
            except KafkaException as exc:  # transient: report it and carry on
                events.request.fire(
                    request_type="kafka", name="consume", response_time=0, response_length=0, exception=exc
                )
                messages = []
            now = time.perf_counter()
            for message in messages:
                if message.error() is None:
                    self._match(message, now)
            self.producer.poll(0)  # delivery callbacks
            self._expire(now)
            gevent.sleep(0 if messages else 0.005)

    def _match(self, message: Any, now: float) -> None:
        if message.topic() == self.settings.dlq_topic:
            key = message.key()
            post_id = key.decode("utf-8", "replace") if key else ""
            name = "dlq"
        else:
            try:
                doc = json.loads(message.value())
            except ValueError:
                return
            post_id = doc.get("post_id", "") if isinstance(doc, dict) else ""
            name = str(doc.get("action", "decision"))
        entry = self.pending.pop(post_id, None)
        if entry is None:  # other traffic, or a redelivery (at-least-once) of a post already counted
            return
        started, expect = entry
        exception = None
        if (name == "dlq") != (expect == "dlq"):
            exception = AssertionError(f"expected {expect}, got {name}")
        events.request.fire(
            request_type="kafka",
            name=name,
            response_time=(now - started) * 1000,
            response_length=len(message.value() or b""),
            exception=exception,
            context={"post_id": post_id},
        )

    def _expire(self, now: float) -> None:
        while self.pending:
            post_id, (started, expect) = next(iter(self.pending.items()))
            if now - started < self.timeout_s:
                return
            del self.pending[post_id]
            self._missing(post_id, started, expect, now, f"within {self.timeout_s:g}s")

    @staticmethod
    def _missing(post_id: str, started: float, expect: str, now: float, when: str) -> None:
        """A post whose decision (or DLQ record) never came: a Locust failure, never silently dropped."""
        events.request.fire(
            request_type="kafka",
            name="decision" if expect == "decision" else "dlq",
            response_time=(now - started) * 1000,
            response_length=0,
            exception=TimeoutError(f"no {expect} record {when}"),
            context={"post_id": post_id},
        )

    def _fail(self, post_id: str, name: str, exc: BaseException) -> None:
        entry = self.pending.pop(post_id, None)
        started = entry[0] if entry else time.perf_counter()
        events.request.fire(
            request_type="kafka",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=exc,
        )

    def drain(self, timeout_s: float) -> None:
        """After the users stopped: let outstanding posts get their decision (or time out)."""
        deadline = time.perf_counter() + timeout_s
        while (self.pending or len(self.producer)) and time.perf_counter() < deadline:
            gevent.sleep(0.05)
        if self.pending:  # still missing at the end of the drain window: failures, never silently dropped
            now = time.perf_counter()
            for post_id, (started, expect) in list(self.pending.items()):
                del self.pending[post_id]
                self._missing(post_id, started, expect, now, "by the end of the run")

    def close(self) -> None:
        self.running = False
        self.listener.join(timeout=2)
        self.producer.flush(5)
        self.consumer.close()


BRIDGE: KafkaBridge | None = None


def bridge() -> KafkaBridge:
    if BRIDGE is None:
        raise RuntimeError("the Kafka bridge is not started (Locust's init event did not run)")
    return BRIDGE


@events.init.add_listener
def _start_bridge(environment: Environment, **_: Any) -> None:
    global BRIDGE
    if isinstance(environment.runner, MasterRunner):
        return  # distributed runs: every worker process has its own producer and listener
    settings, where = resolved(Settings())  # `make loadtest` names its broker; run alone: the local one
    print(f"kafka: {where.describe()}", flush=True)
    BRIDGE = KafkaBridge(environment, settings)


@events.test_stop.add_listener
def _drain(environment: Environment, **_: Any) -> None:
    if BRIDGE is None:
        return
    opts = environment.parsed_options
    drain_s = opts.drain_timeout if opts and opts.drain_timeout is not None else BRIDGE.timeout_s
    BRIDGE.drain(float(drain_s))
    gevent.sleep(1.5)  # Locust's CSV writer snapshots once a second: let it see the last events


@events.quitting.add_listener
def _close(environment: Environment, **_: Any) -> None:
    if BRIDGE is not None:
        BRIDGE.close()


class PostProducer(User):
    """A source of posts; all users together produce ``--post-rate`` posts per second."""

    def wait_time(self) -> float:
        opts = self.environment.parsed_options
        rate = float(opts.post_rate) if opts else 14.0
        users = max(1, int(getattr(opts, "num_users", 1) or 1))
        return constant_throughput(rate / users)(self)

    @task
    def post(self) -> None:
        bridge().send()
