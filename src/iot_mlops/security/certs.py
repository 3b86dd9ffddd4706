"""A certificate authority made for one stack, and the server certificate Kafka and MLflow
present (TLS). Clients trust the CA file (``ssl.ca.location``, MLflow's
``MLFLOW_TRACKING_SERVER_CERT_PATH``); nothing here is trusted system-wide."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Browsers and TLS libraries cap server certificates at 825 days (CA/B forum).
VALID_DAYS = 825


@dataclass(frozen=True)
class CertFiles:
    ca: Path  # the CA certificate: what clients trust
    ca_key: Path  # the CA's key: only to issue new certificates (rotation)
    cert: Path  # the server certificate followed by the CA (the chain)
    key: Path  # the server's private key (PKCS#8, unencrypted, 0600)
    keystore: Path  # key + chain in one file: Kafka's PEM keystore

    @classmethod
    def under(cls, root: Path) -> CertFiles:
        return cls(
            root / "ca.pem", root / "ca-key.pem", root / "server-cert.pem",
            root / "server-key.pem", root / "server-keystore.pem",
        )  # fmt: skip

    def exist(self) -> bool:
        return all(p.exists() for p in (self.ca, self.cert, self.key, self.keystore))


def _new_key() -> rsa.RSAPrivateKey:
    # RSA: what every JDK and librdkafka build reads in a PEM keystore.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def _builder(subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey):
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_file(path: Path, data: bytes | str, private: bool = False) -> None:
    """Write ``data``; a private file (keys, passwords) is 0600 from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def make_certs(root: Path, hosts: list[str]) -> CertFiles:
    """A new CA and a server certificate for ``hosts`` (IP addresses and DNS names)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    files = CertFiles.under(root)
    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iot-mlops stack CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        _builder(name, ca_name, key)
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = cert.public_bytes(pem) + ca.public_bytes(pem)
    write_file(files.ca, ca.public_bytes(pem))
    write_file(files.ca_key, _pem_key(ca_key), private=True)
    write_file(files.cert, chain)
    write_file(files.key, _pem_key(key), private=True)
    write_file(files.keystore, _pem_key(key) + chain, private=True)
    return files
