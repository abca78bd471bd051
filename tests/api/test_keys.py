"""API keys from env and file (a Secret mount), per-key token buckets and daily quotas (moderation.api.keys)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from moderation.api.errors import ApiError
from moderation.api.keys import Defaults, KeyRing, Limiter, Principal, check
from moderation.core.errors import ConfigError

DEFAULTS = Defaults(rate_per_s=10.0, burst=3, daily_quota=0)


def ring(pairs: str = "", file: Path | None = None, require: bool = True) -> KeyRing:
    return KeyRing(pairs, file, DEFAULTS, require=require)


def test_keys_from_env_and_file_with_their_own_limits(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    file.write_text("keys:\n  - {name: web, key: web-key-0001, rate_per_s: 200, burst: 400, daily_quota: 5}\n")
    keys = ring("batch:batch-key-0002", file)
    assert keys.principal("web-key-0001") == Principal("web", 200.0, 400, 5)
    assert keys.principal("batch-key-0002") == Principal("batch", 10.0, 3, 0)  # the defaults
    assert "web-key-0001" not in repr(keys.keys)  # only digests are held


def test_missing_and_wrong_keys_get_googles_errors() -> None:
    keys = ring("web:web-key-0001")
    with pytest.raises(ApiError) as missing:
        keys.principal(None)
    assert (missing.value.http, missing.value.status) == (403, "PERMISSION_DENIED")
    with pytest.raises(ApiError) as wrong:
        keys.principal("web-key-0002")
    body = wrong.value.body()["error"]
    assert (body["code"], body["status"], body["message"]) == (
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
    )
    assert body["details"][0]["reason"] == "API_KEY_INVALID"
    open_ring = ring(require=False)
    assert open_ring.principal(None).name == "anonymous"


@pytest.mark.parametrize(
    ("pairs", "content", "message"),
    [
        ("", None, "no API keys"),
        ("web", None, "expected name:key"),
        ("web:short", None, "at least 8 characters"),
        ("a:key-00000001,a:key-00000002", None, "used twice"),
        ("a:key-00000001,b:key-00000001", None, "the same key as 'a'"),
        ("", "keys: [{name: w, key: key-00000001, rate: 5}]", "unknown fields ['rate']"),
        ("", "keys: [{name: w, key: key-00000001, burst: 0}]", "burst must be a whole number"),
        ("", "keys: [{name: w, key: key-00000001, rate_per_s: -1}]", "rate_per_s must be a number"),
        ("", "keys: {w: key-00000001}", "expected {keys:"),
        ("", "keys: [\n  - {", "not valid YAML"),
    ],
)
def test_bad_key_configuration_is_one_clear_error(
    tmp_path: Path, pairs: str, content: str | None, message: str
) -> None:
    file = None
    if content is not None:
        file = tmp_path / "keys.yaml"
        file.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{")) as info:
        ring(pairs, file)
    assert "key-00000001" not in str(info.value)  # the message never repeats a key


def test_a_changed_key_file_is_reloaded_and_a_bad_one_keeps_the_old_keys(tmp_path: Path) -> None:
    file = tmp_path / "keys.json"
    file.write_text(json.dumps([{"name": "web", "key": "web-key-0001"}]))
    keys = ring(file=file)
    assert keys.reload_if_changed() == (False, None)
    file.write_text(json.dumps([{"name": "web", "key": "web-key-0002"}]))
    os.utime(file, (1, 1))
    assert keys.reload_if_changed() == (True, None)
    assert keys.principal("web-key-0002").name == "web"
    file.write_text("[{]")
    os.utime(file, (2, 2))
    changed, error = keys.reload_if_changed()
    assert not changed and error is not None and "not valid YAML" in error
    assert keys.principal("web-key-0002").name == "web"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate_with_retry_after() -> None:
    clock, wall = Clock(), Clock()
    limiter = Limiter(clock, wall)
    who = Principal("web", rate_per_s=2.0, burst=3, daily_quota=0)
    for _ in range(3):
        limiter.admit(who)
    with pytest.raises(ApiError) as info:
        limiter.admit(who)
    exc = info.value
    assert (exc.http, exc.status, exc.headers, exc.reason) == (
        429,
        "RESOURCE_EXHAUSTED",
        {"Retry-After": "1"},
        "rate_limited",
    )
    assert "Quota exceeded" in exc.message and "web" in exc.message
    assert exc.body()["error"]["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"
    clock.now += 0.5  # one token back at 2/s
    limiter.admit(who)
    with pytest.raises(ApiError):
        limiter.admit(who)
    other = Principal("batch", 2.0, 1, 0)
    limiter.admit(other)  # buckets are per key


def test_daily_quota_resets_at_utc_midnight() -> None:
    clock, wall = Clock(), Clock()
    wall.now = 86400 * 100 + 86000.0  # 400 s before midnight
    limiter = Limiter(clock, wall)
    who = Principal("web", rate_per_s=1000.0, burst=1000, daily_quota=2)
    limiter.admit(who)
    limiter.admit(who)
    with pytest.raises(ApiError) as info:
        limiter.admit(who)
    assert info.value.reason == "quota_exhausted" and info.value.headers == {"Retry-After": "400"}
    wall.now += 401
    limiter.admit(who)


def test_check_admits_a_known_key_and_counts_it() -> None:
    keys = ring("web:web-key-0001")
    limiter = Limiter(Clock(), Clock())
    assert check(keys, limiter, "web-key-0001").name == "web"
