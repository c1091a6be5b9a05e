"""The emulated PAN-OS firewall against panos.md: envelopes, codes, certificates, commits."""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from lab import pki
from lab.server import FaultRule

SHARED = "/config/shared/certificate"
PROFILES = "/config/shared/ssl-tls-service-profile"


def generate_cmd(name: str, cn: str = "www.example.com", algo: str = "RSA", bits: int = 2048,
                 extra: str = "") -> str:
    algorithm = (f"<RSA><rsa-nbits>{bits}</rsa-nbits></RSA>" if algo == "RSA"
                 else f"<ECDSA><ecdsa-nbits>{bits}</ecdsa-nbits></ECDSA>")
    return (f"<request><certificate><generate><certificate-name>{name}</certificate-name>"
            f"<name>{cn}</name><algorithm>{algorithm}</algorithm><digest>sha256</digest>"
            f"<signed-by>external</signed-by><ca>no</ca>{extra}</generate></certificate>"
            "</request>")


def export_csr(panos: Any, name: str, **extra: str) -> x509.CertificateSigningRequest:
    status, _, response = panos.call(dict(type="export", category="certificate",
                                          **{"certificate-name": name}, format="pkcs10",
                                          **extra))
    assert status == 200, response.text
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"] == \
        f"attachment; filename={name.lower()}.csr"
    return x509.load_pem_x509_csr(response.content)


@pytest.fixture(scope="module")
def test_ca() -> pki.Authority:
    return pki.make_root("Test Issuing CA", pki.generate_key("EC", 256), "Tests")


def sign(ca: pki.Authority, csr: x509.CertificateSigningRequest, days: int = 90,
         start: int = -1) -> x509.Certificate:
    now = pki.utcnow()
    return pki.issue_leaf(ca, csr.public_key(), csr.subject, ["www.example.com"],
                          now + dt.timedelta(days=start), now + dt.timedelta(days=days))


def import_pem(panos: Any, name: str, pem: str, admin: str = "certbot", **extra: str) -> Any:
    return panos.call(dict(type="import", category="certificate",
                           **{"certificate-name": name}, format="pem", **extra), admin,
                      files={"file": ("cert.pem", pem.encode())})


def commit(panos: Any, admin: str = "certbot", partial: bool = True, **extra: str) -> ET.Element:
    cmd = (f"<commit><partial><admin><member>{admin}</member></admin></partial>"
           "<description>test</description></commit>") if partial else "<commit></commit>"
    params = dict(type="commit", cmd=cmd, **extra)
    if partial:
        params["action"] = "partial"
    _, root, _ = panos.call(params, admin)
    assert root is not None
    return root


def wait_job(panos: Any, job: str, timeout: float = 10) -> ET.Element:
    deadline = time.time() + timeout
    while time.time() < deadline:
        root = panos.op(f"<show><jobs><id>{job}</id></jobs></show>")
        if root.findtext("result/job/status") == "FIN":
            return root
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not finish")


def commit_and_wait(panos: Any, admin: str = "certbot", partial: bool = True) -> ET.Element:
    root = commit(panos, admin, partial)
    assert root.get("status") == "success", ET.tostring(root)
    return wait_job(panos, root.findtext("result/job") or "")


# --- keygen and authentication --------------------------------------------------------------

def test_keygen_quirky_envelope_stable_per_admin(panos: Any) -> None:
    status, root, response = panos.call({"type": "keygen", "user": "certbot",
                                         "password": "certbot-pass"}, admin=None)
    assert status == 200
    assert response.text.startswith("<response status = 'success'><result><key>")
    key = root.findtext("result/key")
    # Only characters that survive pan-python's unencoded key= form parameter.
    assert key and key.startswith("LUFRPT") and re.fullmatch(r"[A-Za-z0-9=]+", key)
    _, again, _ = panos.call({"type": "keygen", "user": "certbot", "password": "certbot-pass"},
                             admin=None, method="GET")
    assert again.findtext("result/key") == key
    _, other, _ = panos.call({"type": "keygen", "user": "alice", "password": "alice-pass"},
                             admin=None)
    assert other.findtext("result/key") != key


