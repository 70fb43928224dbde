"""serve's self-signed certificate covers the addresses clients use, and is remade only when it must be."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509

from pulumi_dbos.serve.tls import cert_hosts, ensure_self_signed


def _sans(cert: Path) -> set[str]:
    ext = x509.load_pem_x509_certificate(cert.read_bytes()).extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}


def test_cert_hosts_add_the_specific_listen_and_advertise_hosts() -> None:
    assert cert_hosts("127.0.0.1", None) == ["localhost", "127.0.0.1"]
    assert cert_hosts("0.0.0.0", "10.1.2.3") == ["localhost", "127.0.0.1", "10.1.2.3"]  # noqa: S104
    assert cert_hosts("db1.internal", "10.1.2.3") == ["localhost", "127.0.0.1", "db1.internal", "10.1.2.3"]


def test_the_certificate_covers_the_hosts_and_is_kept_until_a_new_one_is_asked_for(tmp_path: Path) -> None:
    cert, key = ensure_self_signed(tmp_path / "tls")
    assert _sans(cert) == {"localhost", "127.0.0.1"}
    assert key.stat().st_mode & 0o777 == 0o600
    first = cert.read_bytes()
    assert ensure_self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"])[0].read_bytes() == first  # reused

    cert, _ = ensure_self_signed(tmp_path / "tls", cert_hosts("0.0.0.0", "10.1.2.3"))  # noqa: S104
    assert _sans(cert) == {"localhost", "127.0.0.1", "10.1.2.3"}
    assert cert.read_bytes() != first  # remade: the old one did not cover 10.1.2.3
    ip = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.1.2.3") in ip  # an IP SAN, not a DNS name: clients connecting by IP verify it

    second = cert.read_bytes()
    assert ensure_self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"])[0].read_bytes() == second  # a subset


def test_an_unreadable_certificate_is_remade(tmp_path: Path) -> None:
    cert, _ = ensure_self_signed(tmp_path / "tls")
    cert.write_text("not a certificate")
    cert, _ = ensure_self_signed(tmp_path / "tls")
    assert _sans(cert) == {"localhost", "127.0.0.1"}
