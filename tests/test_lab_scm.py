"""Tests of the emulated Sectigo Certificate Manager (`paloaltofw/lab/scm/`).

Everything runs over real HTTPS against one lab SCM started for the module; settings and fault
rules are reset around every test. Certificates are checked with `cryptography`, never by
looking at the lab's own bookkeeping alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtensionOID, NameOID

from lab import pki
from lab.scm import (BAD_ISSUANCE_MODES, CLASSIC_FORMATS, TOKEN_PATH, ScmAccounts,
                     ScmSettings)
from conftest import ScmLab, csr_b64, csr_pem
from lab.server import FaultRule, apply_setting



# --- keys and CSRs ---------------------------------------------------------------------------

@dataclass
class Keys:
    rsa2048: Any
    rsa2048b: Any
    rsa3072: Any
    rsa1024: Any
    ec256: Any
    ec384: Any
    ec384b: Any
    k1: Any  # secp256k1: an EC curve no profile allows
    ed: Any


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(rsa2048=pki.generate_key("RSA", 2048), rsa2048b=pki.generate_key("RSA", 2048),
                rsa3072=pki.generate_key("RSA", 3072),
                rsa1024=rsa.generate_private_key(public_exponent=65537, key_size=1024),
                ec256=pki.generate_key("EC", 256), ec384=pki.generate_key("EC", 384),
                ec384b=pki.generate_key("EC", 384),
                k1=ec.generate_private_key(ec.SECP256K1()), ed=ed25519.Ed25519PrivateKey.generate())


def make_csr(key: Any, cn: Optional[str], sans: Optional[List[str]] = None,
             org: Optional[str] = None) -> x509.CertificateSigningRequest:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if cn:
        # Other tools put over-long CNs in CSRs; the lab must answer them, so allow building one.
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=len(cn) <= 64))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(s) for s in sans]), critical=False)
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest)


def same_key(cert: x509.Certificate, key: Any) -> bool:
    return pki.public_der(cert.public_key()) == pki.public_der(key)


def pem_certs(text: str) -> List[x509.Certificate]:
    return x509.load_pem_x509_certificates(text.encode("ascii"))


def san_names(cert: x509.Certificate) -> List[str]:
    ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    return [str(v) for v in ext.value.get_values_for_type(x509.DNSName)] + \
        [str(v) for v in ext.value.get_values_for_type(x509.IPAddress)]


def verify_chain(certs: List[x509.Certificate]) -> None:
    """Each certificate is signed by the next one; the last one is self-signed."""
    for child, parent in zip(certs, certs[1:]):
        child.verify_directly_issued_by(parent)
    certs[-1].verify_directly_issued_by(certs[-1])


# --- the lab ---------------------------------------------------------------------------------

Lab = ScmLab
pytestmark = pytest.mark.usefixtures("fresh_scm")


@pytest.fixture(scope="module")
def lab(scm_lab: ScmLab) -> ScmLab:
    return scm_lab


def error(response: requests.Response, status: int, code: int) -> Dict[str, Any]:
    """Asserts an SCM error answer and returns its body."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["description"], str) and body["description"]
    return body


def issued_rest(lab: Lab, csr: x509.CertificateSigningRequest, validation: str = "DV",
                **extra: Any) -> Tuple[int, List[x509.Certificate]]:
    response = lab.enroll_rest(csr, validation, **extra)
    assert response.status_code == 200, response.text
    cert_id = response.json()["certId"]
    download = lab.call("GET", f"/api/v1/certificates/{cert_id}", headers=lab.bearer())
    assert download.status_code == 200, download.text
    return cert_id, pem_certs(download.text)


def issued_classic(lab: Lab, csr: x509.CertificateSigningRequest, validation: str = "DV",
                   **extra: Any) -> Tuple[Dict[str, Any], List[x509.Certificate]]:
    response = lab.enroll_classic(csr, validation, **extra)
    assert response.status_code == 200, response.text
    ids = response.json()
    collected = lab.call("GET", f"/api/ssl/v1/collect/{ids['sslId']}/x509R",
                         headers=lab.classic())
    assert collected.status_code == 200, collected.text
    return ids, pem_certs(collected.text)


# --- settings --------------------------------------------------------------------------------

def test_settings_are_validated_and_settable() -> None:
    settings = ScmSettings()
    with pytest.raises(ValueError):
        ScmSettings(pending_style="sometimes")
    with pytest.raises(ValueError):
        apply_setting(settings, "bad_issuance", "slightly_wrong")
    with pytest.raises(ValueError):
        apply_setting(settings, "pending_polls", "-1")
    apply_setting(settings, "validated_domains", "example.com, example.net")
    assert settings.validated_domains == ["example.com", "example.net"]
    apply_setting(settings, "pending_style", "-183")
    assert settings.pending_style == "-183"


def test_settings_control_route(lab: Lab) -> None:
    response = lab.control("POST", "settings", {"pending_polls": 2, "pending_style": "code0"})
    assert response.status_code == 200
    assert lab.service.settings.pending_polls == 2
    assert lab.control("POST", "settings", {"pending_style": "never"}).status_code == 400
    assert lab.service.settings.pending_style == "code0"


def test_generated_accounts(lab: Lab) -> None:
    accounts = lab.accounts
    assert re.fullmatch(r"[0-9a-f-]{36}", accounts.client_id)
    assert all(c in accounts.client_secret for c in "]!,")
    assert accounts.password and accounts.login
    assert {p.validation for p in accounts.profiles} == {"DV", "OV", "EV"}
    assert accounts.secret_values() == [accounts.client_secret, accounts.password]
    other = ScmAccounts.generate()
    assert other.client_secret != accounts.client_secret


# --- OAuth token route -----------------------------------------------------------------------

def test_token(lab: Lab) -> None:
    lab.service.settings.token_lifetime = 123
    response = lab.call("POST", TOKEN_PATH, data={
        "client_id": lab.accounts.client_id, "client_secret": lab.accounts.client_secret,
        "grant_type": "client_credentials"})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 123
    assert body["refresh_expires_in"] == 0 and body["not-before-policy"] == 0
    assert body["scope"] == "profile email"
    header, claims, signature = body["access_token"].split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert decoded["azp"] == lab.accounts.client_id
    assert decoded["exp"] - decoded["iat"] == 123
    assert signature


@pytest.mark.parametrize("form,status,err", [
    ({"client_id": "ID", "client_secret": "SECRET"}, 400, "invalid_request"),
    ({"client_id": "ID", "client_secret": "SECRET", "grant_type": "password"}, 400,
     "unsupported_grant_type"),
    ({"client_secret": "SECRET", "grant_type": "client_credentials"}, 400, "invalid_request"),
    ({"client_id": "ID", "grant_type": "client_credentials"}, 400, "invalid_request"),
    ({"client_id": "ID", "client_secret": "wrong", "grant_type": "client_credentials"}, 401,
     "invalid_client"),
    ({"client_id": "other", "client_secret": "SECRET", "grant_type": "client_credentials"}, 401,
     "invalid_client"),
    ([("client_id", "ID"), ("client_id", "ID"), ("client_secret", "SECRET"),
      ("grant_type", "client_credentials")], 400, "invalid_request"),
])
def test_token_errors(lab: Lab, form: Any, status: int, err: str) -> None:
    def fill(value: str) -> str:
        return {"ID": lab.accounts.client_id, "SECRET": lab.accounts.client_secret}.get(value,
                                                                                         value)
    if isinstance(form, dict):
        data: Any = {k: fill(v) for k, v in form.items()}
    else:
        data = [(k, fill(v)) for k, v in form]
    response = lab.call("POST", TOKEN_PATH, data=data)
    assert response.status_code == status, response.text
    assert response.json()["error"] == err
    assert response.json()["error_description"]