def test_keygen_bad_password_is_403_invalid_credential(panos: Any) -> None:
    status, _, response = panos.call({"type": "keygen", "user": "certbot", "password": "x"},
                                     admin=None)
    assert status == 403
    assert response.text == ("<response status = 'error' code = '403'><result><msg>"
                             "Invalid Credential</msg></result></response>")
    status, _, _ = panos.call({"type": "keygen", "user": "certbot"}, admin=None)
    assert status == 400


@pytest.mark.parametrize("style", ["header", "param", "basic"])
def test_three_ways_to_authenticate(panos: Any, style: str) -> None:
    params = {"type": "op", "cmd": "<show><system><info/></system></show>"}
    headers: Dict[str, str] = {}
    if style == "param":
        params["key"] = panos.key()
    elif style == "header":
        headers["X-PAN-KEY"] = panos.key()
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(b"alice:alice-pass").decode()
    status, root, _ = panos.call(params, admin=None, headers=headers, method="GET")
    assert status == 200 and root.get("status") == "success"
    assert root.findtext("result/system/sw-version")


def test_bad_missing_and_stale_keys_get_403(panos: Any) -> None:
    params = {"type": "op", "cmd": "<show><system><info/></system></show>"}
    assert panos.call(params, admin=None)[0] == 403
    status, root, _ = panos.call(params, admin=None, headers={"X-PAN-KEY": "LUFRPTnope"})
    assert status == 403 and root.findtext("result/msg") == "Invalid Credential"
    old = panos.key()
    panos.service.control("expire_api_keys", {})
    assert panos.call(params, admin=None, headers={"X-PAN-KEY": old})[0] == 403
    assert panos.call(params)[0] == 200  # a fresh keygen result works
    before = panos.key("alice")
    panos.service.control("set_password", {"user": "alice", "password": "new-pass"})
    assert panos.call(params, admin=None, headers={"X-PAN-KEY": before})[0] == 403


def test_parameters_from_query_form_and_multipart(panos: Any) -> None:
    key = panos.key()
    url, verify = panos.url, panos.verify
    cmd = "<show><system><info/></system></show>"
    by_get = requests.get(url, params={"type": "op", "cmd": cmd, "key": key}, verify=verify)
    by_form = requests.post(url, data={"type": "op", "cmd": cmd, "key": key}, verify=verify)
    by_multipart = requests.post(url, files={"type": (None, "op"), "cmd": (None, cmd),
                                             "key": (None, key)}, verify=verify)
    for response in (by_get, by_form, by_multipart):
        assert response.status_code == 200
        assert ET.fromstring(response.content).get("status") == "success"


def test_missing_or_bad_type_is_400(panos: Any) -> None:
    status, root, _ = panos.call({"action": "get"})
    assert status == 400 and root.get("code") == "400"
    status, root, _ = panos.call({"type": "nonsense"})
    assert status == 400 and "Illegal value" in root.findtext("result/msg")


# --- configuration ------------------------------------------------------------------------

def test_get_miss_is_success_code_7_and_show_miss_is_no_such_node(panos: Any) -> None:
    root = panos.config("get", f"{SHARED}/entry[@name='absent']")
    assert root.get("status") == "success" and root.get("code") == "7"
    assert root.find("result") is not None and len(root.find("result")) == 0
    root = panos.config("show", f"{SHARED}/entry[@name='absent']")
    assert root.get("status") == "error" and root.findtext("msg/line") == "No such node"


