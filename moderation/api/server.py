"""The scoring API's HTTP surface (aiohttp): routes, keys and limits, error bodies, metrics.

| route | |
|---|---|
| ``POST /v1alpha1/comments:analyze`` | Perspective's AnalyzeComment (:mod:`moderation.api.perspective`) |
| ``POST /v1/moderate`` | a post as on the posts topic → the decision record the stream worker writes |
| ``POST /v1alpha1/comments:suggestscore`` | 501: not supported |
| ``GET /$discovery/rest?version=v1alpha1`` | the discovery document Google's clients build from |

Every answer that is not a 200 is a Google-style error body (:mod:`moderation.api.errors`); input never
causes a 500. No post text reaches the logs: request lines carry the endpoint, status, key name and time.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from moderation.api import errors
from moderation.api.audit import AuditWriter
from moderation.api.batcher import Batcher, Overloaded, ScoringFailed
from moderation.api.discovery import API_VERSION, discovery_document
from moderation.api.errors import ApiError
from moderation.api.keys import KeyRing, Limiter, check
from moderation.api.metrics import ApiMetrics
from moderation.api.perspective import Attribute, analyze_response, parse_analyze
from moderation.core.errors import InvalidJSON
from moderation.core.settings import Settings
from moderation.pipeline.batch import Message, Moderated, Rejected, now_ms
from moderation.pipeline.decode import decode_post
from moderation.pipeline.emit import decision_document
from moderation.pipeline.policy import PolicyStore
from moderation.pipeline.records import Origin

ANALYZE_PATH = f"/{API_VERSION}/comments:analyze"
SUGGEST_PATH = f"/{API_VERSION}/comments:suggestscore"
MODERATE_PATH = "/v1/moderate"
DISCOVERY_PATHS = ("/$discovery/rest", f"/discovery/v1/apis/commentanalyzer/{API_VERSION}/rest")
API_ORIGIN = Origin("api", 0, 0)  # until stored: then the api-posts record (moderation.api.audit)
BODY_HEADROOM = 65_536
JSON = "application/json; charset=UTF-8"


@dataclass
class Summary:
    """What one info ``summary`` line reports: requests by status and latency percentiles since the last."""

    codes: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, code: int, ms: float) -> None:
        self.codes[code] += 1
        if len(self.latencies_ms) < 100_000:
            self.latencies_ms.append(ms)

    def take(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

        out = {
            "requests": sum(self.codes.values()),
            "by_status": {str(k): v for k, v in sorted(self.codes.items())},
            "latency_ms_p50": pct(0.5),
            "latency_ms_p99": pct(0.99),
        }
        self.codes, self.latencies_ms = Counter(), []
        return out


@dataclass
class ApiService:
    """Everything the handlers use; built by :mod:`moderation.api.cli` (or a test) around a loaded pipeline."""

    settings: Settings
    batcher: Batcher
    keys: KeyRing
    policies: PolicyStore
    served: dict[str, Attribute]
    model: dict[str, Any]
    server_id: str
    metrics: ApiMetrics
    log: Any
    limiter: Limiter = field(default_factory=Limiter)
    audit: AuditWriter | None = None
    summary: Summary = field(default_factory=Summary)

    def store(self, item: Moderated, allowed: bool) -> bool:
        return self.audit is not None and allowed and self.audit.offer(item)


SERVICE: web.AppKey[ApiService] = web.AppKey("service", ApiService)
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def api_key(request: web.Request) -> str | None:
    """Perspective's ``key=`` parameter, Google's ``X-Goog-Api-Key`` header, or ``Authorization: Bearer``."""
    key = request.query.get("key") or request.headers.get("X-Goog-Api-Key")
    if not key:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key or None


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc), status=status, content_type="application/json", charset="utf-8", headers=headers
    )


def error_response(exc: ApiError) -> web.Response:
    return _json(exc.body(), exc.http, exc.headers)


def _endpoint(request: web.Request) -> str:
    name = (request.match_info.route.name or "").removesuffix("-v1")
    return name if name in ("analyze", "moderate", "suggestscore", "discovery") else "other"


@web.middleware
async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns every outcome into a Google-style answer, counts it and times it."""
    service = request.app[SERVICE]
    started = time.perf_counter()
    endpoint = _endpoint(request)
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ApiError as exc:
        if exc.reason in ("queue_full", "draining", "rate_limited", "quota_exhausted", "missing_key", "invalid_key"):
            service.metrics.rejected.labels(exc.reason).inc()
        response = error_response(exc)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        response = error_response(errors.method_not_allowed(request.method, request.path, allowed))
    except web.HTTPRequestEntityTooLarge:
        response = error_response(errors.too_large(request.app[MAX_BODY]))
    except web.HTTPNotFound:
        response = error_response(errors.not_found(request.path))
    except web.HTTPException as exc:  # what aiohttp raises itself, in the same error shape
        response = error_response(ApiError(exc.status, "INVALID_ARGUMENT", exc.reason, reason="http"))
    except ScoringFailed as exc:
        service.log.error("scoring_failed", error=str(exc)[:300])
        response = error_response(errors.internal())
    except Exception as exc:  # a bug: one line without the request's content, a generic 500
        service.log.error("request_failed", endpoint=endpoint, error_type=type(exc).__name__)
        response = error_response(errors.internal())
    seconds = time.perf_counter() - started
    service.metrics.requests.labels(endpoint, str(response.status)).inc()
    service.metrics.latency.labels(endpoint).observe(seconds)
    service.summary.add(response.status, seconds * 1000)
    if service.settings.log_level == "debug":
        service.log.debug("request", endpoint=endpoint, status=response.status, ms=round(seconds * 1000, 2))
    return response