def test_token_route_wants_a_form(lab: Lab) -> None:
    response = lab.call("POST", TOKEN_PATH, json={
        "client_id": lab.accounts.client_id, "client_secret": lab.accounts.client_secret,
        "grant_type": "client_credentials"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    response = lab.call("GET", TOKEN_PATH)
    assert response.status_code == 405 and response.json()["error"] == "invalid_request"


def test_401_carries_the_token_url(lab: Lab, keys: Keys) -> None:
    expected = f'Bearer authorization_uri="{lab.url}{TOKEN_PATH}"'
    body = {"csr": csr_b64(make_csr(keys.rsa2048, "www.example.com")),
            "profileId": lab.profile("DV")}
    response = lab.call("POST", "/api/v1/certificates", json=body)
    error(response, 401, -16)
    assert response.json()["description"] == "Unknown user"
    assert response.headers["WWW-Authenticate"] == expected
    # A presented but unknown token says so.
    response = lab.call("POST", "/api/v1/certificates", json=body,
                        headers={"Authorization": "Bearer not-a-token"})
    error(response, 401, -16)
    assert response.headers["WWW-Authenticate"] == expected + ', error="invalid_token"'
    # The Enrollment API takes no classic credentials.
    error(lab.call("POST", "/api/v1/certificates", json=body, headers=lab.classic()), 401, -16)
    error(lab.call("GET", "/api/v1/certificates/1", headers={"Authorization": "Basic eDp5"}),
          401, -16)


def test_token_expiry_and_expire_tokens(lab: Lab) -> None:
    lab.service.settings.token_lifetime = 1
    headers = lab.bearer()
    assert lab.call("GET", "/api/ssl/v1/types", headers=headers).status_code == 200
    time.sleep(1.3)
    response = lab.call("GET", "/api/ssl/v1/types", headers=headers)
    error(response, 401, -16)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]

    lab.service.settings.token_lifetime = 300
    first, second = lab.bearer(), lab.bearer()
    assert lab.call("GET", "/api/ssl/v1/types", headers=first).status_code == 200
    result = lab.control("POST", "action/expire_tokens")
    assert result.status_code == 200 and result.json()["result"]["expired"] >= 2
    for headers in (first, second):
        response = lab.call("GET", "/api/v1/certificates/1", headers=headers)
        error(response, 401, -16)
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert lab.call("GET", "/api/ssl/v1/types", headers=lab.bearer()).status_code == 200


# --- Enrollment API ----------------------------------------------------------------------------

def test_enrollment_enroll_and_download_dv(lab: Lab, keys: Keys) -> None:
    csr = make_csr(keys.rsa2048, "www.example.com", org="Not Used Inc")
    before = pki.utcnow()
    response = lab.enroll_rest(csr, "DV", subjAltNames=["api.example.com", "www.example.com"],
                               term=90, comments="lab test", externalRequester="a@example.com",
                               customFields={"Cost Center": "42"}, unknownField={"x": 1})
    assert response.status_code == 200, response.text
    cert_id = response.json()["certId"]
    assert isinstance(cert_id, int) and cert_id > 0
    download = lab.call("GET", f"/api/v1/certificates/{cert_id}", headers=lab.bearer())
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/octet-stream;charset=UTF-8"
    assert re.fullmatch(r'attachment; filename="[^"]+"', download.headers["Content-Disposition"])
    certs = pem_certs(download.text)
    leaf = certs[0]
    assert len(certs) == 3  # DV: leaf, one intermediate, root
    verify_chain(certs)
    assert same_key(leaf, keys.rsa2048)
    assert san_names(leaf) == ["www.example.com", "api.example.com"]
    assert leaf.subject.rfc4514_string() == "CN=www.example.com"  # DV: the CN only
    start = leaf.not_valid_before_utc
    assert (start.hour, start.minute, start.second) == (0, 0, 0)
    assert start.date() in (before.date(), pki.utcnow().date())  # robust across midnight
    assert leaf.not_valid_after_utc - start == dt.timedelta(days=90, seconds=-1)
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == [pki.POLICY_OIDS["DV"]]
    order = lab.service.orders[cert_id]
    assert (order.api, order.status, order.validation, order.term) == (
        "enrollment", "Issued", "DV", 90)
    assert order.custom_fields == {"Cost Center": "42"}


def test_enrollment_ev_ec_subject_from_the_organization(lab: Lab, keys: Keys) -> None:
    csr = make_csr(keys.ec384, "secure.example.com", org="Evil Corp")
    cert_id, certs = issued_rest(lab, csr, "EV")
    leaf = certs[0]
    assert len(certs) == 4  # EV goes through two intermediates
    verify_chain(certs)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert same_key(leaf, keys.ec384)
    org = lab.accounts.org

    def value(oid: x509.ObjectIdentifier) -> str:
        return leaf.subject.get_attributes_for_oid(oid)[0].value

    assert value(NameOID.ORGANIZATION_NAME) == org.name  # not "Evil Corp" from the CSR
    assert value(NameOID.LOCALITY_NAME) == org.locality
    assert value(NameOID.STATE_OR_PROVINCE_NAME) == org.state
    assert value(NameOID.COUNTRY_NAME) == org.country
    assert value(NameOID.BUSINESS_CATEGORY) == org.business_category
    assert value(NameOID.JURISDICTION_COUNTRY_NAME) == org.jurisdiction_country
    assert value(NameOID.SERIAL_NUMBER) == org.registration_number
    assert value(NameOID.COMMON_NAME) == "secure.example.com"
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(days=200,
                                                                                seconds=-1)
    assert lab.service.orders[cert_id].term == 200  # no term: the profile's largest


def test_enrollment_ov_subject(lab: Lab, keys: Keys) -> None:
    _, certs = issued_rest(lab, make_csr(keys.rsa3072, "ov.example.com"), "OV", term=30)
    leaf = certs[0]
    assert len(certs) == 3
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        lab.accounts.org.name
    assert not leaf.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)
    policies = leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == [pki.POLICY_OIDS["OV"]]


def test_enrollment_ignores_the_csr_san_extension(lab: Lab, keys: Keys) -> None:
    csr = make_csr(keys.ec256, "cn-only.example.com", sans=["hidden.example.com"])
    _, certs = issued_rest(lab, csr)
    assert san_names(certs[0]) == ["cn-only.example.com"]


def test_enrollment_product_id_alias(lab: Lab, keys: Keys) -> None:
    csr = make_csr(keys.rsa2048, "alias.example.com")
    body = {"csr": csr_b64(csr), "productId": lab.profile("OV")}
    response = lab.call("POST", "/api/v1/certificates", json=body, headers=lab.bearer())
    assert response.status_code == 200
    assert lab.service.orders[response.json()["certId"]].validation == "OV"
    body["profileId"] = lab.profile("DV")
    error(lab.call("POST", "/api/v1/certificates", json=body, headers=lab.bearer()), 400, -1601)


def _bad_signature(csr: x509.CertificateSigningRequest) -> str:
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature bits
    return base64.b64encode(bytes(der)).decode()