def test_set_goes_to_candidate_with_dirty_marks_not_running(panos: Any) -> None:
    root = panos.config("set", f"{PROFILES}/entry[@name='P1']",
                        element="<protocol-settings><min-version>tls1-2</min-version>"
                                "</protocol-settings>")
    assert root.get("code") == "20" and root.findtext("msg") == "command succeeded"
    got = panos.config("get", f"{PROFILES}/entry[@name='P1']")
    assert got.get("code") == "19"
    entry = got.find("result/entry")
    assert got.find("result").get("count") == "1"
    assert entry.get("admin") == "certbot" and entry.get("dirtyId") and entry.get("time")
    assert panos.config("show", f"{PROFILES}/entry[@name='P1']").findtext(
        "msg/line") == "No such node"


def test_names_over_63_characters_are_code_12(panos: Any) -> None:
    name = "n" * 64
    root = panos.config("set", f"{PROFILES}/entry[@name='{name}']",
                        element="<protocol-settings/>")
    assert root.get("status") == "error" and root.get("code") == "12"
    assert "can be at most 63 characters, but current length: 64" in root.findtext("msg/line")
    root = panos.op(generate_cmd(name))
    assert root.get("code") == "12"
    ok = panos.config("set", f"{PROFILES}/entry[@name='{'n' * 63}']",
                      element="<protocol-settings/>")
    assert ok.get("code") == "20"


@pytest.mark.parametrize("name", ["*.example.com", "_hidden", "a/b", "semi;colon"])
def test_names_with_characters_panos_rejects(panos: Any, name: str) -> None:
    root = panos.op(generate_cmd(name))
    assert root.get("status") == "error" and root.get("code") == "12"


def test_unknown_child_of_ssl_profile_is_refused(panos: Any) -> None:
    root = panos.config("set", f"{PROFILES}/entry[@name='P']", element="<certificat>x</certificat>")
    assert root.get("code") == "12" and "unexpected" in root.findtext("msg/line")


def test_edit_replaces_rename_follows_references_delete_removes(panos: Any) -> None:
    panos.op(generate_cmd("old-name"))
    panos.config("set", f"{PROFILES}/entry[@name='P']", element="<certificate>old-name</certificate>")
    root = panos.config("rename", f"{SHARED}/entry[@name='old-name']", newname="new-name")
    assert root.get("code") == "20"
    assert panos.config("get", f"{PROFILES}/entry[@name='P']/certificate").findtext(
        "result/certificate") == "new-name"
    root = panos.config("edit", f"{PROFILES}/entry[@name='P']",
                        element="<entry name='P'><protocol-settings><max-version>max"
                                "</max-version></protocol-settings></entry>")
    assert root.get("code") == "20"
    entry = panos.config("get", f"{PROFILES}/entry[@name='P']").find("result/entry")
    assert entry.find("certificate") is None and entry.findtext(
        "protocol-settings/max-version") == "max"
    assert panos.config("delete", f"{SHARED}/entry[@name='new-name']").get("code") == "20"
    assert panos.config("get", f"{SHARED}/entry[@name='new-name']").get("code") == "7"
    gone = panos.config("delete", f"{SHARED}/entry[@name='new-name']")
    assert gone.get("code") == "7"


def test_edit_element_must_match_xpath(panos: Any) -> None:
    root = panos.config("edit", f"{PROFILES}/entry[@name='P']", element="<entry name='Q'/>")
    assert root.get("status") == "error" and root.get("code") == "12"


def test_predicates_used_by_real_tools(panos: Any) -> None:
    panos.op(generate_cmd("c1"))
    panos.config("set", f"{PROFILES}/entry[@name='P']", element="<certificate>c1</certificate>")
    by_child = panos.config("get", f"{PROFILES}/entry[./certificate='c1']")
    assert by_child.find("result/entry").get("name") == "P"
    names = panos.config("get", f"{SHARED}/entry/@name")
    assert [e.get("name") for e in names.findall("result/entry")] == ["c1"]
    bad = panos.config("get", "/config/shared/certificate/entry[position()=1]")
    assert bad.get("status") == "error" and bad.get("code") == "6"


