"""A throwaway PKI for TLS tests: a CA, a server and a client certificate it signs, and an unrelated CA.

Everything is made with `cryptography` in a temporary directory, valid for a day, EC P-256 keys (fast to
generate). The server certificate names `localhost` and `127.0.0.1` as subject alternative names, so a
gateway that dials `127.0.0.1:PORT` verifies it without a `tls.server_name` override.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=1)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsFiles:
    """The files a TLS test points models.yaml at."""

    ca: Path  # the CA that signed server and client
    server: CertPair  # SAN localhost, 127.0.0.1; serverAuth (+ clientAuth, for the engine's own probe)
    client: CertPair  # the gateway's; clientAuth
    other_ca: Path  # a CA that signed nothing here: a gateway trusting it must refuse the engine
    other_client: CertPair  # signed by other_ca: an engine demanding client certs must refuse it


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
    )


def make_ca(directory: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate (written as `<name>.pem`), with the certificate and key to sign with."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(name, _name(name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write_cert(cert, directory / f"{name}.pem"), cert, key


def issue(
    directory: Path,
    name: str,
    ca_cert: x509.Certificate,
    ca_key,
    *,
    server: bool,
    dns_names: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
) -> CertPair:
    """A leaf certificate signed by the CA: for a server (SANs; serverAuth and clientAuth, so that the engine's
    own health probe can present it under mTLS) or a client (clientAuth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usages = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if server
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    builder = (
        _builder(name, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if server:
        sans = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return CertPair(_write_cert(cert, directory / f"{name}.pem"), _write_key(key, directory / f"{name}-key.pem"))


def make_test_pki(directory: Path) -> TlsFiles:
    """Write the whole test PKI under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = make_ca(directory, "test-ca")
    other_ca, other_cert, other_key = make_ca(directory, "other-ca")
    return TlsFiles(
        ca=ca,
        server=issue(directory, "engine", ca_cert, ca_key, server=True),
        client=issue(directory, "gateway", ca_cert, ca_key, server=False),
        other_ca=other_ca,
        other_client=issue(directory, "stranger", other_cert, other_key, server=False),
    )
