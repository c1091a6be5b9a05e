"""Fidelity of the emulated SCM: independent, unmodified clients must work against it.

* python-cert_manager 4.0.0 (PyPI `cert_manager`, BSD-3-Clause), the open client of the classic
  API, used exactly as its README shows (password, client-certificate and OAuth logins);
* plain `requests`, walking the Enrollment API's OAuth discovery (sectigo.md §6.1) from a 401.

cert_manager needs Python >= 3.11; its tests are skipped cleanly where it cannot be imported.
The machine's REQUESTS_CA_BUNDLE would override any `Session.verify`, so for cert_manager (whose
sessions we do not control) the variable is pointed at the lab's CA bundle with monkeypatch;
our own requests pass `verify=` explicitly.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any, List

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from lab import pki
from conftest import ScmLab
from lab.scm import TOKEN_PATH


Lab = ScmLab
pytestmark = pytest.mark.usefixtures("fresh_scm")


@pytest.fixture(scope="module")
def lab(scm_lab: ScmLab) -> ScmLab:
    return scm_lab


@pytest.fixture
def cm(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The cert_manager package, with its HTTPS trusting the lab CA."""
    module = pytest.importorskip("cert_manager", reason="cert_manager needs Python >= 3.11")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", lab.ca)
    return module


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return pki.generate_key("RSA", 2048)


@pytest.fixture(scope="module")
def ec_key() -> Any:
    return pki.generate_key("EC", 384)


def make_csr(key: Any, cn: str) -> x509.CertificateSigningRequest:
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256()))


def pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def same_key(cert: x509.Certificate, key: Any) -> bool:
    return pki.public_der(cert.public_key()) == pki.public_der(key)


def dns_names(cert: x509.Certificate) -> List[str]:
    ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    return list(ext.value.get_values_for_type(x509.DNSName))


def password_client(cm: Any, lab: Lab) -> Any:
    client = cm.Client(base_url=lab.url + "/api", login_uri=lab.accounts.customer_uri,
                       username=lab.accounts.login, password=lab.accounts.password)
    return cm.SSL(client)


# --- python-cert_manager -----------------------------------------------------------------------

def test_cert_manager_enroll_pending_collect(cm: Any, lab: Lab, rsa_key: Any) -> None:
    from cert_manager._helpers import PendingError

    lab.service.settings.pending_polls = 2
    ssl = password_client(cm, lab)
    dv = lab.accounts.profile_for("DV")
    assert ssl.types[dv.name] == {"id": dv.id, "terms": dv.terms}
    assert len(ssl.types) == 3
    result = ssl.enroll(cert_type_name=dv.name, csr=pem(make_csr(rsa_key, "pcm.example.com")),
                        term=90, org_id=lab.accounts.org_id,
                        subject_alt_names=["pcm.example.com", "www.pcm.example.com"])
    assert set(result) == {"sslId", "renewId"}
    ssl_id = result["sslId"]
    for _ in range(2):
        with pytest.raises(PendingError):
            ssl.collect(ssl_id, "x509CO")
    text = ssl.collect(ssl_id, "x509CO")
    (leaf,) = x509.load_pem_x509_certificates(text.encode("ascii"))
    assert same_key(leaf, rsa_key)
    assert dns_names(leaf) == ["pcm.example.com", "www.pcm.example.com"]
    chain = x509.load_pem_x509_certificates(ssl.collect(ssl_id, "x509").encode("ascii"))
    assert chain[-1].serial_number == leaf.serial_number  # x509: root first, leaf last
    details = ssl.get(ssl_id)
    assert details["status"] == "Issued" and details["renewed"] is False
    assert re.fullmatch(r"\d\d/\d\d/\d{4}", details["expires"])
    assert ssl.count(commonName="pcm.example.com") == 1
    assert [item["sslId"] for item in ssl.list(commonName="pcm.example.com")] == [ssl_id]


def test_cert_manager_renew_gets_the_documented_1002(cm: Any, lab: Lab, rsa_key: Any) -> None:
    ssl = password_client(cm, lab)
    ov = lab.accounts.profile_for("OV")
    ssl_id = ssl.enroll(cert_type_name=ov.name, csr=pem(make_csr(rsa_key, "renew.example.com")),
                        term=180, org_id=lab.accounts.org_id)["sslId"]
    ssl.collect(ssl_id, "pem")
    billed = len(lab.service.order_log)
    # cert_manager POSTs the JSON body "" to renewById (python-cert_manager issue #220).
    with pytest.raises(requests.HTTPError) as caught:
        ssl.renew(ssl_id)
    response = caught.value.response
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["description"]) == (-1002, "Cannot parse message body")
    assert len(lab.service.order_log) == billed


def test_cert_manager_replace_and_revoke(cm: Any, lab: Lab, rsa_key: Any, ec_key: Any) -> None:
    from cert_manager._helpers import PendingError

    ssl = password_client(cm, lab)
    dv = lab.accounts.profile_for("DV")
    ssl_id = ssl.enroll(cert_type_name=dv.name, csr=pem(make_csr(rsa_key, "rep.example.com")),
                        term=30, org_id=lab.accounts.org_id)["sslId"]
    ssl.collect(ssl_id, "x509CO")
    assert ssl.replace(cert_id=ssl_id, csr=pem(make_csr(ec_key, "rep.example.com")),
                       common_name="rep.example.com", reason="new key",
                       subject_alt_names="rep.example.com,alt.rep.example.com") == {}
    (leaf,) = x509.load_pem_x509_certificates(ssl.collect(ssl_id, "x509CO").encode("ascii"))
    assert same_key(leaf, ec_key)
    assert dns_names(leaf) == ["rep.example.com", "alt.rep.example.com"]
    assert ssl.revoke(ssl_id, reason="superseded") == {}
    # cert_manager reports every collect error as "pending"; the lab's answer says revoked.
    with pytest.raises(PendingError) as caught:
        ssl.collect(ssl_id, "x509CO")
    assert caught.value.__cause__.response.json()["code"] == -110
    assert ssl.get(ssl_id)["status"] == "Revoked"