def test_delete_of_referenced_certificate_is_code_10_with_reference_lines(panos: Any) -> None:
    panos.op(generate_cmd("bound"))
    panos.config("set", f"{PROFILES}/entry[@name='GP-Portal']",
                 element="<certificate>bound</certificate>")
    root = panos.config("delete", f"{SHARED}/entry[@name='bound']")
    assert root.get("status") == "error" and root.get("code") == "10"
    lines = [ET.tostring(line, encoding="unicode") for line in root.findall("msg/line")]
    assert "bound" in lines[0] and "cannot be deleted because of references from:" in lines[0]
    assert root.findall("msg/line")[1].text == " ssl-tls-service-profile -> GP-Portal -> certificate"
    assert panos.config("get", f"{SHARED}/entry[@name='bound']").get("code") == "19"


# --- certificates ---------------------------------------------------------------------------

@pytest.mark.parametrize("algo,bits", [("RSA", 2048), ("RSA", 3072), ("RSA", 4096),
                                       ("ECDSA", 256), ("ECDSA", 384), ("ECDSA", 521)])
def test_generate_every_key_type_makes_a_real_csr(panos: Any, algo: str, bits: int) -> None:
    extra = ("<country-code>US</country-code><state>Oregon</state><locality>Springfield"
             "</locality><organization>Example Corp</organization><organization-unit>"
             "<member>IT</member><member>Net</member></organization-unit>"
             "<email>pki@example.com</email>"
             "<hostname><member>www.example.com</member><member>example.com</member></hostname>"
             "<ip><member>192.0.2.10</member></ip><alt-email><member>ops@example.com</member>"
             "</alt-email>")
    root = panos.op(generate_cmd("k", algo=algo, bits=bits, extra=extra))
    assert root.get("status") == "success", ET.tostring(root)
    assert root.findtext("msg/line") == "Successfully generated certificate and key pair"
    csr = export_csr(panos, "k")
    assert csr.is_signature_valid
    key = csr.public_key()
    if algo == "RSA":
        assert isinstance(key, rsa.RSAPublicKey) and key.key_size == bits
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey) and pki.key_bits(key) == bits
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    subject = {a.oid: a.value for a in csr.subject}
    assert subject[NameOID.COMMON_NAME] == "www.example.com"
    assert subject[NameOID.ORGANIZATION_NAME] == "Example Corp"
    assert [a.value for a in csr.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)] == ["IT", "Net"]
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.com", "example.com"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]
    assert san.get_values_for_type(x509.RFC822Name) == ["ops@example.com"]
    entry = panos.config("get", f"{SHARED}/entry[@name='k']").find("result/entry")
    assert entry.findtext("csr").strip() == csr.public_bytes(
        pki.serialization.Encoding.PEM).decode().strip()
    assert entry.findtext("private-key").startswith("-AQ==")
    assert entry.findtext("algorithm") == ("RSA" if algo == "RSA" else "EC")
    assert entry.find("public-key") is None


def test_generate_on_existing_name_is_refused_and_keeps_the_key(panos: Any) -> None:
    panos.op(generate_cmd("dup"))
    first = export_csr(panos, "dup")
    root = panos.op(generate_cmd("dup"))
    assert root.get("status") == "error" and "already exists" in ET.tostring(
        root, encoding="unicode")
    assert export_csr(panos, "dup").public_key().public_numbers() == \
        first.public_key().public_numbers()