@pytest.mark.parametrize("case,code", [
    ("pem", -9), ("multiline", -9), ("garbage", -9), ("not_der", -10), ("rsa1024", -141),
    ("ed25519", -11), ("secp256k1", -13), ("no_cn", -138), ("bad_signature", -138),
    ("no_csr", -7), ("csr_number", -1002), ("no_profile", -7), ("unknown_profile", -111),
    ("profile_string", -1002), ("bad_term", -36), ("term_float", -1002),
    ("sans_string", -1002), ("sans_numbers", -1002), ("comments_long", -1601),
    ("requester_long", -1601), ("custom_unknown", -135), ("custom_not_object", -1002),
    ("bad_name", -732), ("private_ip", -62), ("long_cn", -306), ("dcv_mode", -1601),
])
@pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")  # long_cn, on purpose
def test_enrollment_enroll_errors(lab: Lab, keys: Keys, case: str, code: int) -> None:
    csr = make_csr(keys.rsa2048, "err.example.com")
    body: Dict[str, Any] = {"csr": csr_b64(csr), "profileId": lab.profile("DV")}
    b64 = body["csr"]
    changes: Dict[str, Callable[[], Dict[str, Any]]] = {
        "pem": lambda: {"csr": csr_pem(csr)},
        "multiline": lambda: {"csr": "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))},
        "garbage": lambda: {"csr": "!!!not base64!!!"},
        "not_der": lambda: {"csr": base64.b64encode(b"hello world, not a CSR").decode()},
        "rsa1024": lambda: {"csr": csr_b64(make_csr(keys.rsa1024, "err.example.com"))},
        "ed25519": lambda: {"csr": csr_b64(make_csr(keys.ed, "err.example.com"))},
        "secp256k1": lambda: {"csr": csr_b64(make_csr(keys.k1, "err.example.com"))},
        "no_cn": lambda: {"csr": csr_b64(make_csr(keys.rsa2048, None, org="Example"))},
        "bad_signature": lambda: {"csr": _bad_signature(csr)},
        "no_csr": lambda: {"csr": None},
        "csr_number": lambda: {"csr": 12345},
        "no_profile": lambda: {"profileId": None},
        "unknown_profile": lambda: {"profileId": 4242},
        "profile_string": lambda: {"profileId": str(lab.profile("DV"))},
        "bad_term": lambda: {"term": 365},
        "term_float": lambda: {"term": 90.0},
        "sans_string": lambda: {"subjAltNames": "a.example.com,b.example.com"},
        "sans_numbers": lambda: {"subjAltNames": [1, 2]},
        "comments_long": lambda: {"comments": "x" * 1025},
        "requester_long": lambda: {"externalRequester": "x" * 513},
        "custom_unknown": lambda: {"customFields": {"Nope": "1"}},
        "custom_not_object": lambda: {"customFields": [{"name": "Cost Center", "value": "1"}]},
        "bad_name": lambda: {"subjAltNames": ["bad_name!.example.com"]},
        "private_ip": lambda: {"subjAltNames": ["10.1.2.3"]},
        "long_cn": lambda: {"csr": csr_b64(make_csr(keys.rsa2048, "a" * 60 + ".example.com"))},
        "dcv_mode": lambda: {"dcvMode": "CARRIER_PIGEON"},
    }
    body.update(changes[case]())
    body = {k: v for k, v in body.items() if v is not None}
    before = len(lab.service.order_log)
    error(lab.call("POST", "/api/v1/certificates", json=body, headers=lab.bearer()), 400, code)
    assert len(lab.service.order_log) == before  # nothing billed


def test_enrollment_body_errors(lab: Lab) -> None:
    headers = lab.bearer()
    for raw in (b"", b"not json", b"[]", b'""', b"null", b"[" * 100000, b'{"term": NaN}'):
        response = lab.call("POST", "/api/v1/certificates", data=raw,
                            headers=dict(headers, **{"Content-Type": "application/json"}))
        error(response, 400, -1002)
    response = lab.call("POST", "/api/v1/certificates", data=b'{"csr": "x"}',
                        headers=dict(headers, **{"Content-Type": "text/plain"}))
    error(response, 415, -1002)


def test_enrollment_mandatory_custom_fields(lab: Lab, keys: Keys) -> None:
    lab.service.settings.mandatory_custom_fields = ["Cost Center", "Owner"]
    csr = make_csr(keys.rsa2048, "custom.example.com")
    error(lab.enroll_rest(csr, customFields={"Cost Center": "1"}), 400, -62)
    response = lab.enroll_rest(csr, customFields={"Cost Center": "1", "Owner": "netops"})
    assert response.status_code == 200
    fields = lab.call("GET", "/api/ssl/v1/customFields", headers=lab.classic()).json()
    assert {f["name"]: f["mandatory"] for f in fields} == {
        "Cost Center": True, "Change Ticket": False, "Owner": True}


def test_enrollment_pending_then_issued(lab: Lab, keys: Keys) -> None:
    lab.service.settings.pending_polls = 3
    response = lab.enroll_rest(make_csr(keys.rsa2048, "slow.example.com"))
    cert_id = response.json()["certId"]
    headers = lab.bearer()
    codes = []
    for _ in range(3):
        answer = lab.call("GET", f"/api/v1/certificates/{cert_id}", headers=headers)
        assert answer.status_code == 404
        codes.append(answer.json()["code"])
    assert codes == [-103, -109, -103]
    assert lab.service.orders[cert_id].status == "Requested"
    answer = lab.call("GET", f"/api/v1/certificates/{cert_id}", headers=headers)
    assert answer.status_code == 200 and len(pem_certs(answer.text)) == 3
    # Unknown ids get the same HTTP status as pending: only the code tells them apart.
    error(lab.call("GET", f"/api/v1/certificates/{cert_id + 1000000}", headers=headers),
          404, -5101)


@pytest.mark.parametrize("bad_id", ["abc", "-5", "0", "99999999999", "1.5", "%20", "2147483648"])
def test_bad_ids(lab: Lab, bad_id: str) -> None:
    headers = lab.bearer()
    error(lab.call("GET", f"/api/v1/certificates/{bad_id}", headers=headers), 400, -124)
    error(lab.call("GET", f"/api/ssl/v1/collect/{bad_id}/x509", headers=headers), 400, -124)
    error(lab.call("GET", f"/api/ssl/v1/{bad_id}", headers=headers), 400, -124)
    error(lab.call("POST", f"/api/ssl/v1/renewById/{bad_id}", json={}, headers=headers),
          400, -124)


def test_enrollment_download_formats(lab: Lab, keys: Keys) -> None:
    cert_id, chain = issued_rest(lab, make_csr(keys.rsa2048, "fmt.example.com"), "EV")
    headers = lab.bearer()
    only = lab.call("GET", f"/api/v1/certificates/{cert_id}", params={"format": "x509CO"},
                    headers=headers)
    assert [c.serial_number for c in pem_certs(only.text)] == [chain[0].serial_number]
    root_first = lab.call("GET", f"/api/v1/certificates/{cert_id}", params={"format": "x509"},
                          headers=headers)
    assert [c.serial_number for c in pem_certs(root_first.text)] == \
        [c.serial_number for c in reversed(chain)]
    error(lab.call("GET", f"/api/v1/certificates/{cert_id}", params={"format": "X509CO"},
                   headers=headers), 400, -1450)


def test_enrollment_renew(lab: Lab, keys: Keys) -> None:
    cert_id, _ = issued_rest(lab, make_csr(keys.rsa2048, "renew.example.com"), "DV",
                             subjAltNames=["alt.renew.example.com"], term=90)
    headers = lab.bearer()
    before = len(lab.service.order_log)
    response = lab.call("POST", f"/api/v1/certificates/{cert_id}/renew", json={},
                        headers=headers)
    assert response.status_code == 200
    new_id = response.json()["certId"]
    assert new_id != cert_id
    old, new = lab.service.orders[cert_id], lab.service.orders[new_id]
    assert old.renewed and old.status == "Issued"
    assert (new.renew_of, new.names, new.term) == (cert_id, old.names, 90)
    entry = lab.service.order_log[-1]
    assert len(lab.service.order_log) == before + 1
    assert (entry["api"], entry["op"], entry["id"], entry["renew_of"]) == (
        "enrollment", "renew", new_id, cert_id)
    assert entry["client"] == lab.accounts.client_id
    download = lab.call("GET", f"/api/v1/certificates/{new_id}", headers=headers)
    assert same_key(pem_certs(download.text)[0], keys.rsa2048)  # no CSR: the old key

    # Renew with a new CSR (new key), a new profile, new names and a new term.
    response = lab.call("POST", f"/api/v1/certificates/{new_id}/renew", headers=headers, json={
        "csr": csr_b64(make_csr(keys.ec384b, "ignored.example.com")),
        "profileId": lab.profile("OV"), "term": 180,
        "subjAltNames": ["renew.example.com", "new.renew.example.com"]})
    assert response.status_code == 200, response.text
    third = response.json()["certId"]
    download = lab.call("GET", f"/api/v1/certificates/{third}", headers=headers)
    leaf = pem_certs(download.text)[0]
    assert same_key(leaf, keys.ec384b)
    assert san_names(leaf) == ["renew.example.com", "new.renew.example.com"]
    assert lab.service.orders[third].validation == "OV"

    # Only issued certificates renew.
    lab.service.settings.pending_polls = 1
    pending = lab.enroll_rest(make_csr(keys.rsa2048, "pending.example.com")).json()["certId"]
    error(lab.call("POST", f"/api/v1/certificates/{pending}/renew", json={}, headers=headers),
          400, -130)
    error(lab.call("POST", f"/api/v1/certificates/{pending + 10**6}/renew", json={},
                   headers=headers), 404, -5101)
    error(lab.call("POST", f"/api/v1/certificates/{cert_id}/renew", headers=headers), 400,
          -1002)
    error(lab.call("POST", f"/api/v1/certificates/{cert_id}/renew", json={"term": 7},
                   headers=headers), 400, -36)


def test_enrollment_revoke(lab: Lab, keys: Keys) -> None:
    cert_id, _ = issued_rest(lab, make_csr(keys.rsa2048, "revoke.example.com"))
    headers = lab.bearer()
    path = f"/api/v1/certificates/{cert_id}/revoke"
    error(lab.call("POST", path, json={"reasonCode": 4}, headers=headers), 400, -7)
    error(lab.call("POST", path, json={"reason": "x" * 513}, headers=headers), 400, -1601)
    error(lab.call("POST", path, json={"reason": "x", "reasonCode": 2}, headers=headers),
          400, -1601)
    response = lab.call("POST", path, json={"reasonCode": 4, "reason": "superseded"},
                        headers=headers)
    assert response.status_code == 204 and response.content == b""
    assert lab.service.orders[cert_id].status == "Revoked"
    error(lab.call("GET", f"/api/v1/certificates/{cert_id}", headers=headers), 400, -110)
    error(lab.call("POST", path, json={"reason": "again"}, headers=headers), 400, -159)
    lab.service.settings.pending_polls = 1
    pending = lab.enroll_rest(make_csr(keys.rsa2048, "p.example.com")).json()["certId"]
    error(lab.call("POST", f"/api/v1/certificates/{pending}/revoke", json={"reason": "r"},
                   headers=headers), 400, -102)


def test_declined(lab: Lab, keys: Keys) -> None:
    lab.service.settings.decline_next = 2
    lab.service.settings.pending_polls = 1
    headers = lab.bearer()
    rest_id = lab.enroll_rest(make_csr(keys.rsa2048, "no.example.com")).json()["certId"]
    error(lab.call("GET", f"/api/v1/certificates/{rest_id}", headers=headers), 404, -103)
    body = error(lab.call("GET", f"/api/v1/certificates/{rest_id}", headers=headers), 400,
                 -1112)
    assert "Declined" in body["description"]
    assert lab.service.orders[rest_id].status == "Declined"
    ssl_id = lab.enroll_classic(make_csr(keys.rsa2048, "no2.example.com")).json()["sslId"]
    lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}", headers=lab.classic())
    error(lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}", headers=lab.classic()), 400, -1112)
    details = lab.call("GET", f"/api/ssl/v1/{ssl_id}", headers=lab.classic()).json()
    assert details["status"] == "Declined" and "declined" in details
    error(lab.call("POST", f"/api/ssl/v1/renewById/{ssl_id}", json={}, headers=lab.classic()),
          400, -105)
    # The switch is used up: the next order issues.
    lab.service.settings.pending_polls = 0
    issued_rest(lab, make_csr(keys.rsa2048, "yes.example.com"))


