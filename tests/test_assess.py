"""How a run judges the certificate a firewall holds (plan.assess), from the certificate
itself: small units, no lab."""

from __future__ import annotations

import datetime as dt
from typing import List, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from connector.settings import (CertificateProfile, KeySpec, OrderSettings, RenewalWindow,
                                Subject)
from connector.device import CertificateEntry
from connector.plan import assess

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)
# A subjectAltName extension whose content is cut short: cryptography cannot read it.
BROKEN_SAN = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
                                        b"\x30\x03\x82\x05x")


def profile(names: List[str], window: RenewalWindow = RenewalWindow(days=30)
            ) -> CertificateProfile:
    return CertificateProfile(
        name="www", path="www.yaml", firewall="fw", object_name="www", validation="DV",
        common_name=names[0], subject_alt_names=tuple(names[1:]), subject=Subject(),
        key=KeySpec("ECDSA", 256), digest="sha256", order=OrderSettings(1), renewal=window,
        ssl_tls_service_profiles=())


def certificate(not_after: dt.datetime, names: Optional[List[str]] = None,
                extension: Optional[x509.ExtensionType] = None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")])
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name) \
        .public_key(key.public_key()).serial_number(x509.random_serial_number()) \
        .not_valid_before(not_after - dt.timedelta(days=90)).not_valid_after(not_after)
    if names is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    if extension is not None:
        builder = builder.add_extension(extension, False)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize("days_left,names,status,expected", [
    (60, ["www.example.com"], "valid", "ok"),
    (60, ["*.example.com"], "valid", "ok"),
    (10, ["www.example.com"], "valid", "due"),
    (-1, ["www.example.com"], "valid", "expired"),
    (60, ["www.example.com"], "revoked", "revoked"),
    (60, ["other.example.com"], "valid", "due"),
])
def test_condition(days_left: int, names: List[str], status: str, expected: str) -> None:
    entry = CertificateEntry("www", True,
                             cert=certificate(NOW + dt.timedelta(days=days_left), names),
                             status=status)
    assert assess(profile(["www.example.com"]), entry, NOW)[0] == expected


@pytest.mark.parametrize("days_left,status,expected", [(-1, "valid", "expired"),
                                                       (60, "revoked", "revoked")])
def test_expired_or_revoked_is_reported_even_when_the_names_cannot_be_read(
        days_left: int, status: str, expected: str) -> None:
    # The names are only read when the answer depends on them.
    entry = CertificateEntry("www", True, cert=certificate(
        NOW + dt.timedelta(days=days_left), extension=BROKEN_SAN), status=status)
    assert assess(profile(["www.example.com"]), entry, NOW)[0] == expected
    assert entry.facts is not None and entry.facts.issuer_cn == "www.example.com"


def test_a_certificate_is_read_once_however_often_it_is_assessed() -> None:
    entry = CertificateEntry("www", True, cert=certificate(NOW + dt.timedelta(days=60),
                                                           ["www.example.com"]))
    first = entry.facts
    for _ in range(3):
        assert assess(profile(["www.example.com"]), entry, NOW)[0] == "ok"
    assert entry.facts is first