def test_generate_vsys_placement_and_bad_input(panos: Any) -> None:
    root = panos.op(generate_cmd("in-vsys"), vsys="vsys1")
    assert root.get("status") == "success"
    vsys_path = ("/config/devices/entry[@name='localhost.localdomain']/vsys/entry"
                 "[@name='vsys1']/certificate/entry[@name='in-vsys']")
    assert panos.config("get", vsys_path).get("code") == "19"
    assert panos.config("get", f"{SHARED}/entry[@name='in-vsys']").get("code") == "7"
    export_csr(panos, "in-vsys", vsys="vsys1")
    assert panos.op(generate_cmd("x", bits=1536)).get("status") == "error"
    assert panos.op(generate_cmd("x", algo="ECDSA", bits=224)).get("status") == "error"
    no_cn = "<request><certificate><generate><certificate-name>x</certificate-name>" \
            "</generate></certificate></request>"
    assert panos.op(no_cn).get("status") == "error"
    assert panos.op(generate_cmd("x"), vsys="vsys9").get("status") == "error"
    assert panos.op("<request><certificate><generate><certificate-name>x</certificate-name>"
                    "<name>a</name><digest>md5</digest></generate></certificate></request>"
                    ).get("status") == "error"


def test_export_errors(panos: Any) -> None:
    panos.op(generate_cmd("pending"))
    status, root, _ = panos.call({"type": "export", "category": "certificate",
                                  "certificate-name": "pending"})
    assert status == 400
    assert root.findtext("result/msg") == \
        'Parameter "format" is required while exporting certificate'
    status, root, _ = panos.call({"type": "export", "category": "certificate",
                                  "certificate-name": "pending", "format": "pem"})
    assert status == 400  # no certificate yet: a CSR-only entry exports only as pkcs10
    status, _, _ = panos.call({"type": "export", "category": "certificate",
                               "certificate-name": "absent", "format": "pkcs10"})
    assert status == 400


def test_import_pairs_leaf_with_on_box_key(panos: Any, test_ca: pki.Authority) -> None:
    panos.op(generate_cmd("site", algo="ECDSA", bits=384))
    cert = sign(test_ca, export_csr(panos, "site"))
    pem = pki.cert_pem(cert) + pki.cert_pem(test_ca.cert)  # a full chain: the leaf is used
    status, root, _ = import_pem(panos, "site", pem)
    assert status == 200
    assert root.findtext("result") == "Successfully imported site into candidate configuration"
    entry = panos.config("get", f"{SHARED}/entry[@name='site']").find("result/entry")
    assert entry.find("csr") is None
    assert entry.findtext("private-key").startswith("-AQ==")
    assert x509.load_pem_x509_certificate(entry.findtext("public-key").encode()) == cert
    after = cert.not_valid_after_utc
    assert entry.findtext("not-valid-after") == \
        f"{after:%b} {after.day:2d} {after:%H:%M:%S %Y} GMT"
    assert entry.findtext("expiry-epoch") == str(int(after.timestamp()))
    assert entry.findtext("status") == "valid"
    assert entry.findtext("ca") == "no"
    assert entry.findtext("issuer") == "/C=US/O=Tests/CN=Test Issuing CA"
    assert entry.findtext("common-name") == "www.example.com"
    assert re.fullmatch(r"[0-9a-f]{8}", entry.findtext("subject-hash"))
    status, _, response = panos.call({"type": "export", "category": "certificate",
                                      "certificate-name": "site", "format": "pem"})
    assert status == 200 and x509.load_pem_x509_certificate(response.content) == cert
    assert response.headers["Content-Disposition"] == "attachment; filename=site.pem"


def test_import_with_wrong_key_expired_or_garbage_is_refused(panos: Any,
                                                            test_ca: pki.Authority) -> None:
    panos.op(generate_cmd("mine"))
    other = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "x")])).sign(
        pki.generate_key("RSA", 2048), hashes.SHA256())
    status, root, _ = import_pem(panos, "mine", pki.cert_pem(sign(test_ca, other)))
    assert status == 400 and "private key doesn't exist for csr" in root.findtext("result/msg")
    expired = sign(test_ca, export_csr(panos, "mine"), days=-1, start=-10)
    status, root, _ = import_pem(panos, "mine", pki.cert_pem(expired))
    assert status == 400 and "Certificate is expired" in root.findtext("result/msg")
    status, root, _ = import_pem(panos, "mine", "not a certificate")
    assert status == 400 and "Failed to extract certificate" in root.findtext("result/msg")
    assert panos.config("get", f"{SHARED}/entry[@name='mine']").find(
        "result/entry/csr") is not None