# --- classic API -------------------------------------------------------------------------------

def test_classic_types_fields_organizations(lab: Lab) -> None:
    headers = lab.classic()
    types = lab.call("GET", "/api/ssl/v1/types", headers=headers).json()
    assert {t["id"] for t in types} == {p.id for p in lab.accounts.profiles}
    for item in types:
        assert set(item) == {"id", "name", "description", "terms", "keyTypes",
                             "useSecondaryOrgName"}
        assert item["terms"] == [30, 90, 180, 200]
        # EV offers no P-521 (public CAs under Mozilla's policy do not); DV and OV do.
        curves = ["P-256", "P-384"] + ([] if "EV" in item["name"] else ["P-521"])
        assert item["keyTypes"] == {"RSA": ["2048", "3072", "4096"], "EC": curves}
    same = lab.call("GET", "/api/ssl/v1/types", params={"organizationId": lab.accounts.org_id},
                    headers=headers)
    assert same.json() == types
    error(lab.call("GET", "/api/ssl/v1/types", params={"organizationId": 77}, headers=headers),
          400, -639)
    error(lab.call("GET", "/api/ssl/v1/types", params={"organizationId": "x"}, headers=headers),
          400, -1601)
    assert lab.call("GET", "/api/ssl/v2/types", headers=headers).json() == types
    fields = lab.call("GET", "/api/ssl/v1/customFields", headers=headers).json()
    assert all(set(f) == {"id", "name", "mandatory"} for f in fields)
    assert not any(f["mandatory"] for f in fields)
    orgs = lab.call("GET", "/api/organization/v1", headers=headers).json()
    assert orgs == [{"id": lab.accounts.org_id, "name": lab.accounts.org.name,
                     "departments": [{"id": lab.accounts.department_id,
                                      "parentName": lab.accounts.org.name,
                                      "name": lab.accounts.org.department_name}]}]


def test_classic_enroll_and_every_format(lab: Lab, keys: Keys) -> None:
    csr = make_csr(keys.rsa2048, "formats.example.com")
    response = lab.enroll_classic(csr, "EV", subjAltNames="a.formats.example.com, "
                                  "b.formats.example.com", numberServers=1, serverType=-1,
                                  dcvMode="CNAME", comments="pcm style",
                                  customFields=[{"name": "Change Ticket", "value": "CHG1"}])
    assert response.status_code == 200, response.text
    ids = response.json()
    assert set(ids) == {"sslId", "renewId"}
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", ids["renewId"])
    ssl_id = ids["sslId"]
    headers = lab.classic()

    default = lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}", headers=headers)
    assert default.status_code == 200
    assert default.headers["Content-Type"] == "application/octet-stream;charset=UTF-8"
    assert default.headers["Content-Disposition"].startswith("attachment; filename=")
    assert default.text.startswith("-----BEGIN PKCS7-----")
    p7 = pkcs7.load_pem_pkcs7_certificates(default.content)
    leaf = next(c for c in p7 if c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
                == "formats.example.com")
    assert same_key(leaf, keys.rsa2048)
    assert san_names(leaf) == ["formats.example.com", "a.formats.example.com",
                               "b.formats.example.com"]
    chain = [leaf] + [c for c in reversed(p7) if c != leaf]  # p7 is root first
    verify_chain(chain)
    assert len(chain) == 4
    serials = [c.serial_number for c in chain]  # leaf, issuer, upper intermediate, root
    expected = {
        "x509": serials[::-1], "x509R": serials, "pem": serials, "x509CO": serials[:1],
        "pemco": serials[:1], "x509IO": serials[1:][::-1], "x509IOR": serials[1:],
        "pemia": serials[:3],
    }
    for fmt, order in expected.items():
        by_path = lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/{fmt}", headers=headers)
        by_query = lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}", params={"format": fmt},
                            headers=headers)
        assert by_path.status_code == by_query.status_code == 200
        assert by_path.content == by_query.content
        assert [c.serial_number for c in pem_certs(by_path.text)] == order, fmt
    binary = lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/bin", headers=headers)
    assert {c.serial_number for c in pkcs7.load_der_pkcs7_certificates(binary.content)} == \
        set(serials)
    assert set(CLASSIC_FORMATS) == set(expected) | {"base64", "bin"}
    error(lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509co", headers=headers), 400, -126)
    error(lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}", params={"format": "pkcs12"},
                   headers=headers), 400, -126)
    error(lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509", params={"format": "x509"},
                   headers=headers), 400, -1601)
    error(lab.call("GET", f"/api/ssl/v1/collect/{ssl_id + 10**6}/x509", headers=headers),
          404, -5101)


def test_classic_enroll_accepts_bare_base64_and_department(lab: Lab, keys: Keys) -> None:
    b64 = csr_b64(make_csr(keys.ec256, "bare.example.com"))
    wrapped = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    response = lab.enroll_classic(make_csr(keys.ec256, "x.example.com"), csr=wrapped,
                                  orgId=lab.accounts.department_id, term=None)
    assert response.status_code == 200, response.text
    order = lab.service.orders[response.json()["sslId"]]
    assert (order.common_name, order.org_id, order.term) == (
        "bare.example.com", lab.accounts.department_id, 200)


@pytest.mark.parametrize("change,code", [
    ({"orgId": None}, -7), ({"orgId": 999}, -639), ({"orgId": "1001"}, -1002),
    ({"certType": None}, -7), ({"certType": 999}, -39), ({"certType": True}, -1002),
    ({"term": 365}, -36), ({"subjAltNames": ["a.example.com"]}, -1002), ({"csr": None}, -7),
    ({"csr": "@@@ not a csr @@@"}, -9), ({"csr": "QUJD\nREVG"}, -10),
    ({"csr": "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----"}, -9),
    ({"customFields": {"Cost Center": "1"}}, -1002), ({"customFields": [{"name": "x"}]}, -1002),
    ({"customFields": [{"name": "Unknown", "value": "1"}]}, -135),
    ({"dcvMode": "FAX"}, -1601), ({"externalRequester": 5}, -1002),
    ({"subjAltNames": "ok.example.com,-bad-.example.com"}, -732),
    ({"subjAltNames": "192.168.1.1"}, -62),
])
def test_classic_enroll_errors(lab: Lab, keys: Keys, change: Dict[str, Any], code: int) -> None:
    before = len(lab.service.order_log)
    response = lab.enroll_classic(make_csr(keys.rsa2048, "cerr.example.com"), **change)
    if None in change.values():
        body = {"orgId": lab.accounts.org_id,
                "csr": csr_pem(make_csr(keys.rsa2048, "cerr.example.com")),
                "certType": lab.profile("DV"), "term": 90}
        body.update(change)
        body = {k: v for k, v in body.items() if v is not None}
        response = lab.call("POST", "/api/ssl/v1/enroll", json=body, headers=lab.classic())
    error(response, 400, code)
    assert len(lab.service.order_log) == before


