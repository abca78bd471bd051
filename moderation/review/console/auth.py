"""Logins, sessions and CSRF tokens of the console — small, explicit and stateless.

- Users come from ``MODERATION_CONSOLE_USERS`` (``name:password,…``; in Kubernetes a Secret). Passwords
  are compared in constant time. An empty list means nobody can log in: there is no anonymous mode.
- A session is a signed cookie (``name|expiry|nonce`` + HMAC-SHA256 under ``console_secret_key``):
  replicas sharing the key share sessions, and nothing is stored server-side.
- CSRF: every form carries a token derived (HMAC) from a per-browser random cookie; a POST whose token
  does not match its cookie is refused. Cookies are ``HttpOnly`` and ``SameSite=Strict`` as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from moderation.core.errors import ConfigError

SESSION_COOKIE = "mc_session"
CSRF_COOKIE = "mc_csrf"
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def parse_users(spec: str) -> dict[str, str]:
    """``"alice:pw1,bob:pw2"`` → ``{"alice": "pw1", ...}``; a malformed entry is a configuration error."""
    users: dict[str, str] = {}
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        name, sep, password = entry.partition(":")
        if not sep or not name or not password:
            raise ConfigError(
                "MODERATION_CONSOLE_USERS: each entry must be name:password (comma separated); "
                f"entry {len(users) + 1} is not"
            )
        if set(name) - _NAME_OK:
            raise ConfigError(f"MODERATION_CONSOLE_USERS: user name {name!r} may use only letters, digits and ._-@")
        users[name] = password
    return users


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    nonce: str


class Auth:
    def __init__(self, users: dict[str, str], secret: str, session_s: float) -> None:
        self.users = users
        self.key = (secret or secrets.token_hex(32)).encode()
        self.session_s = session_s

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()

    def check_password(self, user: str, password: str) -> bool:
        expected = self.users.get(user)
        # compare even for an unknown user, so timing does not tell which names exist
        ok = hmac.compare_digest((expected or "\0").encode(), password.encode())
        return expected is not None and ok

    def new_session(self, user: str, now: float | None = None) -> str:
        expiry = int((now or time.time()) + self.session_s)
        payload = f"{user}|{expiry}|{secrets.token_hex(8)}"
        token = base64.urlsafe_b64encode(payload.encode()).decode()
        return f"{token}.{self._sign(payload)}"

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        token, _, signature = cookie.rpartition(".")
        try:
            payload = base64.urlsafe_b64decode(token.encode()).decode()
            user, expiry, nonce = payload.split("|")
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        if int(expiry) < (now or time.time()) or user not in self.users:
            return None
        return Session(user, nonce)

    @staticmethod
    def new_csrf_seed() -> str:
        return secrets.token_urlsafe(24)

    def csrf_token(self, seed: str) -> str:
        return self._sign(f"csrf|{seed}")

    def csrf_ok(self, seed: str | None, token: str | None) -> bool:
        return bool(seed and token) and hmac.compare_digest(self.csrf_token(seed or ""), token or "")
