"""How every Kafka client of the project connects: TLS and SASL from the settings, in one place.

:func:`client_kwargs` is what a plain aiokafka client (consumer, producer, admin) gets;
:func:`broker_credentials` is the same for faust (``faust.App(broker_credentials=...)``), which passes it
on to its own aiokafka clients. :func:`describe_auth_error` and :func:`check_auth` turn a rejected login
into one clear sentence instead of aiokafka's "Unable to bootstrap", so that start-up does not retry
what no retry can fix.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from moderation.core.errors import BrokerAuthError, ConfigError
from moderation.core.settings import Settings, parse_host_port

AUTH_CHECK_TIMEOUT_S = 15.0


def uses_tls(settings: Settings) -> bool:
    return settings.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Client TLS context (CA, optional client certificate) for SSL/SASL_SSL; None for plaintext."""
    if not uses_tls(settings):
        return None
    try:
        context = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        files = ", ".join(
            f"{name}={path}"
            for name, path in (
                ("MODERATION_SSL_CAFILE", settings.ssl_cafile),
                ("MODERATION_SSL_CERTFILE", settings.ssl_certfile),
                ("MODERATION_SSL_KEYFILE", settings.ssl_keyfile),
            )
            if path is not None
        )
        raise ConfigError(f"cannot build the TLS context from {files or 'the system CAs'}: {exc}") from exc
    if not settings.ssl_check_hostname:
        context.check_hostname = False  # the chain is still verified against the CA
    return context


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaConsumer`` / ``AIOKafkaProducer`` / ``AIOKafkaAdminClient``."""
    kwargs: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if uses_tls(settings):
        kwargs["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs


def broker_credentials(settings: Settings) -> CredentialsT | None:
    """faust's ``broker_credentials`` for the same connection; None for PLAINTEXT."""
    if uses_sasl(settings):
        # faust derives SASL_SSL vs SASL_PLAINTEXT from whether an SSL context is given
        return SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl_context(settings),
        )
    if uses_tls(settings):
        return SSLCredentials(ssl_context(settings))
    return None


_AUTH_ERRORS = (SaslAuthenticationFailed, AuthenticationFailedError, IllegalSaslStateError)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe_auth_error(exc: BaseException, settings: Settings) -> str | None:
    """One clear sentence when ``exc`` (or its cause) is a rejected login or TLS handshake, else None.

    Such failures are permanent: the caller must not retry them. A connection that was merely refused or
    timed out returns None (worth retrying). Note that aiokafka's ``bootstrap()`` swallows the cause and
    raises a bare ``KafkaConnectionError("Unable to bootstrap ...")``; use :func:`check_auth` to find out.
    """
    where = settings.bootstrap_servers
    for err in _chain(exc):
        if isinstance(err, BrokerAuthError):
            return str(err)
        if isinstance(err, _AUTH_ERRORS):
            said = str(err.args[0]) if err.args else type(err).__name__
            return (
                f"authentication failed for user {settings.sasl_username} ({settings.sasl_mechanism}) at {where}: "
                f"check MODERATION_SASL_USERNAME / MODERATION_SASL_PASSWORD / MODERATION_SASL_MECHANISM "
                f"(broker said: {said})"
            )
        if isinstance(err, UnsupportedSaslMechanismError):
            return (
                f"the broker at {where} does not accept SASL mechanism {settings.sasl_mechanism}: "
                f"set MODERATION_SASL_MECHANISM to one it enables ({err})"
            )
        if isinstance(err, ssl.SSLCertVerificationError):
            reason = getattr(err, "verify_message", None) or err
            return (
                f"the TLS certificate of the broker at {where} was rejected ({reason}): check "
                "MODERATION_SSL_CAFILE (the CA that signed it) and that the bootstrap host is named in it"
            )
        if isinstance(err, ssl.SSLError):
            return (
                f"TLS handshake with the broker at {where} failed ({err}): is the listener "
                f"{settings.security_protocol}? check MODERATION_SECURITY_PROTOCOL and MODERATION_SSL_*"
            )
    return None


async def check_auth(settings: Settings, timeout_s: float = AUTH_CHECK_TIMEOUT_S) -> None:
    """Open one connection to the first bootstrap server and log in, as every client will.

    Raises :class:`BrokerAuthError` (a ModerationError: start-up does not retry it) when the login or the
    TLS handshake is rejected. Returns quietly when it succeeds, for PLAINTEXT, and when the broker cannot
    be reached at all (that is for the caller's connection retries to report).
    """
    if settings.security_protocol == "PLAINTEXT":
        return
    from aiokafka.conn import create_conn

    kwargs = client_kwargs(settings)
    host, port = parse_host_port(settings.bootstrap_servers)
    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **kwargs), timeout_s
        )
    except Exception as exc:
        message = describe_auth_error(exc, settings)
        if message is not None:
            raise BrokerAuthError(message) from exc
        return
    conn.close()
