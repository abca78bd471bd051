"""The console's web app and process: routes, security middleware, the Kafka feed, start-up.

Start-up follows the worker's order (so Kubernetes probes mean the same): settings → probe/metrics
server on ``MODERATION_HTTP_PORT`` → topics ensured (broker retried with backoff) → the Kafka feed
catches up → ready; the UI itself is served on ``MODERATION_CONSOLE_PORT``. Exit codes as the worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import orjson
import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from moderation.core.errors import BrokerError, ModerationError
from moderation.core.process import EXIT_BROKER, EXIT_CONFIG, EXIT_FATAL, settings_for_process
from moderation.core.settings import Settings
from moderation.review import verdicts
from moderation.review.console import charts
from moderation.review.console.auth import CSRF_COOKIE, SESSION_COOKIE, Auth, Session, parse_users
from moderation.review.console.state import ConsoleState
from moderation.review.metrics import ConsoleMetrics
from moderation.worker import security
from moderation.worker.app import default_worker_id, ensure_topics
from moderation.worker.cli import retry_broker
from moderation.worker.http import build_http_app, start_http

log = structlog.get_logger("moderation.console")  # lazy: bound at first use, after configure_logging
TEMPLATES = Path(__file__).parent / "templates"
QUEUE_REFRESH_S = 10
PUBLIC = frozenset({"/login"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

STATE: web.AppKey[ConsoleState] = web.AppKey("state", ConsoleState)
AUTH: web.AppKey[Auth] = web.AppKey("auth", Auth)
METRICS: web.AppKey[ConsoleMetrics] = web.AppKey("metrics", ConsoleMetrics)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
PRODUCER: web.AppKey[Any] = web.AppKey("producer", object)
ENV: web.AppKey[jinja2.Environment] = web.AppKey("env", jinja2.Environment)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- security middleware -------------------------------------------------------------------------------
@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every request: a CSRF seed cookie, a session unless the path is public, a CSRF token on every POST."""
    auth, metrics = request.app[AUTH], request.app[METRICS]
    seed = request.cookies.get(CSRF_COOKIE)
    new_seed = None if seed else auth.new_csrf_seed()
    request["csrf_seed"] = seed or new_seed
    request["session"] = auth.session(request.cookies.get(SESSION_COOKIE))
    response: web.StreamResponse
    if request.path not in PUBLIC and request["session"] is None:
        metrics.refused.labels("anonymous").inc()
        if request.method == "GET":
            response = web.HTTPSeeOther("/login")
        else:
            response = web.Response(status=403, text="refused: log in first")
    elif request.method == "POST" and not auth.csrf_ok(seed, (await request.post()).get("csrf_token")):  # type: ignore[arg-type]
        metrics.refused.labels("csrf").inc()
        log.warning("csrf_refused", path=request.path, user=getattr(request["session"], "user", None))
        response = web.Response(status=403, text="refused: missing or invalid CSRF token; reload the page and retry")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
    response.headers.update(SECURITY_HEADERS)
    if new_seed:
        secure = request.app[SETTINGS].console_secure_cookies
        response.set_cookie(CSRF_COOKIE, new_seed, httponly=True, samesite="Strict", secure=secure, path="/")
    return response


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    state = request.app[STATE]
    session: Session | None = request["session"]
    html = request.app[ENV].get_template(template).render(
        user=session.user if session else None,
        csrf=request.app[AUTH].csrf_token(request["csrf_seed"]),
        depth=len(state.queue()),
        age=lambda item: _age(time.time() - item.queued_at),
        **context,
    )
    return web.Response(text=html, content_type="text/html", status=status)