def test_import_ca_certificate_makes_a_certificate_only_entry(panos: Any,
                                                              test_ca: pki.Authority) -> None:
    status, _, _ = import_pem(panos, "Test-Issuing-CA", pki.cert_pem(test_ca.cert))
    assert status == 200
    entry = panos.config("get", f"{SHARED}/entry[@name='Test-Issuing-CA']").find("result/entry")
    assert entry.findtext("ca") == "yes" and entry.find("private-key") is None


def test_pan_python_style_import_params_in_query(panos: Any, test_ca: pki.Authority) -> None:
    # pan-python: everything in the query string, only the file in the body, key as key=.
    panos.op(generate_cmd("q"))
    cert = sign(test_ca, export_csr(panos, "q"))
    response = requests.post(panos.url, params={"type": "import", "category": "certificate",
                                                "certificate-name": "q", "format": "pem",
                                                "key": panos.key()},
                             files={"file": ("q.pem", pki.cert_pem(cert).encode())},
                             verify=panos.verify)
    assert response.status_code == 200 and b"Successfully imported q" in response.content


# --- commits --------------------------------------------------------------------------------

def test_partial_commit_leaves_other_admins_change_full_commit_takes_both(panos: Any) -> None:
    panos.config("set", f"{PROFILES}/entry[@name='Mine']", element="<protocol-settings/>")
    panos.config("set", f"{PROFILES}/entry[@name='Alices']", "alice",
                 element="<protocol-settings/>")
    done = commit_and_wait(panos, "certbot")
    assert done.findtext("result/job/result") == "OK"
    running = panos.service.running_tree()
    names = [e.get("name") for e in running.findall("shared/ssl-tls-service-profile/entry")]
    assert names == ["Mine"]
    candidate = panos.config("get", f"{PROFILES}/entry[@name='Alices']")
    assert candidate.find("result/entry").get("admin") == "alice"
    assert commit(panos, "certbot").findtext("msg") == "There are no changes to commit."
    done = commit_and_wait(panos, "admin", partial=False)
    assert done.findtext("result/job/result") == "OK"
    names = [e.get("name") for e in panos.service.running_tree().findall(
        "shared/ssl-tls-service-profile/entry")]
    assert sorted(names) == ["Alices", "Mine"]
    assert commit(panos, "admin", partial=False).findtext("msg") == \
        "There are no changes to commit."


def test_partial_commit_without_action_param_and_description_inside_partial(panos: Any) -> None:
    panos.config("set", f"{PROFILES}/entry[@name='X']", element="<protocol-settings/>")
    _, root, _ = panos.call({"type": "commit", "cmd": "<commit><partial><admin><member>certbot"
                             "</member></admin><description>inside</description></partial>"
                             "</commit>"})
    assert root.get("code") == "19"
    job = wait_job(panos, root.findtext("result/job"))
    assert job.findtext("result/job/description") == "inside"


def test_commit_job_goes_act_then_fin_with_progress_quirk(panos: Any) -> None:
    panos.service.settings.commit_duration = 0.5
    panos.config("set", f"{PROFILES}/entry[@name='J']", element="<protocol-settings/>")
    root = commit(panos)
    assert root.findtext("result/msg/line").startswith("Commit job enqueued with jobid")
    job_id = root.findtext("result/job")
    running = panos.op(f"<show><jobs><id>{job_id}</id></jobs></show>")
    assert running.findtext("result/job/status") == "ACT"
    assert running.findtext("result/job/result") == "PEND"
    assert running.findtext("result/job/tfin") == "Still Active"
    assert int(running.findtext("result/job/progress")) < 100
    busy = commit(panos)
    assert busy.get("status") == "error" and busy.get("code") == "13"
    assert busy.findtext("msg/line") == \
        "Another commit/validate is in progress. Please try again later"
    done = wait_job(panos, job_id)
    assert done.findtext("result/job/result") == "OK"
    assert re.fullmatch(r"\d\d:\d\d:\d\d", done.findtext("result/job/progress"))
    assert "Configuration committed successfully" in [
        line.text for line in done.findall("result/job/details/line")]


