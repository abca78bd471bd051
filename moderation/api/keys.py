"""API keys and what each may do: a token bucket per key (rate + burst) and a quota per UTC day.

Keys come from ``MODERATION_API_KEYS`` (``name:key,…``) and/or ``MODERATION_API_KEYS_FILE`` (YAML or JSON,
a mounted Kubernetes Secret, re-read when it changes)::

    keys:
      - {name: web, key: "…", rate_per_s: 200, burst: 400, daily_quota: 5000000}
      - {name: batch-jobs, key: "…"}            # the MODERATION_API_RATE_PER_S / _BURST / _DAILY_QUOTA defaults

Only SHA-256 digests of the keys are held; a key is looked up by its digest, so the comparison leaks
nothing about the key's characters. Limits are counted per replica (N replicas allow N times the rate).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from moderation.api.errors import ApiError, invalid_key, missing_key, rate_limited
from moderation.core.errors import ConfigError
from moderation.core.settings import Settings

MIN_KEY_CHARS = 8
ANONYMOUS = "anonymous"
_FIELDS = {"name", "key", "rate_per_s", "burst", "daily_quota"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from (a key's name, never the key) and its limits."""

    name: str
    rate_per_s: float
    burst: int
    daily_quota: int  # 0: none


@dataclass(frozen=True, slots=True)
class Defaults:
    rate_per_s: float
    burst: int
    daily_quota: int


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _number(entry: dict[str, Any], field: str, default: float, where: str, *, whole: bool) -> Any:
    value = entry.get(field, default)
    ok = isinstance(value, int) if whole else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value < (0 if field == "daily_quota" else 1e-9):
        kind = "a whole number" if whole else "a number"
        bound = "≥ 0" if field == "daily_quota" else "> 0"
        raise ConfigError(f"{where}: {field} must be {kind} {bound}, got {value!r}")
    return value


def parse_entries(entries: Iterable[Any], defaults: Defaults, where: str) -> dict[str, Principal]:
    """digest → principal; a bad entry raises :class:`ConfigError` naming it (never the key itself)."""
    out: dict[str, Principal] = {}
    names: set[str] = set()
    for i, entry in enumerate(entries):
        at = f"{where} entry {i + 1}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a mapping with name and key")
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise ConfigError(f"{at}: unknown fields {unknown} (allowed: {sorted(_FIELDS)})")
        name, key = entry.get("name"), entry.get("key")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise ConfigError(f"{at}: name must be a non-empty string of at most 64 characters")
        if not isinstance(key, str) or len(key) < MIN_KEY_CHARS or key != key.strip():
            raise ConfigError(f"{at} ({name}): key must be a string of at least {MIN_KEY_CHARS} characters, no spaces")
        if name in names:
            raise ConfigError(f"{at}: the name {name!r} is used twice")
        hashed = digest(key)
        if hashed in out:
            raise ConfigError(f"{at} ({name}): the same key as {out[hashed].name!r}")
        names.add(name)
        out[hashed] = Principal(
            name=name,
            rate_per_s=float(_number(entry, "rate_per_s", defaults.rate_per_s, at, whole=False)),
            burst=int(_number(entry, "burst", defaults.burst, at, whole=True)),
            daily_quota=int(_number(entry, "daily_quota", defaults.daily_quota, at, whole=True)),
        )
    return out


def parse_pairs(text: str) -> list[dict[str, str]]:
    """``name:key,name2:key2`` → entries (MODERATION_API_KEYS)."""
    entries = []
    for i, pair in enumerate(p.strip() for p in text.split(",") if p.strip()):
        name, sep, key = pair.partition(":")
        if not sep:
            raise ConfigError(f"MODERATION_API_KEYS entry {i + 1}: expected name:key")
        entries.append({"name": name.strip(), "key": key.strip()})
    return entries


