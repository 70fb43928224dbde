"""The self-signed certificate serve uses when none is given: valid for ``localhost``, ``127.0.0.1`` and
the addresses other machines use (``--listen``'s host when it is a specific one, ``--advertise-host``),
made once under ``D/serve/tls`` and reused; remade when it is about to expire or does not cover an
address asked for (clients then fetch the new file).

It is its own trust anchor (CA:TRUE, keyCertSign), so clients trust it by pointing at the file:
``NODE_EXTRA_CA_CERTS`` for the official CLI, ``verify=cert.pem`` for Python.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .state import write_private

VALID_DAYS = 3650
RENEW_BEFORE = dt.timedelta(days=30)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def _valid(cert_path: Path, key_path: Path, names: list[x509.GeneralName]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        covered = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    if any(n not in covered for n in names):
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > RENEW_BEFORE


def cert_hosts(listen_host: str, advertise_host: str | None) -> list[str]:
    """The names the certificate must cover: localhost, 127.0.0.1, and the specific hosts given."""
    hosts = ["localhost", "127.0.0.1"]
    for h in (listen_host, advertise_host):
        if h and h not in ("0.0.0.0", "::", "[::]") and h not in hosts:  # noqa: S104 - compared, not bound
            hosts.append(h)
    return hosts


def ensure_self_signed(tls_dir: Path, hosts: list[str] | None = None) -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` under ``tls_dir`` for ``hosts`` (default localhost and 127.0.0.1), made
    when missing, unreadable, expiring or not covering one of ``hosts``."""
    names = [_san(h) for h in (hosts or ["localhost", "127.0.0.1"])]
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if _valid(cert_path, key_path, names):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pulumi-dbos serve")])
    now = dt.datetime.now(dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    cert_path.chmod(0o644)
    return cert_path, key_path