def test_unknown_job_is_code_7(panos: Any) -> None:
    root = panos.op("<show><jobs><id>99</id></jobs></show>")
    assert root.get("status") == "error" and root.get("code") == "7"
    assert root.findtext("msg/line") == "job 99 not found"


def test_commit_busy_and_fail_and_hang_switches(panos: Any) -> None:
    panos.config("set", f"{PROFILES}/entry[@name='S']", element="<protocol-settings/>")
    panos.service.settings.commit_busy = 2
    assert commit(panos).get("code") == "13"
    assert commit(panos).get("code") == "13"
    panos.service.settings.commit_fail = 1
    failed = wait_job(panos, commit(panos).findtext("result/job"))
    assert failed.findtext("result/job/result") == "FAIL"
    assert [line.text for line in failed.findall("result/job/details/line")][-1] == \
        "Commit failed"
    assert panos.service.running_tree().find(
        "shared/ssl-tls-service-profile/entry[@name='S']") is None
    panos.service.settings.commit_hang = 1
    job_id = commit(panos).findtext("result/job")
    time.sleep(0.5)
    assert panos.op(f"<show><jobs><id>{job_id}</id></jobs></show>").findtext(
        "result/job/status") == "ACT"
    panos.service.control("finish_jobs", {})
    assert wait_job(panos, job_id).findtext("result/job/result") == "OK"


def test_commit_refuses_profile_pointing_at_csr_only_certificate(panos: Any,
                                                               test_ca: pki.Authority) -> None:
    panos.op(generate_cmd("half"))
    panos.config("set", f"{PROFILES}/entry[@name='Bad']", element="<certificate>half</certificate>")
    failed = commit_and_wait(panos)
    assert failed.findtext("result/job/result") == "FAIL"
    text = " ".join(line.text for line in failed.findall("result/job/details/line"))
    assert "Bad -> certificate: certificate 'half' has no certificate" in text
    import_pem(panos, "half", pki.cert_pem(sign(test_ca, export_csr(panos, "half"))))
    assert commit_and_wait(panos).findtext("result/job/result") == "OK"
    running = panos.config("show", f"{PROFILES}/entry[@name='Bad']")
    assert running.findtext("result/entry/certificate") == "half"
    assert panos.service.commits[-1].result == "OK"


def test_op_errors(panos: Any) -> None:
    root = panos.op("<show><redistribution/></show>")
    assert root.get("code") == "17" and "is unexpected" in root.findtext("msg/line")
    root = panos.op("show system info")
    assert root.get("status") == "error" and root.get("code") == "18"
    info = panos.op("<show><system><info/></system></show>")
    assert info.findtext("result/system/hostname") == "lab-fw-01"


# --- faults ---------------------------------------------------------------------------------

def test_fault_switches_latency_status_drop(panos: Any) -> None:
    cmd = {"type": "op", "cmd": "<show><system><info/></system></show>"}
    panos.service.settings.latency = 0.2
    started = time.monotonic()
    panos.call(cmd)
    assert time.monotonic() - started >= 0.2
    panos.service.settings.latency = 0.0
    panos.endpoint.faults.add(FaultRule(kind="status", status=503, retry_after=3, count=1))
    status, _, response = panos.call(cmd)
    assert status == 503 and response.headers["Retry-After"] == "3"
    assert panos.call(cmd)[0] == 200
    panos.endpoint.faults.add(FaultRule.parse("kind=drop,count=1,match=type=op"))
    with pytest.raises(requests.ConnectionError):
        panos.call(cmd)
    assert panos.call(cmd)[0] == 200
    log = panos.endpoint.log.entries
    assert any(e.get("dropped") for e in log) and any(e["status"] == 503 for e in log)