@pytest.mark.parametrize("style,expected", [
    ("rotate", [(400, 0, "Being processed by Sectigo"),
                (404, -1400, "The request is being processed by Sectigo."),
                (400, -183, "Certificate is not collectable.")]),
    ("code0", [(400, 0, "Being processed by Sectigo")] * 3),
    ("-1400", [(404, -1400, "The request is being processed by Sectigo.")] * 3),
    ("-183", [(400, -183, "Certificate is not collectable.")] * 3),
])
def test_classic_pending_styles(lab: Lab, keys: Keys, style: str,
                                expected: List[Tuple[int, int, str]]) -> None:
    lab.service.settings.pending_polls = 3
    lab.service.settings.pending_style = style
    ssl_id = lab.enroll_classic(make_csr(keys.rsa2048, "wait.example.com")).json()["sslId"]
    headers = lab.classic()
    seen = []
    for _ in range(3):
        answer = lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509CO", headers=headers)
        seen.append((answer.status_code, answer.json()["code"], answer.json()["description"]))
        # details do not make time pass
        assert lab.call("GET", f"/api/ssl/v1/{ssl_id}",
                        headers=headers).json()["status"] == "Requested"
    assert seen == expected
    answer = lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509CO", headers=headers)
    assert answer.status_code == 200
    assert same_key(pem_certs(answer.text)[0], keys.rsa2048)


def test_classic_details(lab: Lab, keys: Keys) -> None:
    lab.service.settings.pending_polls = 1
    ids = lab.enroll_classic(make_csr(keys.ec384, "details.example.com"), "OV", term=180,
                             subjAltNames="www.details.example.com").json()
    ssl_id = ids["sslId"]
    headers = lab.classic()
    details = lab.call("GET", f"/api/ssl/v1/{ssl_id}", headers=headers).json()
    assert details["status"] == "Requested" and "expires" not in details
    assert re.fullmatch(r"\d\d/\d\d/\d{4}", details["requested"])
    lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}", headers=headers)
    collected = lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509CO", headers=headers)
    leaf = pem_certs(collected.text)[0]
    details = lab.call("GET", f"/api/ssl/v1/{ssl_id}", headers=headers).json()
    expires = leaf.not_valid_after_utc
    assert details["status"] == "Issued"
    assert details["expires"] == expires.strftime("%m/%d/%Y")
    assert details["sslId"] == details["id"] == ssl_id
    assert details["commonName"] == "details.example.com"
    assert details["subjectAlternativeNames"] == ["details.example.com",
                                                  "www.details.example.com"]
    assert details["keyType"] == "EC - P-384" and details["term"] == 180
    assert details["certType"]["id"] == lab.profile("OV")
    assert details["orgId"] == lab.accounts.org_id and details["renewed"] is False
    assert int(details["serialNumber"].replace(":", ""), 16) == leaf.serial_number
    for fmt, pattern in (("ISO", "%Y-%m-%d"), ("US", "%m/%d/%Y"), ("EU", "%d.%m.%Y"),
                         ("UK", "%d/%m/%Y"), ("JP", "%Y/%m/%d"),
                         ("ISO_HMS", "%Y-%m-%d %H:%M:%S"), ("yyyy-MM-dd'T'HH:mm:ss",
                                                            "%Y-%m-%dT%H:%M:%S")):
        got = lab.call("GET", f"/api/ssl/v1/{ssl_id}", params={"dateFormat": fmt},
                       headers=headers).json()
        assert got["expires"] == expires.strftime(pattern), fmt
    error(lab.call("GET", f"/api/ssl/v1/{ssl_id}", params={"dateFormat": "%Y"},
                   headers=headers), 400, -1601)
    error(lab.call("GET", f"/api/ssl/v1/{ssl_id + 10**6}", headers=headers), 404, -5101)


def test_classic_list_and_count(lab: Lab, keys: Keys) -> None:
    headers = lab.classic()
    made = []
    for i in range(5):
        made.append(lab.enroll_classic(make_csr(keys.ec256, "list.example.org"),
                                       subjAltNames=f"n{i}.example.org").json()["sslId"])
    lab.call("GET", f"/api/ssl/v1/collect/{made[0]}", headers=headers)
    everything = lab.call("GET", "/api/ssl/v1", params={"commonName": "LIST.example.org",
                                                        "size": 200}, headers=headers)
    assert everything.status_code == 200
    assert everything.headers["X-Total-Count"] == "5"
    assert [item["sslId"] for item in everything.json()] == sorted(made)
    page = lab.call("GET", "/api/ssl/v1", params={"commonName": "list.example.org", "size": 2,
                                                  "position": 4}, headers=headers)
    assert page.headers["X-Total-Count"] == "5" and len(page.json()) == 1
    issued = lab.call("GET", "/api/ssl/v1", params={"commonName": "list.example.org",
                                                    "status": "Issued"}, headers=headers)
    assert [item["sslId"] for item in issued.json()] == [made[0]]
    assert "serialNumber" in issued.json()[0]
    san = lab.call("GET", "/api/ssl/v1", params={"subjectAlternativeName": "n3.example.org"},
                   headers=headers)
    assert [item["sslId"] for item in san.json()] == [made[3]]
    head = lab.call("HEAD", "/api/ssl/v1", params={"commonName": "list.example.org"},
                    headers=headers)
    assert head.status_code == 200 and head.headers["X-Total-Count"] == "5"
    assert head.content == b""
    default_size = lab.call("GET", "/api/ssl/v1", headers=headers)
    assert len(default_size.json()) == min(10, int(default_size.headers["X-Total-Count"]))
    error(lab.call("GET", "/api/ssl/v1", params={"size": "-1"}, headers=headers), 400, -1601)
    error(lab.call("GET", "/api/ssl/v1", params={"position": "x"}, headers=headers), 400, -1601)


def test_classic_renew_by_id(lab: Lab, keys: Keys) -> None:
    ids, _ = issued_classic(lab, make_csr(keys.rsa2048, "rbi.example.com"), "OV",
                            subjAltNames="x.rbi.example.com")
    ssl_id = ids["sslId"]
    headers = lab.classic()
    path = f"/api/ssl/v1/renewById/{ssl_id}"
    before = len(lab.service.order_log)
    # The python-cert_manager pitfall (issue #220): a JSON string body, or no body at all.
    error(lab.call("POST", path, json="", headers=headers), 400, -1002)
    error(lab.call("POST", path, headers=headers), 400, -1002)
    assert len(lab.service.order_log) == before
    response = lab.call("POST", path, json={}, headers=headers)
    assert response.status_code == 200
    new_id = response.json()["sslId"]
    assert set(response.json()) == {"sslId"}
    entry = lab.service.order_log[-1]
    assert (entry["api"], entry["op"], entry["id"], entry["renew_of"], entry["client"]) == (
        "classic", "renew", new_id, ssl_id, lab.accounts.login)
    details = lab.call("GET", f"/api/ssl/v1/{ssl_id}", headers=headers).json()
    assert details["renewed"] is True and details["status"] == "Issued"
    assert "renewedDate" in details
    collected = lab.call("GET", f"/api/ssl/v1/collect/{new_id}/x509CO", headers=headers)
    leaf = pem_certs(collected.text)[0]
    assert same_key(leaf, keys.rsa2048)
    assert san_names(leaf) == ["rbi.example.com", "x.rbi.example.com"]
    # With a CSR: the new key, the old names.
    response = lab.call("POST", f"/api/ssl/v1/renewById/{new_id}", headers=headers,
                        json={"csr": csr_pem(make_csr(keys.rsa2048b, "other.example.com")),
                              "dcvMode": "EMAIL", "dcvEmail": "admin@example.com"})
    third = response.json()["sslId"]
    collected = lab.call("GET", f"/api/ssl/v1/collect/{third}/x509CO", headers=headers)
    leaf = pem_certs(collected.text)[0]
    assert same_key(leaf, keys.rsa2048b)
    assert san_names(leaf) == ["rbi.example.com", "x.rbi.example.com"]
    # Not issued yet -> -105.
    lab.service.settings.pending_polls = 1
    pending = lab.enroll_classic(make_csr(keys.rsa2048, "rbp.example.com")).json()["sslId"]
    error(lab.call("POST", f"/api/ssl/v1/renewById/{pending}", json={}, headers=headers),
          400, -105)
    error(lab.call("POST", f"/api/ssl/v1/renewById/{pending + 10**6}", json={},
                   headers=headers), 404, -5101)


