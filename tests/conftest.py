"""Shared fixtures: the lab's PKI (made once per session) and a fresh emulated firewall per test.

Every test runs against real HTTPS on 127.0.0.1 and never reaches any other address.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from typing import Any, Dict, Optional, Tuple

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT_DIR = os.path.join(ROOT, "paloaltofw")
if AGENT_DIR not in sys.path:
    sys.path.insert(0, AGENT_DIR)

from lab import pki  # noqa: E402
from lab.panos import Admin, PanosService  # noqa: E402
from lab.server import Endpoint, server_ssl_context  # noqa: E402


@pytest.fixture(scope="session")
def tls_pki() -> pki.TlsHierarchy:
    return pki.TlsHierarchy.create()


@pytest.fixture(scope="session")
def scm_pki() -> pki.ScmHierarchy:
    return pki.ScmHierarchy.create()


@pytest.fixture(scope="session")
def tls_files(tls_pki: pki.TlsHierarchy, tmp_path_factory: Any) -> Dict[str, str]:
    return tls_pki.write_files(str(tmp_path_factory.mktemp("tls")), ["127.0.0.1", "localhost"])


class PanosClient:
    """Raw XML API calls for the lab's own tests: (HTTP status, parsed envelope, response)."""

    def __init__(self, endpoint: Endpoint, service: PanosService, ca_bundle: str) -> None:
        self.endpoint = endpoint
        self.service = service
        self.url = endpoint.url + "/api/"
        self.verify = ca_bundle
        self.session = requests.Session()

    def key(self, admin: str = "certbot") -> str:
        return self.service.api_key(admin)

    def call(self, params: Dict[str, str], admin: Optional[str] = "certbot",
             files: Optional[Dict[str, Any]] = None, method: str = "POST",
             headers: Optional[Dict[str, str]] = None) -> Tuple[int, Optional[ET.Element],
                                                                requests.Response]:
        headers = dict(headers or {})
        if admin:
            headers["X-PAN-KEY"] = self.key(admin)
        if method == "GET":
            response = self.session.get(self.url, params=params, headers=headers,
                                        verify=self.verify, timeout=30)
        elif files is not None:
            response = self.session.post(self.url, params=params, files=files, headers=headers,
                                         verify=self.verify, timeout=30)
        else:
            response = self.session.post(self.url, data=params, headers=headers,
                                         verify=self.verify, timeout=30)
        root = None
        if "xml" in response.headers.get("Content-Type", ""):
            root = ET.fromstring(response.content)
        return response.status_code, root, response

    def op(self, cmd: str, admin: str = "certbot", **extra: str) -> ET.Element:
        status, root, _ = self.call(dict(type="op", cmd=cmd, **extra), admin)
        assert root is not None
        return root

    def config(self, action: str, xpath: str, admin: str = "certbot", **extra: str) -> ET.Element:
        _, root, _ = self.call(dict(type="config", action=action, xpath=xpath, **extra), admin)
        assert root is not None
        return root


@pytest.fixture()
def panos(tls_files: Dict[str, str]) -> Any:
    service = PanosService([Admin("certbot", "certbot-pass"), Admin("admin", "admin-pass"),
                            Admin("alice", "alice-pass")])
    service.settings.commit_duration = 0.2
    endpoint = Endpoint(service, server_ssl_context(tls_files["cert"], tls_files["key"]),
                        control_token="test-token").start()
    yield PanosClient(endpoint, service, tls_files["ca_bundle"])
    endpoint.stop()
    assert endpoint.internal_errors == 0, "the emulated firewall hit an internal error"
