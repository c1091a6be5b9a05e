"""Transport and secrets: TLS verified by default, CA bundles and fingerprint pins, keys only in
headers, nothing secret in errors, defused XML."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import edit_yaml
from connector.settings import FirewallProfile, TlsSettings
from connector.errors import PanosError
from connector.http import BILLABLE, Answer
from connector.panos import XmlApi


@pytest.fixture()
def one(work: Any) -> Any:
    work.remove_sample_profiles()
    work.profile("site")
    return work


def fw_file(work: Any) -> str:
    return os.path.join(work.profiles, "fw_paloalto_config.yaml")


def server_fingerprint(work: Any) -> str:
    with open(work.lab.paths["cert"], "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2)).upper()


def test_firewall_tls_is_verified_by_default(one: Any) -> None:
    edit_yaml(fw_file(one), "lab-fw-01", ca_bundle=None)
    code, out = one.run("enroll")
    assert code == 1 and "TLS verification failed" in out
    assert one.panos_requests() == [] and one.orders() == []


def test_environment_cannot_replace_the_profiles_trust(one: Any, monkeypatch: Any) -> None:
    # The lab CA in REQUESTS_CA_BUNDLE must not make an unconfigured firewall trusted...
    edit_yaml(fw_file(one), "lab-fw-01", ca_bundle=None)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", one.lab.paths["ca_bundle"])
    monkeypatch.setenv("CURL_CA_BUNDLE", one.lab.paths["ca_bundle"])
    assert one.run("enroll")[0] == 1
    # ...and a system bundle there must not break a configured one.
    edit_yaml(fw_file(one), "lab-fw-01", ca_bundle=one.lab.paths["ca_bundle"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert one.run("enroll")[0] == 0


def test_fingerprint_pin_accepts_exactly_that_certificate(one: Any) -> None:
    wrong = "AA:" * 31 + "AA"
    edit_yaml(fw_file(one), "lab-fw-01", ca_bundle=None, fingerprint=wrong)
    code, out = one.run("enroll")
    assert code == 1 and "TLS verification failed" in out
    edit_yaml(fw_file(one), "lab-fw-01", fingerprint=server_fingerprint(one))
    code, out = one.run("enroll")
    assert code == 0, out
    assert len(one.orders()) == 1


def test_verification_off_needs_a_setting_and_warns_every_run(one: Any, capsys: Any) -> None:
    edit_yaml(fw_file(one), "lab-fw-01", ca_bundle=None, verify_tls=False)
    for _ in range(2):
        capsys.readouterr()
        assert one.run("renew")[0] == 0
        assert "TLS verification is OFF" in capsys.readouterr().err


@pytest.mark.parametrize("hosts,trusted", [(["127.0.0.1"], True),
                                           (["elsewhere.example"], False)])
def test_the_shared_tls_context_still_checks_the_host_name(tls_pki: Any, tmp_path: Any,
                                                           hosts: List[str],
                                                           trusted: bool) -> None:
    # A certificate from the trusted CA, but for another host, must be refused.
    import http.server
    import threading

    from connector import http as agent_http
    from lab.server import server_ssl_context
    paths = tls_pki.write_files(str(tmp_path), hosts)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.socket = server_ssl_context(paths["cert"], paths["key"]).wrap_socket(
        server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        shared = agent_http.Shared()
        tls = TlsSettings(ca_bundle=paths["ca_bundle"])
        assert shared.context(tls) is not None
        url = f"https://127.0.0.1:{server.server_address[1]}"
        client = agent_http.Server(url, tls, shared)
        if trusted:  # SimpleHTTPRequestHandler answers a POST with 501
            assert client.post("/", agent_http.SAFE, 10, {}).status == 501
        else:
            with pytest.raises(agent_http.Unanswered, match="TLS verification failed.*match"):
                client.post("/", agent_http.SAFE, 10, {})
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("server_does,words", [
    ("answers in plain HTTP", "wrong version number"),
    ("closes at once", "EOF"),
    ("sends a fatal alert", "alert decode error"),  # as lab-fw-175 once did in a fleet run
])
def test_a_broken_handshake_is_not_called_a_trust_problem(server_does: str,
                                                          words: str) -> None:
    # "check ca_bundle / fingerprint" sent administrators to change trust settings that were
    # fine: no TLS setting fixes a port that speaks plain HTTP or a server that hangs up.
    import socket
    import threading

    from connector import http as agent_http
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            if server_does != "closes at once":
                connection.recv(65536)  # the ClientHello
                connection.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
                    if server_does == "answers in plain HTTP" else
                    bytes([21, 3, 3, 0, 2, 2, 50]))  # alert record: fatal, decode_error
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    client = agent_http.Server(url, TlsSettings(), agent_http.Shared())
    with pytest.raises(agent_http.Unanswered) as raised:
        client.post("/api/", BILLABLE, 10, {})
    text = str(raised.value)
    assert text.startswith(f"TLS handshake failed to {url}") and words in text, text
    assert "ca_bundle" not in text and "HTTPS port" in text


def serve_once(tls_pki: Any, tmp_path: Any, hosts: List[str], answer: bytes) -> Any:
    """A one-connection TLS server (the lab CA, a certificate for `hosts`) that reads the
    request, then writes `answer` raw on the socket, outside TLS. Returns (url, what it
    received, the CA bundle)."""
    import socket
    import threading

    from lab.server import server_ssl_context
    paths = tls_pki.write_files(str(tmp_path), hosts)
    context = server_ssl_context(paths["cert"], paths["key"])
    listener = socket.create_server(("127.0.0.1", 0))
    received: List[bytes] = []

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with context.wrap_socket(connection, server_side=True) as tls:
                received.append(tls.recv(65536))
                socket.socket.sendall(tls, answer)  # past the TLS layer
                tls.settimeout(10)
                socket.socket.recv(tls, 65536)  # until the client gives up and closes
        except OSError:
            pass  # the client refused our certificate
        finally:
            listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"https://127.0.0.1:{listener.getsockname()[1]}/", received, paths["ca_bundle"]


@pytest.mark.parametrize("hosts,reached", [(["127.0.0.1"], True),
                                           (["elsewhere.example"], False)])
def test_a_tls_error_counts_as_never_sent_only_when_the_server_was_refused(
        tls_pki: Any, tmp_path: Any, hosts: List[str], reached: bool) -> None:
    # never_sent() decides whether an order may be placed again without asking: a TLS error
    # while reading the answer comes after the server had the request.
    import requests

    from connector import rest
    # An application-data record that does not decrypt: "bad record mac" at the client.
    record = b"\x17\x03\x03\x00\x40" + os.urandom(64)
    url, received, bundle = serve_once(tls_pki, tmp_path, hosts, record)
    session = rest.Session(TlsSettings(ca_bundle=bundle), BILLABLE)
    with pytest.raises(requests.exceptions.SSLError) as caught:
        session.post(url, json={"csr": "..."}, timeout=10)
    assert bool(received) is reached
    assert rest.never_sent(caught.value) is (not reached)


def test_an_unreadable_ca_bundle_is_refused_before_anything_is_sent(one: Any,
                                                                     capsys: Any) -> None:
    bundle = os.path.join(one.profiles, "broken-ca.pem")
    with open(bundle, "w") as handle:
        handle.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    edit_yaml(fw_file(one), "lab-fw-01", ca_bundle=bundle)
    code, _ = one.run("enroll")
    err = capsys.readouterr().err
    assert code == 2 and "lab-fw-01.ca_bundle" in err and "PEM" in err, err
    assert one.panos_requests() == [] and one.orders() == []


def test_a_ca_bundle_that_breaks_after_loading_fails_that_firewall_clearly(
        one: Any, monkeypatch: Any) -> None:
    # The TLS layer keeps its own check: a bundle that loads for the configuration check but
    # not for the connection (replaced between the two) is a clear TLS error, not a crash.
    bundle = os.path.join(one.profiles, "swapped-ca.pem")
    with open(one.lab.paths["ca_bundle"]) as source, open(bundle, "w") as target:
        target.write(source.read())
    edit_yaml(fw_file(one), "lab-fw-01", ca_bundle=bundle)
    from connector import config as agent_config
    real = agent_config.load_config

    def load_then_break(*args: Any, **kwargs: Any) -> Any:
        loaded = real(*args, **kwargs)
        with open(bundle, "w") as handle:
            handle.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        return loaded

    monkeypatch.setattr(agent_config, "load_config", load_then_break)
    code, out = one.run("enroll")
    assert code == 1 and "TLS verification failed" in out, out
    assert one.panos_requests() == [] and one.orders() == []


def test_a_webhook_token_in_the_url_path_is_masked_in_logs(one: Any) -> None:
    # urllib3's request lines name only the path, which is where webhook services put the
    # token; the redaction must know the path too, not just the whole URL.
    from connector.config import load_config
    from connector.logs import RedactSecrets
    token = "T0K3N" + os.urandom(6).hex()
    path = os.path.join(one.profiles, "notifications.yaml")
    with open(path, "w") as handle:
        handle.write(f"webhook:\n  url: https://hooks.example.com/services/{token}\n")
    os.chmod(path, 0o600)
    redact = RedactSecrets(load_config(one.config).secrets())
    line = redact.redact(f'https://hooks.example.com:443 "POST /services/{token} HTTP/1.1" 200')
    assert token not in line


def test_scm_tls_is_verified(one: Any) -> None:
    one.edit_config("scm", ca_bundle=None)
    code, out = one.run("enroll")
    assert code == 1 and "TLS verification failed" in out
    assert one.orders() == [] and one.scm_requests() == []


def test_api_key_travels_only_in_a_header_never_in_a_url(one: Any) -> None:
    seen: List[Dict[str, Any]] = []
    one.lab.panos_endpoint.arrival_observers.append(lambda request: seen.append(
        {"query": dict(request.query), "header": request.header("X-PAN-KEY"),
         "body": request.body}))
    assert one.run("enroll")[0] == 0
    key = one.lab.panos_api_key()
    password = one.lab.admin_passwords["certbot"]
    assert seen
    for request in seen:
        assert "key" not in request["query"] and "password" not in request["query"]
        assert key not in str(request["query"]) and password not in str(request["query"])
    authenticated = [r for r in seen if b"type=keygen" not in r["body"]]
    assert all(r["header"] == key for r in authenticated)


def test_errors_do_not_repeat_secrets(one: Any, capsys: Any) -> None:
    creds = os.path.join(one.profiles, "sectigo_credentials.yaml")
    wrong_secret = "Wrong-Secret-" + os.urandom(4).hex()
    edit_yaml(creds, "ENROLLMENT_API_1", client_secret=wrong_secret)
    wrong_password = "Wrong-Password-" + os.urandom(4).hex()
    code, out = one.run("enroll")
    err = capsys.readouterr().err
    assert code == 1 and "check client_id and client_secret" in out
    edit_yaml(fw_file(one), "lab-fw-01", password=wrong_password)
    code, out2 = one.run("enroll")
    err2 = capsys.readouterr().err
    assert code == 1 and "invalid username or password" in out2
    for text in (out, err, out2, err2):
        assert wrong_secret not in text and wrong_password not in text
    log = open(os.path.join(one.root, "logs", "paloaltoagent.log")).read()
    assert wrong_secret not in log and wrong_password not in log


@pytest.mark.parametrize("document", [
    b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><response status="success">'
    b"<result>&c;</result></response>",
    b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><response status="success">'
    b"<result>&x;</result></response>",
    # The same declaration in other encodings, which would hide it from a look at the bytes.
    *[('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]>'
       '<response status="success"><result>&a;</result></response>').encode(encoding)
      for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le")],
    b'<?xml version="1.0" encoding="UTF-7"?>+ADwAIQ-DOCTYPE r +AFsAPAAh-ENTITY a +ACI-aa'
    b'+ACIAPgBd-+AD4APA-response status=+ACI-success+ACIAPgA8-result+AD4AJg-a+ADs-'
    b'+ADw-/result+AD4APA-/response+AD4-',
    b'<?xml version="1.0"?>\n<!DOCTYPE response><response status="success"/>',
    b'<response status="success"><result>&undeclared;</result></response>',
])
def test_device_xml_with_entities_is_refused(document: bytes) -> None:
    client = XmlApi(FirewallProfile(name="fw", path="fw.yaml", url="https://192.0.2.1",
                                    admin="admin"))
    with pytest.raises(PanosError, match="unreadable XML"):
        client._parse(Answer(200, "application/xml", document))


def test_overlapping_runs_the_second_stops_at_once(one: Any) -> None:
    import subprocess
    import sys
    import time
    from conftest import AGENT_DIR
    one.lab.panos.settings.latency = 0.3  # keep the first run busy for a while
    first = subprocess.Popen([sys.executable, os.path.join(AGENT_DIR, "paloaltoagent.py"),
                              "enroll", "--accept-eula", "--config", one.config],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not one.panos_requests() and time.time() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    second = subprocess.run([sys.executable, os.path.join(AGENT_DIR, "paloaltoagent.py"),
                             "enroll", "--accept-eula", "--config", one.config],
                            capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 5
    assert second.returncode == 1
    assert "another paloaltoagent run (pid" in second.stderr
    assert first.wait(timeout=120) == 0
    assert len(one.orders()) == 1


@pytest.mark.parametrize("environment,proxied", [
    ({}, False),
    ({"no_proxy": "example.net"}, False),
    ({"https_proxy": "https://proxy.invalid:3128"}, True),
    ({"HTTPS_PROXY": "http://proxy.invalid:3128", "no_proxy": "192.0.2.7"}, False),
    ({"HTTPS_PROXY": "http://proxy.invalid:3128", "no_proxy": "192.0.2.0/24"}, False),
    ({"all_proxy": "http://proxy.invalid:3128"}, True),
])
def test_proxied_firewalls_keep_the_proxy_checked_against_the_configured_trust(
        monkeypatch: Any, tls_files: Dict[str, str], environment: Dict[str, str],
        proxied: bool) -> None:
    # The environment's proxy rules are requests' (no_proxy with CIDR ranges too). Through
    # an HTTPS proxy urllib3 checks the proxy with the pool's CA path, so a proxied firewall
    # keeps the profile's bundle as that path instead of the run's shared context.
    from connector import http as agent_http
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                 "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    client = agent_http.Server("https://192.0.2.7", TlsSettings(
        ca_bundle=tls_files["ca_bundle"]), agent_http.Shared())
    pool: Any = client._pool(write=False)
    assert (pool.proxy is not None) is proxied
    assert (pool.conn_kw.get("ssl_context") is not None) is not proxied
    assert pool.ca_certs == (tls_files["ca_bundle"] if proxied else None)


def clear_proxies(monkeypatch: Any) -> None:
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                 "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def firewall_address(work: Any) -> str:
    from urllib.parse import urlsplit
    return f"127.0.0.1:{urlsplit(work.lab.panos_endpoint.url).port}"


def test_a_firewall_is_reached_through_the_environments_proxy(one: Any,
                                                              monkeypatch: Any) -> None:
    # A management network reached through an HTTP proxy (CONNECT), with credentials in the
    # proxy URL; SCM goes through it too.
    import base64

    from connect_proxy import ConnectProxy
    clear_proxies(monkeypatch)
    with ConnectProxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url.replace("http://",
                                                            "http://agent:p%40ss@"))
        code, out = one.run("enroll")
        assert code == 0, out
        tunnels = [t for t in proxy.tunnels if t == firewall_address(one)]
        requests_sent = len(one.panos_requests())
        # Connections are kept for the run: far fewer tunnels than requests.
        assert 1 <= len(tunnels) < requests_sent
        index = proxy.tunnels.index(firewall_address(one))
        assert proxy.authorizations[index] == "Basic " + base64.b64encode(
            b"agent:p@ss").decode()
    assert len(one.orders()) == 1


def test_no_proxy_keeps_a_firewall_direct(one: Any, monkeypatch: Any) -> None:
    from connect_proxy import ConnectProxy
    clear_proxies(monkeypatch)
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")  # a CIDR range, as requests reads it
        code, out = one.run("enroll")
        assert code == 0, out
        assert proxy.tunnels == []


def test_a_fingerprint_pin_is_checked_through_a_proxy_too(one: Any, monkeypatch: Any) -> None:
    # requests' pinned adapter did not reach connections through a proxy: a wrong pin was
    # accepted there, and the firewall's TLS not checked at all.
    from connect_proxy import ConnectProxy
    clear_proxies(monkeypatch)
    with ConnectProxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        edit_yaml(fw_file(one), "lab-fw-01", ca_bundle=None, fingerprint="AA:" * 31 + "AA")
        code, out = one.run("enroll")
        assert code == 1 and "TLS verification failed" in out, out
        assert firewall_address(one) in proxy.tunnels  # it did go through the proxy
        assert one.panos_requests() == [] and one.orders() == []
        edit_yaml(fw_file(one), "lab-fw-01", fingerprint=server_fingerprint(one))
        code, out = one.run("enroll")
        assert code == 0, out
    assert len(one.orders()) == 1


def test_device_xml_reads_as_defusedxml_reads_it(one: Any) -> None:
    # The lab's whole configuration answer, and text with every escape the API uses.
    from xml.etree import ElementTree as ET

    from defusedxml import ElementTree as SafeET

    from connector.panos import parse_xml
    assert one.run("enroll")[0] == 0
    samples = [b'<response status="success"><result><msg>a &amp; b &lt;c&gt; &#233; '
               b'\xc3\xa9 <![CDATA[<x>]]></msg></result></response>',
               '\ufeff<?xml version="1.0"?><response status="success"/>'.encode(),
               ET.tostring(one.running())]
    for sample in samples:
        assert ET.tostring(parse_xml(sample)) == ET.tostring(SafeET.fromstring(sample))


def test_a_proxy_without_a_scheme_is_an_http_proxy(one: Any, monkeypatch: Any) -> None:
    # As requests reads it: https_proxy=proxy.example:3128.
    from connect_proxy import ConnectProxy
    clear_proxies(monkeypatch)
    with ConnectProxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url[len("http://"):])
        code, out = one.run("enroll")
        assert code == 0, out
        assert firewall_address(one) in proxy.tunnels


@pytest.mark.parametrize("proxy,expected", [
    ("http://agent:S3cretPw@127.0.0.1:99999", "request not sent"),  # no such port
    ("socks5://agent:S3cretPw@127.0.0.1:1", "PySocks"),
])
def test_a_proxy_the_agent_cannot_use_fails_its_firewalls_not_the_run(
        one: Any, monkeypatch: Any, capsys: Any, proxy: str, expected: str) -> None:
    # Every certificate is reported, with a reason and no proxy password; no traceback.
    import importlib.util
    if expected == "PySocks" and importlib.util.find_spec("socks") is not None:
        pytest.skip("PySocks is installed here")
    clear_proxies(monkeypatch)
    monkeypatch.setenv("https_proxy", proxy)
    code, report = one.run_json("enroll")
    err = capsys.readouterr().err
    assert code == 1
    errors = [c["error"] for c in report["certificates"]]
    assert errors and all(expected in (e or "") for e in errors), errors
    assert "S3cretPw" not in json_text(report) + err
    assert "Traceback" not in err and one.panos_requests() == [] and one.orders() == []


def json_text(document: Any) -> str:
    import json
    return json.dumps(document)


def test_an_api_key_with_a_line_break_is_not_repeated_in_the_error(one: Any) -> None:
    # A key encrypted with `echo KEY | gpg -e` keeps its newline; http.client refuses the
    # header with a ValueError that quotes it.
    from connector.settings import Secret
    key = "LUFRPT1" + os.urandom(8).hex()
    client = XmlApi(FirewallProfile(
        name="fw", path="fw.yaml", url=one.lab.panos_endpoint.url, admin="admin",
        api_key=Secret(key + "\n"), tls=TlsSettings(ca_bundle=one.lab.paths["ca_bundle"])))
    with pytest.raises(PanosError) as caught:
        client.get("/config")
    assert "request not sent" in str(caught.value) and key not in str(caught.value)


def test_the_first_write_does_not_reuse_a_connection_left_idle_by_the_reads(
        tls_pki: Any, tmp_path: Any) -> None:
    # An idle connection a firewall or NAT dropped silently would fail a commit that must
    # not be sent again: writes have their own connections (reads reuse theirs).
    import http.server
    import threading

    from connector import http as agent_http
    from lab.server import server_ssl_context
    peers: List[Any] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            peers.append(self.client_address)
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    paths = tls_pki.write_files(str(tmp_path), ["127.0.0.1"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_ssl_context(paths["cert"], paths["key"]).wrap_socket(
        server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = agent_http.Server(f"https://127.0.0.1:{server.server_address[1]}",
                                   TlsSettings(ca_bundle=paths["ca_bundle"]),
                                   agent_http.Shared())
        for write in (False, False, True, True):
            assert client.post("/api/", agent_http.SAFE, 10, {}, form={"a": "b"},
                               write=write).body == b"ok"
    finally:
        server.shutdown()
        server.server_close()
    assert peers[0] == peers[1] and peers[2] == peers[3] and peers[2] != peers[1]


def test_a_url_requests_cannot_read_is_not_repeated_in_the_error() -> None:
    # A webhook URL holds its token in the path; urllib3's parse error quotes the whole URL.
    import requests

    from connector import http as agent_http
    from connector import rest
    token = "T0K3N" + os.urandom(6).hex()
    with pytest.raises(requests.RequestException) as caught:
        rest.Session(TlsSettings()).post(f"https://hooks.example:99999/{token}", timeout=5)
    text = agent_http.describe(caught.value, "https://hooks.example")
    assert token not in text and "request not sent" in text, text