def test_classic_renew_by_renew_id(lab: Lab, keys: Keys) -> None:
    ids, _ = issued_classic(lab, make_csr(keys.rsa2048, "rri.example.com"))
    headers = lab.classic()
    before = set(lab.service.orders)
    response = lab.call("POST", f"/api/ssl/v1/renew/{ids['renewId']}", json={},
                        headers=headers)
    assert response.status_code == 204 and response.content == b""
    (new_id,) = set(lab.service.orders) - before
    assert lab.service.orders[new_id].renew_of == ids["sslId"]
    entry = lab.service.order_log[-1]
    assert (entry["op"], entry["id"], entry["renew_of"]) == ("renew", new_id, ids["sslId"])
    listed = lab.call("GET", "/api/ssl/v1", params={"commonName": "rri.example.com"},
                      headers=headers)
    assert new_id in [item["sslId"] for item in listed.json()]
    error(lab.call("POST", "/api/ssl/v1/renew/NoSuchRenewId000000", json={}, headers=headers),
          404, -123)
    error(lab.call("POST", f"/api/ssl/v1/renew/{ids['renewId']}", json=[], headers=headers),
          400, -1002)


def test_classic_revoke_and_replace(lab: Lab, keys: Keys) -> None:
    ids, first = issued_classic(lab, make_csr(keys.rsa2048, "rr.example.com"),
                                subjAltNames="a.rr.example.com")
    ssl_id = ids["sslId"]
    headers = lab.classic()
    billed = len(lab.service.order_log)

    # Replace: same id, new key and names, pending again, not billed.
    lab.service.settings.pending_polls = 1
    replace = {"csr": csr_pem(make_csr(keys.ec256, "rr.example.com")), "reason": "new key",
               "commonName": "rr.example.com",
               "subjectAlternativeNames": ["b.rr.example.com"]}
    error(lab.call("POST", f"/api/ssl/v1/replace/{ssl_id}", headers=headers,
                   json=dict(replace, subjectAlternativeNames="b.rr.example.com")), 400, -1002)
    error(lab.call("POST", f"/api/ssl/v1/replace/{ssl_id}", headers=headers,
                   json=dict(replace, reason="")), 400, -7)
    error(lab.call("POST", f"/api/ssl/v1/replace/{ssl_id}", headers=headers,
                   json=dict(replace, csr=None)), 400, -7)
    response = lab.call("POST", f"/api/ssl/v1/replace/{ssl_id}", json=replace, headers=headers)
    assert response.status_code == 204
    assert len(lab.service.order_log) == billed
    error(lab.call("POST", f"/api/ssl/v1/replace/{ssl_id}", json=replace, headers=headers),
          400, -130)
    assert lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509CO",
                    headers=headers).status_code == 400
    collected = lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509CO", headers=headers)
    leaf = pem_certs(collected.text)[0]
    assert same_key(leaf, keys.ec256) and leaf.serial_number != first[0].serial_number
    assert san_names(leaf) == ["rr.example.com", "b.rr.example.com"]
    assert "replaced" in lab.call("GET", f"/api/ssl/v1/{ssl_id}", headers=headers).json()

    # Revoke.
    path = f"/api/ssl/v1/revoke/{ssl_id}"
    error(lab.call("POST", path, json={}, headers=headers), 400, -7)
    response = lab.call("POST", path, json={"reason": "key compromise", "reasonCode": 1},
                        headers=headers)
    assert response.status_code == 204
    error(lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509", headers=headers), 400, -110)
    error(lab.call("POST", path, json={"reason": "again"}, headers=headers), 400, -159)
    details = lab.call("GET", f"/api/ssl/v1/{ssl_id}", headers=headers).json()
    assert details["status"] == "Revoked" and details["reasonCode"] == 1
    error(lab.call("POST", f"/api/ssl/v1/replace/{ssl_id}", json=replace, headers=headers),
          400, -130)
    # A revoked certificate can be renewed.
    response = lab.call("POST", f"/api/ssl/v1/renewById/{ssl_id}", json={}, headers=headers)
    assert response.status_code == 200
    pending = lab.enroll_classic(make_csr(keys.rsa2048, "rv.example.com")).json()["sslId"]
    error(lab.call("POST", f"/api/ssl/v1/revoke/{pending}", json={"reason": "x"},
                   headers=headers), 400, -102)


# --- authentication styles -------------------------------------------------------------------

def _client_cert_files(lab: Lab, login: str, name: str,
                       tls: Optional[pki.TlsHierarchy] = None) -> Tuple[str, str]:
    cert, key = (tls or lab.tls).client_certificate(login)
    crt_path = os.path.join(lab.directory, f"{name}.crt")
    key_path = os.path.join(lab.directory, f"{name}.key")
    with open(crt_path, "w", encoding="ascii") as handle:
        handle.write(pki.cert_pem(cert))
    with open(key_path, "wb") as handle:
        handle.write(pki.key_pem(key))
    return crt_path, key_path


def test_classic_auth_styles(lab: Lab) -> None:
    ident = {"login": lab.accounts.login, "customerUri": lab.accounts.customer_uri}
    cert = _client_cert_files(lab, lab.accounts.login, "client")
    wrong_cn = _client_cert_files(lab, "somebody_else", "client-other")

    def status(path: str, headers: Dict[str, str], **kwargs: Any) -> int:
        response = lab.call("GET", path, headers=headers, **kwargs)
        if response.status_code == 401:
            error(response, 401, -16)
            assert response.headers["WWW-Authenticate"].startswith(
                'Bearer authorization_uri="')
        return response.status_code

    assert status("/api/ssl/v1/types", lab.classic()) == 200
    assert status("/api/ssl/v1/types", dict(lab.classic(), password="wrong")) == 401
    assert status("/api/ssl/v1/types", dict(lab.classic(), customerUri="other")) == 401
    assert status("/api/ssl/v1/types", dict(lab.classic(), login="other")) == 401
    assert status("/api/ssl/v1/types", {}) == 401
    assert status("/api/ssl/v1/types", lab.bearer()) == 200
    # A bad bearer token is not rescued by a good password.
    assert status("/api/ssl/v1/types", dict(lab.classic(), Authorization="Bearer nope")) == 401
    assert status("/private/api/ssl/v1/types", ident, cert=cert) == 200
    assert status("/private/api/organization/v1", ident, cert=cert) == 200
    # A certificate is only good under /private, and /private wants a certificate.
    assert status("/api/ssl/v1/types", ident, cert=cert) == 401
    assert status("/private/api/ssl/v1/types", lab.classic()) == 401
    assert status("/private/api/ssl/v1/types", lab.bearer()) == 401
    assert status("/private/api/ssl/v1/types", ident, cert=wrong_cn) == 401
    assert status("/private/api/ssl/v1/types", dict(ident, customerUri="x"), cert=cert) == 401
    # The Enrollment API is not under /private.
    assert lab.call("GET", "/private/api/v1/certificates/1", headers=ident,
                    cert=cert).status_code == 404
    # A certificate from another CA does not even get through the TLS handshake.
    foreign = _client_cert_files(lab, lab.accounts.login, "client-foreign",
                                 tls=pki.TlsHierarchy.create())
    with pytest.raises(requests.exceptions.SSLError):
        lab.call("GET", "/private/api/ssl/v1/types", headers=ident, cert=foreign)
    auths = {e.get("auth") for e in lab.endpoint.log.entries}
    assert {"password", "bearer", "cert", "none"} <= auths


def test_client_cert_enroll_on_private(lab: Lab, keys: Keys) -> None:
    ident = {"login": lab.accounts.login, "customerUri": lab.accounts.customer_uri}
    cert = _client_cert_files(lab, lab.accounts.login, "client2")
    body = {"orgId": lab.accounts.org_id, "certType": lab.profile("DV"), "term": 30,
            "csr": csr_pem(make_csr(keys.rsa2048, "private.example.com"))}
    response = lab.call("POST", "/private/api/ssl/v1/enroll", json=body, headers=ident,
                        cert=cert)
    assert response.status_code == 200, response.text
    ssl_id = response.json()["sslId"]
    collected = lab.call("GET", f"/private/api/ssl/v1/collect/{ssl_id}/x509CO", headers=ident,
                         cert=cert)
    assert collected.status_code == 200
    assert lab.service.order_log[-1]["client"] == lab.accounts.login


# --- lab controls --------------------------------------------------------------------------

def test_control_actions(lab: Lab, keys: Keys) -> None:
    lab.service.settings.pending_polls = 5
    ssl_id = lab.enroll_classic(make_csr(keys.rsa2048, "ctl.example.com")).json()["sslId"]
    result = lab.control("POST", "action/issue_now", {"id": ssl_id})
    assert result.status_code == 200 and result.json()["result"]["status"] == "Issued"
    assert lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509",
                    headers=lab.classic()).status_code == 200
    assert lab.control("POST", "action/issue_now", {"id": ssl_id}).status_code == 400
    result = lab.control("POST", "action/revoke", {"id": ssl_id})
    assert result.json()["result"]["status"] == "Revoked"
    error(lab.call("GET", f"/api/ssl/v1/collect/{ssl_id}/x509", headers=lab.classic()),
          400, -110)
    other = lab.enroll_classic(make_csr(keys.rsa2048, "ctl2.example.com")).json()["sslId"]
    assert lab.control("POST", "action/decline", {"id": other}).json()["result"]["status"] == \
        "Declined"
    third = lab.enroll_classic(make_csr(keys.rsa2048, "ctl3.example.com")).json()["sslId"]
    lab.control("POST", "action/issue_now", {"id": third})
    assert lab.control("POST", "action/expire", {"id": third}).json()["result"]["status"] == \
        "Expired"
    details = lab.call("GET", f"/api/ssl/v1/{third}", headers=lab.classic()).json()
    assert details["status"] == "Expired"
    orders = lab.control("POST", "action/orders").json()["result"]
    assert {o["id"] for o in orders} >= {ssl_id, other, third}
    assert lab.control("POST", "action/revoke", {"id": 1}).status_code == 400
    assert lab.control("POST", "action/revoke", {}).status_code == 400
    assert lab.control("POST", "action/explode", {}).status_code == 400
    assert lab.call("POST", "/_lab/action/expire_tokens").status_code == 403