def test_control_route_needs_token(panos: Any) -> None:
    url = panos.endpoint.url + "/_lab/settings"
    assert requests.post(url, json={"commit_busy": 1}, verify=panos.verify).status_code == 403
    ok = requests.post(url, json={"commit_busy": 1}, verify=panos.verify,
                       headers={"X-Lab-Control": "test-token"})
    assert ok.status_code == 200 and panos.service.settings.commit_busy == 1
    fault = requests.post(panos.endpoint.url + "/_lab/faults", verify=panos.verify,
                          headers={"X-Lab-Control": "test-token"},
                          json={"kind": "status", "status": 429, "count": 1})
    assert fault.status_code == 200
    assert panos.call({"type": "version"})[0] == 429


def test_request_log_has_no_secrets_and_marks_writes(panos: Any) -> None:
    panos.call({"type": "keygen", "user": "certbot", "password": "certbot-pass"}, admin=None)
    panos.op(generate_cmd("logged"))
    panos.config("get", f"{SHARED}/entry[@name='logged']")
    text = open(panos.endpoint.log.path).read() if panos.endpoint.log.path else \
        str(panos.endpoint.log.entries)
    assert "certbot-pass" not in text and panos.key() not in text
    entries = panos.endpoint.log.entries
    assert [e["write"] for e in entries] == [False, True, False]
    assert entries[1]["summary"] == "POST type=op cmd=request certificate generate"


# --- robustness -----------------------------------------------------------------------------

GARBAGE = ["", "x", "<", "<a>", "&", "]]>", "\x00", "é" * 3, "/config/../x", "1" * 5000,
           "<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>"]


def fuzz_params():
    base = [
        {"type": "keygen"}, {"type": "config"}, {"type": "op"}, {"type": "commit"},
        {"type": "import"}, {"type": "export"}, {"type": "version"},
    ]
    for params in base:
        yield dict(params)
    for action in ["get", "show", "set", "edit", "delete", "rename", "clone", "bogus"]:
        for value in GARBAGE:
            yield {"type": "config", "action": action, "xpath": value, "element": value,
                   "newname": value}
            yield {"type": "config", "action": action, "xpath": f"{SHARED}/entry[@name='a']",
                   "element": value}
    for value in GARBAGE:
        yield {"type": "op", "cmd": value}
        yield {"type": "op", "cmd": f"<request><certificate><generate>{value}</generate>"
                                    "</certificate></request>"}
        yield {"type": "op", "cmd": f"<show><jobs><id>{value}</id></jobs></show>"}
        yield {"type": "commit", "cmd": value}
        yield {"type": "commit", "action": value, "cmd": "<commit/>"}
        yield {"type": "export", "category": value, "certificate-name": value, "format": value}
        yield {"type": "import", "category": "certificate", "certificate-name": value}
        yield {"type": "keygen", "user": value, "password": value}
        yield {"type": value}


def test_fuzz_every_request_type_gets_an_envelope_never_500(panos: Any) -> None:
    count = 0
    for params in fuzz_params():
        for files in (None, {"file": ("f.pem", b"garbage")}):
            status, root, response = panos.call(params, files=files)
            count += 1
            assert status in (200, 400, 403), (params, status, response.text[:200])
            assert root is not None, (params, response.text[:200])
            assert root.tag == "response" and root.get("status") in ("success", "error")
            assert "Traceback" not in response.text
    assert count > 300
    assert panos.endpoint.internal_errors == 0


def test_xml_entity_expansion_is_refused(panos: Any) -> None:
    bomb = ('<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            "<show><system><info>&b;</info></system></show>")
    root = panos.op(bomb)
    assert root.get("status") == "error" and root.get("code") == "18"
