"""A local broker with a SASL_SSL + SCRAM listener, for tests of secure clients.

The test makes its own CA and a server certificate for 127.0.0.1/localhost (``cryptography``), and the
SCRAM users are created when the storage is formatted. The broker has its own state dir and free ports,
so it never touches the session broker, and :func:`secure_kafka` always stops it.
"""

from __future__ import annotations

import datetime as dt
import io
import ipaddress
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from rich.console import Console

from moderation.core.settings import Settings
from moderation.devtools.broker import LocalKafka
from moderation.devtools.broker.config import SecureListener

USER = "alice"


@dataclass(frozen=True)
class TestCA:
    cafile: Path  # the CA certificate (PEM): what clients trust
    keystore: Path  # PKCS#12: server key + server certificate + CA
    keystore_password: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TestCA:
    """A throw-away CA and a server certificate for ``hosts`` signed by it, valid for a day."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("moderation test CA"))
        .issuer_name(_name("moderation test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital_signature, key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    password = secrets.token_hex(12)
    cafile = directory / "ca.pem"
    cafile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    keystore = directory / "server.p12"
    keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"broker",
            server_key,
            server_cert,
            [ca_cert],
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)  # any Java reads this
            .hmac_hash(hashes.SHA1())
            .build(password.encode()),
        )
    )
    keystore.chmod(0o600)
    return TestCA(cafile=cafile, keystore=keystore, keystore_password=password)


@dataclass(frozen=True)
class SecureBroker:
    bootstrap: str  # the SASL_SSL listener
    cafile: Path
    username: str
    password: str
    log: Path

    def env(self, mechanism: str = "SCRAM-SHA-512", password: str | None = None) -> dict[str, str]:
        """``MODERATION_*`` variables of a client of this broker (``password`` to get it wrong)."""
        return {
            "MODERATION_BOOTSTRAP_SERVERS": self.bootstrap,
            "MODERATION_SECURITY_PROTOCOL": "SASL_SSL",
            "MODERATION_SASL_MECHANISM": mechanism,
            "MODERATION_SASL_USERNAME": self.username,
            "MODERATION_SASL_PASSWORD": self.password if password is None else password,
            "MODERATION_SSL_CAFILE": str(self.cafile),
        }

    def settings(self, mechanism: str = "SCRAM-SHA-512", password: str | None = None) -> Settings:
        return Settings(
            bootstrap_servers=self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username=self.username,
            sasl_password=self.password if password is None else password,
            ssl_cafile=self.cafile,
        )


@contextmanager
def secure_kafka(directory: Path) -> Iterator[SecureBroker]:
    """Start a SASL_SSL + SCRAM-SHA-512/256 broker in ``directory``; stopped on exit, also on failure."""
    ca = make_ca(directory / "tls")
    password = secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")
    secure = SecureListener(
        keystore=ca.keystore, keystore_password=ca.keystore_password, truststore=ca.cafile, users=((USER, password),)
    )
    kafka = LocalKafka(
        Settings(kafka_state_dir=directory / "state"), console=Console(file=io.StringIO()), secure=secure
    )
    try:
        result = kafka.up(port=0)
        yield SecureBroker(result.state.bootstrap, ca.cafile, USER, password, Path(result.state.log))
    finally:
        kafka.down()