# --- routes --------------------------------------------------------------------------------------------
async def login_page(request: web.Request) -> web.Response:
    if request["session"] is not None:
        raise web.HTTPSeeOther("/")
    return render(request, "login.html", title="Log in")


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    user, password = str(form.get("username", "")), str(form.get("password", ""))
    auth, metrics = request.app[AUTH], request.app[METRICS]
    if not auth.check_password(user, password):
        metrics.logins.labels("refused").inc()
        log.warning("login_refused", user=user[:64])
        return render(request, "login.html", status=401, title="Log in", error="Wrong name or password.")
    metrics.logins.labels("ok").inc()
    log.info("login", user=user)
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        SESSION_COOKIE,
        auth.new_session(user),
        httponly=True,
        samesite="Strict",
        secure=request.app[SETTINGS].console_secure_cookies,
        max_age=int(auth.session_s),
        path="/",
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def queue_page(request: web.Request) -> web.Response:
    decided = request.query.get("decided")
    flash, flash_error = None, False
    if decided:
        flash = f"Verdict recorded for post {decided}."
    if request.query.get("taken"):
        flash, flash_error = f"Post {request.query['taken']} was already decided by someone else.", True
    return render(
        request,
        "queue.html",
        title="Queue",
        nav="queue",
        items=request.app[STATE].queue()[:200],
        refresh=QUEUE_REFRESH_S,
        flash=flash,
        flash_error=flash_error,
    )


async def post_page(request: web.Request) -> web.Response:
    item = request.app[STATE].items.get(request.match_info["post_id"])
    if item is None:
        raise web.HTTPNotFound(text="no such post in review (it may have aged out of the console)")
    return render(
        request,
        "post.html",
        title="Decide",
        nav="queue",
        item=item,
        labels=verdicts.REVIEW_LABELS,
        categories=verdicts.CATEGORIES,
    )


async def decide(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    session: Session = request["session"]
    post_id, action = str(form.get("post_id", "")), str(form.get("action", ""))
    labels = [str(v) for v in form.getall("labels", [])]
    category = str(form.get("category", "")) or None
    state = request.app[STATE]
    item = state.items.get(post_id)
    if item is None:
        raise web.HTTPNotFound(text="no such post in review")
    if item.decided is not None:
        raise web.HTTPSeeOther(f"/?taken={post_id}")
    source = {"post_id": item.post_id, "post": item.post, **item.slm}
    try:
        record = verdicts.verdict(
            source, reviewer=f"human:{session.user}", action=action, labels=labels, category=category
        )
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"refused: {exc}") from None
    key, value, headers = verdicts.encode(record)
    try:
        await asyncio.wait_for(
            request.app[PRODUCER].send_and_wait(request.app[SETTINGS].verdicts_topic, value, key=key, headers=headers),
            30,
        )
    except Exception as exc:
        log.error("verdict_not_written", post_id=post_id, error=f"{type(exc).__name__}: {exc}")
        raise web.HTTPServiceUnavailable(
            text="the verdict could not be written to Kafka; nothing was recorded, try again"
        ) from None
    state.add_verdict(record)
    request.app[METRICS].verdicts.labels(action).inc()
    log.info("verdict", post_id=post_id, user=session.user, action=action, overrides=item.slm.get("action"))
    raise web.HTTPSeeOther(f"/?decided={post_id}")


