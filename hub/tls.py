"""A private certificate authority and server certificates for the broker and the hub.

``edgefleet hub tls --out DIR --host broker.example.com [--host 10.0.0.5]`` writes:

- ``ca.crt`` / ``ca.key``: the fleet's CA (ECDSA P-256, 10 years; the key 0600 — keep it
  offline once the certificates are issued). Devices pin ``ca.crt``
  (``edgefleet device enroll --broker-ca``, ``--hub-ca``).
- ``server.crt`` / ``server.key``: one certificate for every ``--host`` (DNS names and
  IP addresses as subject alternative names; 2 years), for Mosquitto's TLS listener and
  the hub's HTTPS API.

An existing CA in ``DIR`` is reused, so running it again issues a new server
certificate under the same CA (renewal, or more host names) without re-enrolling any
device. Nothing is written when an argument is wrong.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.errors import HubError

CA_DAYS: Final = 3650
SERVER_DAYS: Final = 730


class TlsError(HubError):
    """The CA or a certificate cannot be made (bad host name, unreadable CA, I/O)."""


@dataclass(frozen=True)
class TlsFiles:
    """Where :func:`make_tls` wrote the CA and the server certificate."""

    ca: Path
    cert: Path
    key: Path
    ca_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        label_ok = all(part and len(part) <= 63 for part in host.split("."))
        if (
            not host
            or len(host) > 253
            or not label_ok
            or not host.replace(".", "").replace("-", "").isalnum()
        ):
            raise TlsError(f"host {host!r} is neither an IP address nor a DNS name")
        names.append(x509.DNSName(host))
    return names


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def _load_or_make_ca(
    directory: Path, now: dt.datetime, valid_days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_path, key_path = directory / "ca.crt", directory / "ca.key"
    if ca_path.exists() and key_path.exists():
        try:
            ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise TlsError(f"cannot reuse the CA in {directory}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{key_path}: not an EC private key")
        return ca, key
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("EdgeFleet fleet CA"))
        .issuer_name(_name("EdgeFleet fleet CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write(key_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), 0o600)  # fmt: skip
    _write(ca_path, ca.public_bytes(pem), 0o644)
    return ca, key


def make_tls(
    directory: Path,
    hosts: Sequence[str] = ("127.0.0.1",),
    *,
    ca_days: int = CA_DAYS,
    server_days: int = SERVER_DAYS,
) -> TlsFiles:
    """Write (or reuse) the CA and issue a server certificate for ``hosts``.

    Raises:
        TlsError: no host, a host that is neither an IP address nor a DNS name, an
            unreadable existing CA, or the files cannot be written.
    """
    if not hosts:
        raise TlsError("at least one host name or IP address is needed")
    names = _alt_names(hosts)
    now = dt.datetime.now(dt.UTC)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca, ca_key = _load_or_make_ca(directory, now, ca_days)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=server_days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        files = TlsFiles(
            directory / "ca.crt", directory / "server.crt", directory / "server.key",
            directory / "ca.key",
        )  # fmt: skip
        pem = serialization.Encoding.PEM
        _write(files.key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()), 0o600)  # fmt: skip
        _write(files.cert, cert.public_bytes(pem), 0o644)
    except OSError as exc:
        raise TlsError(f"cannot write the certificates in {directory} ({exc.strerror})") from exc
    return files
