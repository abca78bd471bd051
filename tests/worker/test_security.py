"""Connection security without a broker: settings checks, client kwargs, faust credentials, error texts,
and the secure listener's broker config."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import ValidationError

from moderation.core.errors import BrokerAuthError, BrokerError, ConfigError
from moderation.core.settings import Settings
from moderation.devtools.broker.config import (
    SecureListener,
    scram_format_args,
    secure_listener_properties,
    server_properties,
)
from moderation.worker.security import broker_credentials, check_auth, client_kwargs, describe_auth_error, ssl_context
from tests.devtools.broker.secure_kafka import make_ca

PASSWORD = "s3cret-Pa55"


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ca(tmp_path_factory.mktemp("ca")).cafile


def sasl_ssl(cafile: Path, **extra: object) -> Settings:
    return Settings(
        security_protocol="SASL_SSL",
        sasl_username="alice",
        sasl_password=PASSWORD,
        ssl_cafile=cafile,
        **extra,  # type: ignore[arg-type]
    )


# --- settings ----------------------------------------------------------------------------------------


def test_default_is_plaintext_without_credentials() -> None:
    settings = Settings()
    assert settings.security_protocol == "PLAINTEXT" and settings.sasl_mechanism == "SCRAM-SHA-512"
    assert client_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(settings) is None


def test_names_are_case_insensitive_and_the_password_never_prints(cafile: Path) -> None:
    settings = Settings(
        security_protocol="sasl_ssl",
        sasl_mechanism="scram_sha_256",
        sasl_username="alice",
        sasl_password=PASSWORD,
        ssl_cafile=cafile,
    )
    assert (settings.security_protocol, settings.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    for text in (str(settings), repr(settings), settings.model_dump_json()):
        assert PASSWORD not in text


def test_from_environment(monkeypatch: pytest.MonkeyPatch, cafile: Path) -> None:
    monkeypatch.setenv("MODERATION_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MODERATION_SASL_USERNAME", "alice")
    monkeypatch.setenv("MODERATION_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("MODERATION_SSL_CAFILE", str(cafile))
    monkeypatch.setenv("MODERATION_SSL_CERTFILE", "")  # an empty variable (e.g. from a ConfigMap) is unset
    settings = Settings()
    assert settings.sasl_password.get_secret_value() == PASSWORD
    assert settings.ssl_cafile == cafile and settings.ssl_certfile is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"security_protocol": "TLS"}, "Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "Input should be 'PLAIN'"),
        ({"security_protocol": "SASL_SSL"}, "needs MODERATION_SASL_USERNAME and MODERATION_SASL_PASSWORD"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "alice"}, "needs MODERATION_SASL_USERNAME"),
        ({"sasl_username": "alice", "sasl_password": "x"}, "PLAINTEXT does not use SASL"),
        ({"security_protocol": "SSL", "sasl_password": "x"}, "SSL does not use SASL"),
        ({"ssl_cafile": "CA"}, "MODERATION_SSL_CAFILE is set but MODERATION_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem: no such file"),
        ({"security_protocol": "SSL", "ssl_keyfile": "CA"}, "MODERATION_SSL_KEYFILE is set without"),
    ],
)
def test_invalid_combinations_are_refused_with_the_variable_to_fix(
    kwargs: dict[str, str], message: str, cafile: Path
) -> None:
    resolved = {k: str(cafile) if v == "CA" else v for k, v in kwargs.items()}
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(**resolved)  # type: ignore[arg-type]


# --- aiokafka kwargs and faust credentials ------------------------------------------------------------


def test_sasl_ssl_kwargs(cafile: Path) -> None:
    kwargs = client_kwargs(sasl_ssl(cafile))
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # our CA, not the system bundle
    assert client_kwargs(sasl_ssl(cafile, ssl_check_hostname=False))["ssl_context"].check_hostname is False


def test_sasl_plaintext_has_no_tls() -> None:
    settings = Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="bob",
        sasl_password=PASSWORD,
    )
    assert client_kwargs(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "bob",
        "sasl_plain_password": PASSWORD,
    }
    creds = broker_credentials(settings)
    assert isinstance(creds, SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT and creds.mechanism is SASLMechanism.PLAIN


def test_ssl_with_client_certificate(tmp_path: Path, cafile: Path) -> None:
    # a client certificate (any valid pair will do for loading): PEM key + cert, separate and combined
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "client.key").write_bytes(key_pem)
    (tmp_path / "client.crt").write_bytes(cert_pem)
    (tmp_path / "client.pem").write_bytes(key_pem + cert_pem)

    separate = Settings(
        security_protocol="SSL",
        ssl_cafile=cafile,
        ssl_certfile=tmp_path / "client.crt",
        ssl_keyfile=tmp_path / "client.key",
    )
    combined = Settings(security_protocol="SSL", ssl_cafile=cafile, ssl_certfile=tmp_path / "client.pem")
    for settings in (separate, combined):
        kwargs = client_kwargs(settings)
        assert kwargs["security_protocol"] == "SSL" and isinstance(kwargs["ssl_context"], ssl.SSLContext)
        assert "sasl_mechanism" not in kwargs
        creds = broker_credentials(settings)
        assert isinstance(creds, SSLCredentials) and creds.protocol is AuthProtocol.SSL

    (tmp_path / "client.key").write_text("not a key")
    with pytest.raises(ConfigError, match=r"cannot build the TLS context from .*MODERATION_SSL_KEYFILE="):
        ssl_context(separate)


def test_faust_gets_the_same_connection_as_plain_clients(cafile: Path) -> None:
    for settings in (sasl_ssl(cafile), sasl_ssl(cafile, sasl_mechanism="SCRAM-SHA-256")):
        creds = broker_credentials(settings)
        assert isinstance(creds, SASLCredentials) and creds.protocol is AuthProtocol.SASL_SSL
        via_faust = dict(credentials_to_aiokafka_auth(creds))
        direct = client_kwargs(settings)
        assert isinstance(via_faust.pop("ssl_context"), ssl.SSLContext)
        direct.pop("ssl_context")
        assert via_faust == direct
        assert PASSWORD not in repr(creds)


def test_garbage_ca_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=f"MODERATION_SSL_CAFILE={bad}"):
        client_kwargs(sasl_ssl(bad))


# --- errors ------------------------------------------------------------------------------------------


def test_describe_auth_error(cafile: Path) -> None:
    settings = sasl_ssl(cafile, bootstrap_servers="kafka:9093")
    refused = SaslAuthenticationFailed("Authentication failed during authentication due to invalid credentials")
    text = describe_auth_error(refused, settings)
    assert text is not None
    assert text.startswith("authentication failed for user alice (SCRAM-SHA-512) at kafka:9093: check ")
    assert "MODERATION_SASL_USERNAME / MODERATION_SASL_PASSWORD" in text and "invalid credentials" in text

    try:  # found through the cause chain too
        try:
            raise refused
        except SaslAuthenticationFailed as inner:
            raise KafkaConnectionError("Unable to bootstrap") from inner
    except KafkaConnectionError as outer:
        assert describe_auth_error(outer, settings) == text

    mechanism = describe_auth_error(UnsupportedSaslMechanismError("enabled: [PLAIN]"), settings)
    assert mechanism is not None and "MODERATION_SASL_MECHANISM" in mechanism
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert "MODERATION_SSL_CAFILE" in (describe_auth_error(cert, settings) or "")
    assert describe_auth_error(BrokerAuthError("said before"), settings) == "said before"

    # outages are for retries, not an auth error
    assert describe_auth_error(KafkaConnectionError("Unable to bootstrap"), settings) is None
    assert describe_auth_error(ConnectionRefusedError(111, "refused"), settings) is None
    assert describe_auth_error(TimeoutError(), settings) is None
    assert issubclass(BrokerAuthError, BrokerError)  # start-up exits 3 for it, without retrying


async def test_check_auth_is_quiet_for_plaintext_and_for_an_unreachable_broker(cafile: Path) -> None:
    from moderation.devtools.broker.local import free_port

    await check_auth(Settings())  # PLAINTEXT: nothing to check, no connection made
    await check_auth(sasl_ssl(cafile, bootstrap_servers=f"127.0.0.1:{free_port()}"), timeout_s=5)


# --- the local broker's secure listener -----------------------------------------------------------------


def test_secure_listener_properties(tmp_path: Path) -> None:
    secure = SecureListener(
        keystore=tmp_path / "server.p12",
        keystore_password="pw",
        truststore=tmp_path / "ca.pem",
        users=(("alice", "secret1"), ("bob", "secret2")),
    )
    base = server_properties(port=9092, controller_port=9093, data_dir=tmp_path)
    props = secure_listener_properties(base, secure, port=9094)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_SSL://127.0.0.1:9094"
    assert props["advertised.listeners"].endswith(",SASL_SSL://127.0.0.1:9094")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"  # the broker talks to itself on loopback
    assert props["listener.security.protocol.map"].endswith(",SASL_SSL:SASL_SSL")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256"
    assert "ScramLoginModule required;" in props["listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config"]
    assert props["ssl.keystore.location"] == str(tmp_path / "server.p12")
    assert base["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"  # input untouched

    args = scram_format_args(secure)
    assert args[:2] == ["--add-scram", "SCRAM-SHA-512=[name=alice,password=secret1]"]
    assert len(args) == 8 and "SCRAM-SHA-256=[name=bob,password=secret2]" in args


@pytest.mark.parametrize("user", [("alice", "a,b"), ("al ice", "x"), ("alice", ""), ("alice", 'q"uote')])
def test_scram_users_that_the_format_tool_cannot_parse_are_refused(user: tuple[str, str], tmp_path: Path) -> None:
    secure = SecureListener(tmp_path / "k", "pw", tmp_path / "t", users=(user,))
    with pytest.raises(BrokerError, match="--add-scram syntax"):
        scram_format_args(secure)