def read_file(path: Path) -> list[Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"MODERATION_API_KEYS_FILE={path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"MODERATION_API_KEYS_FILE={path}: not valid YAML/JSON ({type(exc).__name__})") from None
    if isinstance(doc, dict) and set(doc) == {"keys"}:
        doc = doc["keys"]
    if not isinstance(doc, list):
        raise ConfigError(f"MODERATION_API_KEYS_FILE={path}: expected {{keys: [{{name, key}}, …]}} or a list")
    return doc


class KeyRing:
    """The keys in force; :meth:`reload_if_changed` re-reads the file (a Secret update) and keeps the old keys
    when the new file is bad."""

    def __init__(self, env_pairs: str, file: Path | None, defaults: Defaults, *, require: bool) -> None:
        self.env_pairs, self.file, self.defaults, self.require = env_pairs, file, defaults, require
        self._stamp = self._file_stamp()
        self.keys = self._load()
        if require and not self.keys:
            raise ConfigError(
                "no API keys: set MODERATION_API_KEYS (name:key,…) or MODERATION_API_KEYS_FILE (a mounted "
                "Secret), or MODERATION_API_REQUIRE_KEY=false on a trusted network"
            )
        self.anonymous = Principal(ANONYMOUS, defaults.rate_per_s, defaults.burst, defaults.daily_quota)

    @classmethod
    def from_settings(cls, s: Settings) -> KeyRing:
        defaults = Defaults(s.api_rate_per_s, s.api_burst, s.api_daily_quota)
        return cls(s.api_keys.get_secret_value(), s.api_keys_file, defaults, require=s.api_require_key)

    def _file_stamp(self) -> tuple[float, int] | None:
        if self.file is None:
            return None
        try:
            st = self.file.stat()
        except OSError:
            return None
        return st.st_mtime, st.st_size

    def _load(self) -> dict[str, Principal]:
        entries: list[Any] = parse_pairs(self.env_pairs)
        if self.file is not None:
            entries += read_file(self.file)
        return parse_entries(entries, self.defaults, "API keys")

    def reload_if_changed(self) -> tuple[bool, str | None]:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False, None
        self._stamp = stamp
        try:
            keys = self._load()
        except ConfigError as exc:
            return False, str(exc)
        if self.require and not keys:
            return False, "the new keys file has no keys; the previous keys stay in force"
        self.keys = keys
        return True, None

    def principal(self, key: str | None) -> Principal:
        """Who sent a request with ``key`` (None: no key); a missing or unknown key raises the API error."""
        if not key:
            if self.require:
                raise missing_key()
            return self.anonymous
        found = self.keys.get(digest(key))
        if found is None:
            raise invalid_key()
        return found


class Limiter:
    """Token bucket and daily count per principal name (thread-safe; the clock is injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.clock, self.wall = clock, wall
        self._buckets: dict[str, tuple[float, float]] = {}  # name → (tokens, at)
        self._days: dict[str, tuple[int, int]] = {}  # name → (UTC day, requests that day)
        self._lock = threading.Lock()

    def admit(self, who: Principal) -> None:
        """Count one request of ``who`` or raise 429 (RESOURCE_EXHAUSTED, Retry-After)."""
        with self._lock:
            wall = self.wall()
            day = int(wall // 86400)
            seen_day, count = self._days.get(who.name, (day, 0))
            if seen_day != day:
                count = 0
            if who.daily_quota and count >= who.daily_quota:
                retry = max(1, math.ceil((day + 1) * 86400 - wall))
                raise rate_limited(who.name, "requests per UTC day", str(who.daily_quota), retry, "quota_exhausted")
            now = self.clock()
            tokens, at = self._buckets.get(who.name, (float(who.burst), now))
            tokens = min(float(who.burst), tokens + (now - at) * who.rate_per_s)
            if tokens < 1.0:
                self._buckets[who.name] = (tokens, now)
                retry = max(1, math.ceil((1.0 - tokens) / who.rate_per_s))
                raise rate_limited(
                    who.name, "requests per second", f"{who.rate_per_s:g}/s, burst {who.burst}", retry, "rate_limited"
                )
            self._buckets[who.name] = (tokens - 1.0, now)
            self._days[who.name] = (day, count + 1)


def check(ring: KeyRing, limiter: Limiter, key: str | None) -> Principal:
    """The request's principal, admitted; raises :class:`ApiError` (403, 400 or 429) otherwise."""
    who = ring.principal(key)
    limiter.admit(who)
    return who


__all__ = ["ApiError", "Defaults", "KeyRing", "Limiter", "Principal", "check"]
