"""pan-python, an independent real client, drives the emulated firewall unchanged."""

from __future__ import annotations

import datetime as dt
import ssl
from typing import Any

import pytest
from cryptography import x509

from lab import pki

pan_xapi = pytest.importorskip("pan.xapi")


@pytest.fixture()
def xapi(panos: Any) -> Any:
    context = ssl.create_default_context(cafile=panos.verify)
    return pan_xapi.PanXapi(hostname="127.0.0.1", port=panos.endpoint.port,
                            api_username="certbot", api_password="certbot-pass",
                            ssl_context=context, timeout=30)


def test_pan_python_keygen_generate_export_import_commit_show(xapi: Any, panos: Any) -> None:
    key = xapi.keygen()
    assert key == panos.key("certbot")

    xapi.op(cmd="<request><certificate><generate><certificate-name>pp-cert"
                "</certificate-name><name>pp.example.com</name><algorithm><ECDSA>"
                "<ecdsa-nbits>256</ecdsa-nbits></ECDSA></algorithm><digest>sha256</digest>"
                "<signed-by>external</signed-by><ca>no</ca><hostname><member>pp.example.com"
                "</member></hostname></generate></certificate></request>")
    assert xapi.status == "success"

    xapi.export(category="certificate", extra_qs={"certificate-name": "pp-cert",
                                                  "format": "pkcs10"})
    csr = x509.load_pem_x509_csr(xapi.export_result["content"])
    assert xapi.export_result["file"] == "pp-cert.csr"

    ca = pki.make_root("pan-python test CA", pki.generate_key("EC", 256), "Tests")
    now = pki.utcnow()
    leaf = pki.issue_leaf(ca, csr.public_key(), csr.subject, ["pp.example.com"],
                          now - dt.timedelta(hours=1), now + dt.timedelta(days=30))
    xapi.import_file(category="certificate", file=pki.cert_pem(leaf).encode(),
                     filename="pp.pem", extra_qs={"certificate-name": "pp-cert",
                                                  "format": "pem"})
    assert xapi.status == "success"
    assert "Successfully imported pp-cert" in xapi.xml_document

    xapi.commit(cmd="<commit><partial><admin><member>certbot</member></admin></partial>"
                    "</commit>", action="partial", sync=True, interval=0.1, timeout=30)
    assert xapi.status == "success"
    assert xapi.element_root.findtext("./result/job/result") == "OK"

    xapi.show(xpath="/config/shared/certificate/entry[@name='pp-cert']")
    entry = xapi.element_result.find("entry")
    assert x509.load_pem_x509_certificate(entry.findtext("public-key").encode()) == leaf
    assert entry.findtext("private-key").startswith("-AQ==")

    xapi.export(category="certificate", extra_qs={"certificate-name": "pp-cert",
                                                  "format": "pem"})
    assert xapi.export_result["file"] == "pp-cert.pem"


def test_pan_python_sees_the_documented_errors(xapi: Any) -> None:
    xapi.get(xpath="/config/shared/certificate/entry[@name='absent']")
    assert xapi.status == "success" and xapi.status_code == "7"
    with pytest.raises(pan_xapi.PanXapiError, match="No such node"):
        xapi.show(xpath="/config/shared/certificate/entry[@name='absent']")
    with pytest.raises(pan_xapi.PanXapiError, match="job 42 not found"):
        xapi.op(cmd='show jobs id "42"', cmd_xml=True)
    bad = pan_xapi.PanXapi(hostname="127.0.0.1", port=xapi.port, api_key="LUFRPTbad",
                           ssl_context=xapi.ssl_context)
    with pytest.raises(pan_xapi.PanXapiError, match="403"):
        bad.op(cmd="<show><system><info/></system></show>")