@pytest.mark.parametrize("mode", BAD_ISSUANCE_MODES)
def test_bad_issuance(lab: Lab, keys: Keys, mode: str) -> None:
    lab.service.settings.bad_issuance = mode
    lab.service.settings.bad_issuance_count = 1
    csr = make_csr(keys.rsa2048, "bad.example.com")
    cert_id, certs = issued_rest(lab, csr, "OV", subjAltNames=["alt.bad.example.com"])
    leaf, issuer = certs[0], certs[1]
    now = pki.utcnow()
    assert lab.service.orders[cert_id].defect == mode
    if mode == "wrong_key":
        assert not same_key(leaf, keys.rsa2048)
        assert pki.key_family(leaf.public_key()) == "RSA"
        leaf.verify_directly_issued_by(issuer)
    elif mode == "missing_names":
        assert san_names(leaf) == ["bad.example.com"]
    elif mode == "broken_chain":
        assert leaf.issuer == issuer.subject
        with pytest.raises(InvalidSignature):
            leaf.verify_directly_issued_by(issuer)
        verify_chain(certs[1:])
    elif mode == "expired":
        assert leaf.not_valid_after_utc < now
        details = lab.call("GET", f"/api/ssl/v1/{cert_id}", headers=lab.classic()).json()
        assert details["status"] == "Expired"
    elif mode == "not_yet_valid":
        assert leaf.not_valid_before_utc > now
    if mode != "broken_chain":
        verify_chain(certs)
    assert lab.service.settings.bad_issuance_count == 0
    # The switch is used up: the next certificate is sound.
    _, good = issued_rest(lab, csr, "OV", subjAltNames=["alt.bad.example.com"])
    verify_chain(good)
    assert same_key(good[0], keys.rsa2048)
    assert san_names(good[0]) == ["bad.example.com", "alt.bad.example.com"]
    assert good[0].not_valid_before_utc <= now <= good[0].not_valid_after_utc


def test_dcv_restriction(lab: Lab, keys: Keys) -> None:
    lab.service.settings.validated_domains = ["example.com", "8.8.8.8"]
    assert lab.enroll_rest(make_csr(keys.rsa2048, "www.example.com"),
                           subjAltNames=["*.example.com", "example.com",
                                         "8.8.8.8"]).status_code == 200
    body = error(lab.enroll_rest(make_csr(keys.rsa2048, "www.example.net")), 400, -737)
    assert "www.example.net" in body["description"]
    body = error(lab.enroll_rest(make_csr(keys.rsa2048, "www.example.com"),
                                 subjAltNames=["evil-example.com", "8.8.4.4"]), 400, -737)
    assert "evil-example.com" in body["description"] and "8.8.4.4" in body["description"]
    error(lab.enroll_classic(make_csr(keys.rsa2048, "a.example.com"),
                             subjAltNames="b.example.org"), 400, -737)


# --- faults, routing, robustness -------------------------------------------------------------

def test_injected_429_reaches_the_client(lab: Lab, keys: Keys) -> None:
    lab.endpoint.faults.add(FaultRule(kind="status", status=429, retry_after=2,
                                      match="POST /api/v1/certificates", count=1))
    headers = lab.bearer()
    response = lab.enroll_rest(make_csr(keys.rsa2048, "busy.example.com"), headers=headers)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["code"] == -2 and response.json()["description"]
    assert lab.enroll_rest(make_csr(keys.rsa2048, "busy.example.com"),
                           headers=headers).status_code == 200
    lab.endpoint.faults.add(FaultRule(kind="status", status=503, match="/collect/", count=1))
    error(lab.call("GET", "/api/ssl/v1/collect/1", headers=lab.classic()), 503, -2)


def test_unknown_routes_and_methods(lab: Lab) -> None:
    headers = lab.classic()
    for path in ("/", "/api", "/api/ssl/v1/types/", "/api/ssl/v3/types", "/api//ssl/v1/types",
                 "/private/api/v1/certificates", "/api/v2/certificates", "/favicon.ico"):
        error(lab.call("GET", path, headers=headers), 404, -1)
    response = lab.call("GET", "/api/ssl/v1/enroll", headers=headers)
    error(response, 405, -1)
    assert response.headers["Allow"] == "POST"
    error(lab.call("DELETE", "/api/v1/certificates", headers=headers), 405, -1)
    error(lab.call("PUT", "/api/ssl/v1/types", headers=headers), 405, -1)
    error(lab.call("POST", "/api/ssl/v1/123", json={}, headers=headers), 405, -1)
    # 404/405 are decided before authentication.
    error(lab.call("GET", "/api/nothing/here"), 404, -1)