def test_cert_manager_custom_fields(cm: Any, lab: Lab, rsa_key: Any) -> None:
    lab.service.settings.mandatory_custom_fields = ["Cost Center"]
    ssl = password_client(cm, lab)
    assert {f["name"]: f["mandatory"] for f in ssl.custom_fields}["Cost Center"] is True
    dv = lab.accounts.profile_for("DV")
    result = ssl.enroll(cert_type_name=dv.name, csr=pem(make_csr(rsa_key, "cf.example.com")),
                        term=90, org_id=lab.accounts.org_id,
                        custom_fields=[{"name": "Cost Center", "value": "4711"}])
    assert lab.service.orders[result["sslId"]].custom_fields == {"Cost Center": "4711"}


def test_cert_manager_oauth_login(cm: Any, lab: Lab, rsa_key: Any) -> None:
    client = cm.Client(client_id=lab.accounts.client_id,
                       client_secret=lab.accounts.client_secret,
                       auth_url=lab.url + TOKEN_PATH, base_url=lab.url + "/api")
    ssl = cm.SSL(client)
    ev = lab.accounts.profile_for("EV")
    ssl_id = ssl.enroll(cert_type_name=ev.name, csr=pem(make_csr(rsa_key, "oauth.example.com")),
                        term=200, org_id=lab.accounts.department_id)["sslId"]
    chain = x509.load_pem_x509_certificates(ssl.collect(ssl_id, "pem").encode("ascii"))
    assert len(chain) == 4 and same_key(chain[0], rsa_key)
    assert lab.service.order_log[-1]["client"] == lab.accounts.client_id


def test_cert_manager_client_certificate(cm: Any, lab: Lab) -> None:
    cert, key = lab.tls.client_certificate(lab.accounts.login)
    crt_path = os.path.join(lab.directory, "pcm-client.crt")
    key_path = os.path.join(lab.directory, "pcm-client.key")
    with open(crt_path, "w", encoding="ascii") as handle:
        handle.write(pki.cert_pem(cert))
    with open(key_path, "wb") as handle:
        handle.write(pki.key_pem(key))
    client = cm.Client(base_url=lab.url + "/private/api", login_uri=lab.accounts.customer_uri,
                       username=lab.accounts.login, cert_auth=True, user_crt_file=crt_path,
                       user_key_file=key_path)
    assert len(cm.SSL(client).types) == 3
    # The same client on /api (no /private) is refused, as cert_manager itself warns.
    client = cm.Client(base_url=lab.url + "/api", login_uri=lab.accounts.customer_uri,
                       username=lab.accounts.login, cert_auth=True, user_crt_file=crt_path,
                       user_key_file=key_path)
    with pytest.raises(requests.HTTPError) as caught:
        cm.SSL(client).types
    assert caught.value.response.status_code == 401


# --- plain requests: OAuth discovery and the Enrollment API -----------------------------------

def test_requests_oauth_discovery_flow(lab: Lab, ec_key: Any) -> None:
    base = lab.url + "/api/v1"
    csr = make_csr(ec_key, "flow.example.com")
    body = {"csr": base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode(),
            "profileId": lab.accounts.profile_for("OV").id,
            "subjAltNames": ["flow.example.com", "www.flow.example.com"]}
    with requests.Session() as session:
        first = session.post(base + "/certificates", json=body, verify=lab.ca, timeout=30)
        assert first.status_code == 401
        challenge = first.headers["WWW-Authenticate"]
        found = re.search(r'authorization_uri="([^"]+)"', challenge)
        assert challenge.startswith("Bearer ") and found
        token = session.post(found.group(1), data={
            "client_id": lab.accounts.client_id, "client_secret": lab.accounts.client_secret,
            "grant_type": "client_credentials"}, verify=lab.ca, timeout=30)
        assert token.status_code == 200
        grant = token.json()
        assert grant["token_type"] == "Bearer" and grant["expires_in"] > 0
        headers = {"Authorization": f"Bearer {grant['access_token']}"}
        enrolled = session.post(base + "/certificates", json=body, headers=headers,
                                verify=lab.ca, timeout=30)
        assert enrolled.status_code == 200
        cert_id = enrolled.json()["certId"]
        download = session.get(f"{base}/certificates/{cert_id}", headers=headers,
                               verify=lab.ca, timeout=30)
    assert download.status_code == 200
    assert download.headers["Content-Type"].startswith("application/octet-stream")
    chain = x509.load_pem_x509_certificates(download.content)
    leaf = chain[0]
    assert same_key(leaf, ec_key)
    assert dns_names(leaf) == ["flow.example.com", "www.flow.example.com"]
    for child, parent in zip(chain, chain[1:]):
        child.verify_directly_issued_by(parent)
    assert chain[-1].subject == chain[-1].issuer
    assert lab.service.order_log[-1]["key"] == "EC-P384"