async def overview(request: web.Request) -> web.Response:
    state = request.app[STATE]
    depth, oldest = state.sample()
    buckets = sorted(state.decisions)
    label = [datetime.fromtimestamp(b * state.bucket_s, tz=UTC).strftime("%H:%M") for b in buckets]
    series = {a: [float(state.decisions[b][a]) for b in buckets] for a in ("allow", "review", "block")}
    totals = [sum(state.decisions[b].values()) for b in buckets]
    rates = [state.escalated.get(b, 0) / t * 100 if t else 0.0 for b, t in zip(buckets, totals, strict=True)]
    samples = list(state.depth_samples)
    sample_labels = [datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M") for t, _, _ in samples]
    overturned = {
        kind: (tally["overturned"], tally["confirmed"]) for kind, tally in sorted(state.outcomes.items())
    }
    total = sum(totals)
    return render(
        request,
        "overview.html",
        title="Overview",
        nav="overview",
        refresh=30,
        oldest=_age(oldest) if depth else "—",
        escalation=f"{sum(state.escalated.values()) / total:.1%}" if total else "—",
        decided_total=total,
        since=label[0] if label else "—",
        bucket_min=int(state.bucket_s // 60),
        decisions_chart=charts.stacked_bars(label, series, "Decisions per action over time"),
        escalation_chart=charts.line(label, rates, "Escalation rate over time", unit="%"),
        depth_chart=charts.line(sample_labels, [float(d) for _, d, _ in samples], "Queue depth", width=320),
        age_chart=charts.line(sample_labels, [a / 60 for _, _, a in samples], "Oldest waiting", width=320),
        overturned_chart=charts.share_bars(overturned, "Share of SLM decisions overturned, by reviewer"),
    )


def build_app(
    settings: Settings, state: ConsoleState, auth: Auth, metrics: ConsoleMetrics, producer: Any
) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[STATE], app[AUTH], app[METRICS], app[SETTINGS], app[PRODUCER] = state, auth, metrics, settings, producer
    app[ENV] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.ChainableUndefined
    )
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", queue_page)
    app.router.add_get("/post/{post_id}", post_page)
    app.router.add_post("/decide", decide)
    app.router.add_get("/overview", overview)
    return app


# --- the Kafka feed ------------------------------------------------------------------------------------
class Feed:
    """Reads the review and verdicts topics from the beginning and the audit topic from the chart
    window on, into the state; ``caught_up`` once it reached the log ends it saw at start."""

    def __init__(self, settings: Settings, state: ConsoleState, metrics: ConsoleMetrics) -> None:
        self.settings, self.state, self.metrics = settings, state, metrics
        self.caught_up = False
        self.running = False
        self.fatal: str | None = None

    def ready(self) -> tuple[bool, dict[str, Any]]:
        ok = self.caught_up and self.running and self.fatal is None
        return ok, {"caught_up": self.caught_up, "queue_depth": len(self.state.queue()), "fatal": self.fatal}

    def live(self) -> tuple[bool, dict[str, Any]]:
        return self.fatal is None, {"status": "ok" if self.fatal is None else "failing", "fatal": self.fatal}

    def _consumer(self, *topics: str) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=s.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=s.isolation_level,
            metadata_max_age_ms=s.metadata_max_age_ms,
            **security.client_kwargs(s),
        )

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        review = self._consumer(s.review_topic, s.verdicts_topic)
        audit = self._consumer(s.decisions_topic)
        await review.start()
        await audit.start()
        self.running = True
        try:
            targets = await self._targets(review)
            await self._seek_window(audit)
            tasks = [
                asyncio.create_task(self._pump(review, stop, targets)),
                asyncio.create_task(self._pump(audit, stop)),
            ]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()
        finally:
            self.running = False
            for consumer in (review, audit):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 10)

    async def _assignment(self, consumer: AIOKafkaConsumer) -> set[TopicPartition]:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return set(consumer.assignment())

    async def _targets(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        return dict(await consumer.end_offsets(list(await self._assignment(consumer))))

    async def _seek_window(self, consumer: AIOKafkaConsumer) -> None:
        """The audit topic is large: start at the chart window, not at the beginning."""
        parts = await self._assignment(consumer)
        start_ms = int((time.time() - self.state.window_s) * 1000)
        found = await consumer.offsets_for_times({tp: start_ms for tp in parts})
        for tp, at in found.items():
            if at is not None:
                consumer.seek(tp, at.offset)
            else:
                await consumer.seek_to_end(tp)

    async def _pump(
        self, consumer: AIOKafkaConsumer, stop: asyncio.Event, targets: dict[TopicPartition, int] | None = None
    ) -> None:
        s = self.settings
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batch.items():
                for r in records:
                    try:
                        doc = orjson.loads(r.value or b"")
                    except orjson.JSONDecodeError:
                        log.warning("unreadable_record", topic=r.topic, partition=r.partition, offset=r.offset)
                        continue
                    if not isinstance(doc, dict):
                        continue
                    if tp.topic == s.review_topic:
                        self.state.add_review(doc)
                    elif tp.topic == s.verdicts_topic:
                        self.state.add_verdict(doc)
                    else:
                        self.state.add_decision(doc)
            if targets is not None and not self.caught_up:
                positions = {tp: await consumer.position(tp) for tp in targets}
                if all(positions[tp] >= end for tp, end in targets.items()):
                    self.caught_up = True
                    log.info("caught_up", queue_depth=len(self.state.queue()), posts=len(self.state.items))
            if targets is not None:
                depth, oldest = len(self.state.queue()), 0.0
                waiting = self.state.queue()
                if waiting:
                    oldest = time.time() - waiting[0].queued_at
                self.metrics.queue_depth.set(depth)
                self.metrics.oldest_age.set(oldest)


async def sample_depth(state: ConsoleState, stop: asyncio.Event, every_s: float = 30.0) -> None:
    """Queue depth and age for the overview's charts, sampled while the console runs."""
    while not stop.is_set():
        state.sample()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


# --- the process ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace | None = None) -> int:
    settings = settings_for_process("moderation.console", post_text_in_logs=False)
    if settings is None:
        return EXIT_CONFIG
    try:
        users = parse_users(settings.console_users.get_secret_value())
    except ModerationError as exc:
        log.critical("startup_failed", error=str(exc))
        return EXIT_CONFIG
    if not users:
        log.warning("no_reviewers", error="MODERATION_CONSOLE_USERS is empty: nobody can log in (no anonymous access)")
    return asyncio.run(serve(settings, Auth(users, settings.console_secret_key.get_secret_value(),
                                            settings.console_session_s)))


async def serve(settings: Settings, auth: Auth) -> int:
    bound = log.bind(worker_id=settings.worker_id or default_worker_id())
    state = ConsoleState(max_posts=settings.console_max_posts)
    metrics = ConsoleMetrics()
    feed, stop = Feed(settings, state, metrics), asyncio.Event()
    try:
        probes = await start_http(
            build_http_app(metrics, feed.ready, feed.live), settings.http_port, settings.http_host
        )
    except OSError as exc:
        bound.critical("startup_failed", error=f"cannot serve HTTP on {settings.http_host}:{settings.http_port} "
                       f"({exc.strerror or exc}); free the port or set MODERATION_HTTP_PORT")
        return EXIT_CONFIG
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True,
                                **security.client_kwargs(settings))
    ui: web.AppRunner | None = None
    code = 0
    try:
        topics = [settings.review_topic, settings.verdicts_topic, settings.decisions_topic]
        await retry_broker(lambda: ensure_topics(settings, topics), settings, bound)
        await producer.start()
        ui = await start_http(build_app(settings, state, auth, metrics, producer), settings.console_port,
                              settings.http_host)
        bound.info("console_started", url=f"http://{settings.http_host}:{settings.console_port}/",
                   reviewers=len(auth.users))
        feeding = asyncio.create_task(feed.run(stop))
        sampling = asyncio.create_task(sample_depth(state, stop))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([feeding, stopping], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        sampling.cancel()
        if feeding.done() and feeding.exception() is not None:
            raise feeding.exception()  # type: ignore[misc]
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(feeding, 15)
    except OSError as exc:
        bound.critical("startup_failed", error=f"cannot serve the console on port {settings.console_port} "
                       f"({exc.strerror or exc}); free it or set MODERATION_CONSOLE_PORT")
        code = EXIT_CONFIG
    except BrokerError as exc:
        bound.critical("startup_failed", error=str(exc))
        code = EXIT_BROKER
    except Exception as exc:
        feed.fatal = f"{type(exc).__name__}: {exc}"
        bound.critical("console_crashed", error=feed.fatal)
        code = EXIT_FATAL
    finally:
        if ui is not None:
            await ui.cleanup()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 10)
        await probes.cleanup()
    bound.info("stopped", exit_code=code)
    return code