def test_concurrent_orders(lab: Lab, keys: Keys) -> None:
    token_headers = lab.bearer()
    results: List[Tuple[int, int]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with requests.Session() as session:
            for _ in range(3):
                body = {"csr": csr_b64(make_csr(keys.ec256, f"c{n}.example.com")),
                        "profileId": lab.profile("DV")}
                response = session.post(lab.url + "/api/v1/certificates", json=body,
                                        headers=token_headers, verify=lab.ca, timeout=30)
                cert_id = response.json()["certId"]
                download = session.get(f"{lab.url}/api/v1/certificates/{cert_id}",
                                       headers=token_headers, verify=lab.ca, timeout=30)
                with lock:
                    results.append((cert_id, download.status_code))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 18
    assert len({cert_id for cert_id, _ in results}) == 18
    assert all(status == 200 for _, status in results)


def _check_shape(response: requests.Response, what: str) -> None:
    assert response.status_code != 500 and response.status_code < 600, what
    if response.status_code in (200, 204):
        return
    body = response.json()
    if response.url.endswith(TOKEN_PATH):
        assert isinstance(body.get("error"), str) and isinstance(
            body.get("error_description"), str), what
        return
    assert set(body) <= {"code", "description", "details"}, (what, body)
    assert isinstance(body["code"], int) and body["code"] <= 0, (what, body)
    assert isinstance(body["description"], str) and body["description"], (what, body)


def test_fuzz_every_route(lab: Lab, keys: Keys) -> None:
    ids, _ = issued_classic(lab, make_csr(keys.rsa2048, "fuzz.example.com"))
    good_id, renew_id = ids["sslId"], ids["renewId"]
    rest_csr = csr_b64(make_csr(keys.rsa2048, "fuzz.example.com"))
    pem = csr_pem(make_csr(keys.rsa2048, "fuzz.example.com"))
    bearer = lab.bearer()
    classic = lab.classic()
    bad_ids = ["abc", "-1", "0", "99999999999999999999", "1e3", "%2e%2e", "x" * 3000,
               str(good_id + 10**6)]
    bad_values: List[Any] = [None, True, 1.5, -1, 2 ** 63, "", "x" * 100000, [], {},
                             ["x"] * 500, {"a": {"b": {"c": []}}}, "\u0000\ud7ff\u202e"]
    raw_bodies = [b"", b"garbage", b"[]", b'""', b"null", b"{", b"[" * 50000,
                  b'{"a": NaN}', b"\xff\xfe\x00", b'{"csr": "' + b"A" * 40000 + b'"}']
    json_routes: List[Tuple[str, Dict[str, Any], Dict[str, str]]] = [
        ("/api/v1/certificates", {"csr": rest_csr, "profileId": lab.profile("DV"), "term": 90,
                                  "subjAltNames": ["a.example.com"], "comments": "c",
                                  "externalRequester": "a@example.com",
                                  "customFields": {"Cost Center": "1"}, "dcvMode": "CNAME"},
         bearer),
        (f"/api/v1/certificates/{good_id}/renew", {"csr": rest_csr, "term": 90,
                                                   "profileId": lab.profile("DV"),
                                                   "subjAltNames": ["a.example.com"]}, bearer),
        (f"/api/v1/certificates/{good_id}/revoke", {"reason": "r", "reasonCode": 0}, bearer),
        ("/api/ssl/v1/enroll", {"orgId": lab.accounts.org_id, "csr": pem, "term": 90,
                                "certType": lab.profile("DV"), "subjAltNames": "a.example.com",
                                "customFields": [{"name": "Cost Center", "value": "1"}],
                                "externalRequester": "a@example.com", "comments": "c",
                                "dcvMode": "CNAME"}, classic),
        (f"/api/ssl/v1/renewById/{good_id}", {"csr": pem, "dcvMode": "CNAME",
                                              "dcvEmail": "a@example.com"}, classic),
        (f"/api/ssl/v1/renew/{renew_id}", {"csr": pem}, classic),
        (f"/api/ssl/v1/replace/{good_id}", {"csr": pem, "reason": "r", "commonName": "a.b.com",
                                            "subjectAlternativeNames": ["a.b.com"]}, classic),
        (f"/api/ssl/v1/revoke/{good_id}", {"reason": "r", "reasonCode": 1}, classic),
    ]
    count = 0
    for path, base, headers in json_routes:
        for name in base:
            for value in bad_values:
                body = dict(base)
                body[name] = value
                _check_shape(lab.call("POST", path, json=body, headers=headers),
                             f"{path} {name}={str(value)[:30]}")
                count += 1
            missing = {k: v for k, v in base.items() if k != name}
            _check_shape(lab.call("POST", path, json=missing, headers=headers), path)
        for raw in raw_bodies:
            _check_shape(lab.call("POST", path, data=raw, headers=dict(
                headers, **{"Content-Type": "application/json"})), f"{path} {raw[:20]!r}")
            _check_shape(lab.call("POST", path, data=raw, headers=headers), path)
        _check_shape(lab.call("POST", path, json=base), f"{path} without auth")
        _check_shape(lab.call("GET", path, headers=headers), f"GET {path}")
        count += len(raw_bodies) * 2 + 2
    id_routes = [("GET", "/api/v1/certificates/{}", bearer), ("GET", "/api/ssl/v1/{}", classic),
                 ("GET", "/api/ssl/v1/collect/{}", classic),
                 ("GET", "/api/ssl/v1/collect/{}/x509", classic),
                 ("POST", "/api/v1/certificates/{}/renew", bearer),
                 ("POST", "/api/v1/certificates/{}/revoke", bearer),
                 ("POST", "/api/ssl/v1/renewById/{}", classic),
                 ("POST", "/api/ssl/v1/renew/{}", classic),
                 ("POST", "/api/ssl/v1/revoke/{}", classic),
                 ("POST", "/api/ssl/v1/replace/{}", classic)]
    for method, template, headers in id_routes:
        for bad in bad_ids:
            kwargs: Dict[str, Any] = {"json": {"reason": "r"}} if method == "POST" else {}
            _check_shape(lab.call(method, template.format(bad), headers=headers, **kwargs),
                         f"{method} {template} {bad[:20]}")
            count += 1
    queries = [("/api/ssl/v1", {"size": v, "position": v, "status": v, "orgId": v,
                                "sslTypeId": v, "commonName": v, "serialNumber": v})
               for v in ("-1", "abc", "9" * 30, "", "\u00e9")]
    queries += [(f"/api/ssl/v1/{good_id}", {"dateFormat": v})
                for v in ("", "yyyy", "Q", "%s", "x" * 5000, "yyyy-MM-ddTHH")]
    queries += [(f"/api/ssl/v1/collect/{good_id}", {"format": v})
                for v in ("", "X509", "../../etc", "x" * 5000)]
    queries += [(f"/api/v1/certificates/{good_id}", {"format": v}) for v in ("", "zip", "-1")]
    queries += [("/api/ssl/v1/types", {"organizationId": v}) for v in ("-1", "x", "9" * 30)]
    for path, params in queries:
        headers = bearer if path.startswith("/api/v1") else classic
        _check_shape(lab.call("GET", path, params=params, headers=headers), f"{path} {params}")
        _check_shape(lab.call("GET", path, params=[(k, v) for k, v in params.items()] * 2,
                              headers=headers), f"{path} repeated")
        count += 2
    for form in ({"grant_type": "x" * 100000}, {"client_id": ""}, {},
                 {"grant_type": ["a", "b"]}):
        _check_shape(lab.call("POST", TOKEN_PATH, data=form), f"token {str(form)[:30]}")
    _check_shape(lab.call("POST", TOKEN_PATH, data=b"\xff\xfe", headers={
        "Content-Type": "application/x-www-form-urlencoded"}), "token bytes")
    for method in ("GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        for path in ("/api/ssl/v1/enroll", "/api/v1/certificates", TOKEN_PATH, "/nope"):
            response = lab.call(method, path, headers=classic)
            assert response.status_code != 500
            # server.py answers OPTIONS itself (501) before any service sees the request.
            if method not in ("HEAD", "OPTIONS"):
                _check_shape(response, f"{method} {path}")
    for header in ({"Authorization": "Bearer " + "x" * 5000}, {"Authorization": "Bearer"},
                   {"Authorization": "bearer  "}, {"login": "\u00e9", "password": "x",
                                                   "customerUri": "x"}):
        _check_shape(lab.call("GET", "/api/ssl/v1/types", headers=header), str(header)[:30])
    assert count > 500
    assert lab.endpoint.internal_errors == 0


# --- logs ----------------------------------------------------------------------------------

def test_order_log_and_no_secrets_in_logs(lab: Lab, keys: Keys) -> None:
    cert = _client_cert_files(lab, lab.accounts.login, "client3")
    csr = make_csr(keys.ec384, "log.example.com")
    # Every kind of billable and non-billable operation, with every kind of credential.
    rest_id, _ = issued_rest(lab, csr, "DV")
    lab.call("POST", f"/api/v1/certificates/{rest_id}/renew", json={}, headers=lab.bearer())
    ids, _ = issued_classic(lab, csr, "OV")
    lab.call("POST", f"/api/ssl/v1/renewById/{ids['sslId']}", json="", headers=lab.classic())
    lab.call("POST", f"/api/ssl/v1/renewById/{ids['sslId']}", json={}, headers=lab.classic())
    lab.call("POST", f"/api/ssl/v1/renew/{ids['renewId']}", json={"csr": csr_pem(csr)},
             headers=lab.classic())
    lab.call("POST", f"/api/ssl/v1/replace/{ids['sslId']}", headers=lab.classic(),
             json={"csr": csr_pem(csr), "reason": "r"})
    lab.call("GET", "/private/api/ssl/v1/types", cert=cert, headers={
        "login": lab.accounts.login, "customerUri": lab.accounts.customer_uri})
    lab.call("POST", TOKEN_PATH, data={"client_id": lab.accounts.client_id,
                                       "client_secret": "wrong " + lab.accounts.password,
                                       "grant_type": "client_credentials"})
    with open(lab.order_log_path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert lines == lab.service.order_log
    mine = [e for e in lines if e["common_name"] == "log.example.com"]
    assert [(e["api"], e["op"]) for e in mine] == [
        ("enrollment", "enroll"), ("enrollment", "renew"), ("classic", "enroll"),
        ("classic", "renew"), ("classic", "renew")]  # replace is not billed
    for entry in mine:
        assert set(entry) == {"ts", "api", "op", "id", "renew_of", "validation", "profile_id",
                              "common_name", "names", "key", "client"}
        assert entry["key"] == "EC-P384"
        assert entry["client"] in (lab.accounts.client_id, lab.accounts.login)
        assert entry["ts"].endswith("Z")
    assert mine[1]["renew_of"] == mine[0]["id"] and mine[0]["renew_of"] is None
    assert mine[2]["validation"] == "OV" and mine[2]["profile_id"] == lab.profile("OV")

    with open(lab.request_log_path, encoding="utf-8") as handle:
        request_log = handle.read()
    with open(lab.order_log_path, encoding="utf-8") as handle:
        order_log = handle.read()
    b64 = csr_b64(csr)
    forbidden = lab.accounts.secret_values() + lab.tokens + [b64[40:80], "BEGIN"]
    assert lab.tokens
    for text in (request_log, order_log):
        for secret in forbidden:
            assert secret not in text
    entries = [json.loads(line) for line in request_log.splitlines()]
    assert {"bearer", "password", "cert", "none", "client_credentials"} <= \
        {e.get("auth") for e in entries}
    assert any(e.get("code") == -1002 for e in entries)