async def _body(request: web.Request) -> bytes:
    raw = await request.read()  # aiohttp refuses a body over client_max_size (413)
    if not raw:
        raise errors.invalid("Invalid JSON payload received. The request has no body.", "INVALID_JSON")
    return raw


def _load_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.invalid(f"Invalid JSON payload received. {str(exc)[:200]}", "INVALID_JSON") from None


async def _decide(service: ApiService, message: Message) -> Moderated | Rejected:
    try:
        return await service.batcher.submit(message)
    except Overloaded as exc:
        reason = "draining" if service.batcher.closed else "queue_full"
        raise errors.unavailable(
            f"The service is overloaded: {exc}; retry after {service.settings.api_retry_after_s} s.",
            service.settings.api_retry_after_s,
            reason,
        ) from None


def _post_id() -> str:
    return f"api-{uuid.uuid4().hex}"


async def analyze(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    check(service.keys, service.limiter, api_key(request))
    doc = _load_json(await _body(request))
    rule = service.policies.policy.languages
    parsed = parse_analyze(doc, served=service.served, languages=rule, max_text_chars=service.settings.max_text_chars)
    post_id = _post_id()
    post: dict[str, Any] = {"id": post_id, "text": parsed.text}
    if parsed.lang is not None:
        post["lang"] = parsed.lang
    message = Message(orjson.dumps(post), API_ORIGIN, post_id.encode(), now_ms())
    outcome = await _decide(service, message)
    if isinstance(outcome, Rejected):
        code = outcome.error.code
        kind = {"empty_text": "COMMENT_EMPTY", "text_too_large": "COMMENT_TOO_LONG"}.get(code, "INVALID_VALUE")
        raise errors.invalid(outcome.error.message, kind)
    body = analyze_response(parsed, outcome.decision, service.served, service.policies.policy.languages)
    service.store(outcome, not parsed.do_not_store)
    return _json(body)


async def moderate(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    check(service.keys, service.limiter, api_key(request))
    raw = await _body(request)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # the decoder's own words for what is wrong (the DLQ's), e.g. "byte 0xc3 at offset 24"
            decode_post(raw, max_message_bytes=service.settings.max_message_bytes)
        except InvalidJSON as exc:
            raise errors.invalid_post(exc.message, exc.code) from None
        except Exception as exc:
            raise errors.invalid_post(str(exc), "invalid_json") from None
        raise errors.invalid_post("the body is not valid JSON", "invalid_json") from None
    if not isinstance(doc, dict):
        raise errors.invalid_post(f"expected a JSON object (a post), got {type(doc).__name__}", "invalid_schema")
    do_not_store = doc.get("doNotStore", False)
    if not isinstance(do_not_store, bool):
        raise errors.invalid_post("field 'doNotStore' must be true or false", "invalid_schema")
    if doc.get("id") is None:
        doc["id"] = _post_id()
        raw = orjson.dumps(doc)
    outcome = await _decide(service, Message(raw, API_ORIGIN, None, now_ms()))
    if isinstance(outcome, Rejected):
        raise errors.invalid_post(outcome.error.message, outcome.error.code)
    stored = service.store(outcome, not do_not_store)
    record = decision_document(outcome, service.model, service.server_id)
    return _json({**record, "origin": None, "stored": stored})


async def suggestscore(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    check(service.keys, service.limiter, api_key(request))
    raise ApiError(
        501,
        "UNIMPLEMENTED",
        "SuggestCommentScore is not supported by this server; reviewers' "
        "verdicts reach training through the review tier (moderation models feedback).",
        reason="unimplemented",
    )


async def discovery(request: web.Request) -> web.Response:
    version = request.query.get("version", API_VERSION if request.path != DISCOVERY_PATHS[0] else "")
    if version != API_VERSION:
        raise ApiError(
            404,
            "NOT_FOUND",
            f"Discovery document not found for API version {version[:40]!r}; this server has {API_VERSION}.",
            reason="not_found",
        )
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return _json(discovery_document(f"{scheme}://{host}/"))


def build_api_app(service: ApiService) -> web.Application:
    max_body = service.settings.max_message_bytes + BODY_HEADROOM
    app = web.Application(middlewares=[answer], client_max_size=max_body)
    app[SERVICE] = service
    app[MAX_BODY] = max_body
    app.router.add_post(ANALYZE_PATH, analyze, name="analyze")
    app.router.add_post(MODERATE_PATH, moderate, name="moderate")
    app.router.add_post(SUGGEST_PATH, suggestscore, name="suggestscore")
    app.router.add_get(DISCOVERY_PATHS[0], discovery, name="discovery")
    app.router.add_get(DISCOVERY_PATHS[1], discovery, name="discovery-v1")
    return app
