"""Error answers in the shape Google's APIs (and so Perspective) give them.

``{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT", "details": [...]}}`` — the body
``googleapiclient.errors.HttpError`` and Perspective's other clients parse. Perspective puts its own
reason in ``details`` as ``{"@type": "type.googleapis.com/google.commentanalyzer.v1alpha1.Error",
"errorType": ...}`` (seen: ``COMMENT_EMPTY``, ``LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE``); key and quota
errors carry a ``google.rpc.ErrorInfo`` with ``reason`` (``API_KEY_INVALID``, ``RATE_LIMIT_EXCEEDED``).
The README's table lists every answer this server gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ANALYZER_ERROR_TYPE = "type.googleapis.com/google.commentanalyzer.v1alpha1.Error"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
MODERATION_ERROR_TYPE = "type.googleapis.com/moderation.v1.Error"
DOMAIN = "moderation-workers"


@dataclass(frozen=True)
class ApiError(Exception):
    """One error answer: HTTP status, Google status name, message, details and extra headers."""

    http: int
    status: str
    message: str
    details: tuple[dict[str, Any], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # what the metrics and logs call it (rejects by reason); never post text

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.http, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = list(self.details)
        return {"error": error}


def invalid(message: str, error_type: str = "", **extra: Any) -> ApiError:
    """400 INVALID_ARGUMENT with Perspective's error detail when ``error_type`` is given."""
    details = ({"@type": ANALYZER_ERROR_TYPE, "errorType": error_type, **extra},) if error_type else ()
    return ApiError(400, "INVALID_ARGUMENT", message, details, reason=(error_type or "invalid_argument").lower())


def invalid_post(message: str, error_class: str) -> ApiError:
    """400 for a /v1/moderate post the decoder refused: the DLQ's error class in the detail."""
    return ApiError(
        400,
        "INVALID_ARGUMENT",
        message,
        ({"@type": MODERATION_ERROR_TYPE, "errorClass": error_class},),
        reason=error_class,
    )


def _info(reason: str, **metadata: str) -> dict[str, Any]:
    return {"@type": ERROR_INFO_TYPE, "reason": reason, "domain": DOMAIN, "metadata": metadata}


def missing_key() -> ApiError:
    return ApiError(
        403,
        "PERMISSION_DENIED",
        "The request is missing a valid API key (pass it as ?key=KEY or the X-Goog-Api-Key header).",
        (_info("API_KEY_MISSING"),),
        reason="missing_key",
    )


def invalid_key() -> ApiError:
    return ApiError(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        (_info("API_KEY_INVALID"),),
        reason="invalid_key",
    )


def rate_limited(key_name: str, limit: str, value: str, retry_after_s: int, reason: str) -> ApiError:
    """429 RESOURCE_EXHAUSTED, worded like Google's quota errors, with Retry-After."""
    return ApiError(
        429,
        "RESOURCE_EXHAUSTED",
        f"Quota exceeded for quota metric 'Analysis requests' and limit '{limit}' of this server "
        f"for key '{key_name}' ({value}). Retry after {retry_after_s} s.",
        (_info("RATE_LIMIT_EXCEEDED", quota_limit=limit, quota_limit_value=value, key=key_name),),
        {"Retry-After": str(retry_after_s)},
        reason=reason,
    )


def unavailable(message: str, retry_after_s: int, reason: str) -> ApiError:
    """503 UNAVAILABLE with Retry-After: the server cannot take the request now (full queue, not ready)."""
    return ApiError(503, "UNAVAILABLE", message, (), {"Retry-After": str(retry_after_s)}, reason=reason)


def not_found(path: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"Method not found: {path[:200]}", reason="not_found")


def method_not_allowed(method: str, path: str, allowed: str) -> ApiError:
    return ApiError(
        405,
        "UNIMPLEMENTED",
        f"HTTP method {method[:20]} is not supported by {path[:200]}; use {allowed}.",
        headers={"Allow": allowed},
        reason="method_not_allowed",
    )


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "INVALID_ARGUMENT", f"Request payload size exceeds the limit: {limit} bytes.", reason="payload_too_large"
    )


def internal() -> ApiError:
    return ApiError(500, "INTERNAL", "Internal error encountered.", reason="internal")
