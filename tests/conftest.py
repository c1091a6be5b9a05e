"""Shared fixtures: the lab's PKI (made once per session) and a fresh emulated firewall per test.

Every test runs against real HTTPS on 127.0.0.1 and never reaches any other address.
"""

from __future__ import annotations

import base64
import json
import contextlib
import os
import pty
import select
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT_DIR = os.path.join(ROOT, "paloaltofw")
if AGENT_DIR not in sys.path:
    sys.path.insert(0, AGENT_DIR)

from lab import pki  # noqa: E402
from lab.panos import Admin, PanosService  # noqa: E402
from lab.scm import TOKEN_PATH, ScmAccounts, ScmService  # noqa: E402
from lab.server import Endpoint, Response, Service, server_ssl_context  # noqa: E402


class Webhook(Service):
    """A local HTTPS endpoint that records what is posted to it (an alert webhook)."""

    name = "webhook"

    def __init__(self) -> None:
        self.received: List[Dict[str, Any]] = []

    def handle(self, request: Any) -> Response:
        self.received.append(json.loads(request.body))
        return Response(200, b"ok", "text/plain")


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


# --- the whole lab and an agent configuration wired to it ---------------------------------

class Workdir:
    """A lab plus the agent configuration `paloaltoagent.py lab` would write for it, and
    helpers to run the agent's real `main()` against it."""

    def __init__(self, lab: Any, config: str) -> None:
        self.lab = lab
        self.config = config
        self.root = os.path.dirname(config)
        self.profiles = os.path.join(self.root, "profiles")
        self.state = os.path.join(self.root, "state")
        # A lab may serve several work directories one after another (the bad-input cases
        # share one): the records below count from the moment this one was written.
        self._marks = (len(lab.scm_endpoint.log.entries), len(lab.panos_endpoint.log.entries),
                       len(lab.scm.order_log))

    def run(self, *args: str, accept_eula: bool = True) -> Tuple[int, str]:
        import io
        from connector.cli import main
        out = io.StringIO()
        argv = list(args) + ["--config", self.config]
        if accept_eula:
            argv.append("--accept-eula")
        code = main(argv, out=out)
        return code, out.getvalue()

    def run_json(self, *args: str) -> Tuple[int, Dict[str, Any]]:
        """Run with --json; the parsed report document."""
        import json
        code, out = self.run(*args, "--json")
        return code, json.loads(out)

    def edit_config(self, section: str, **values: Any) -> None:
        import yaml
        with open(self.config) as handle:
            data = yaml.safe_load(handle)
        (data.setdefault(section, {}) if section else data).update(values)
        with open(self.config, "w") as handle:
            yaml.safe_dump(data, handle)

    def profile(self, name: str, **fields: Any) -> str:
        """Write a certificate profile (defaults: DV, RSA-2048, on lab-fw-01)."""
        import yaml
        validation = fields.get("validation", "DV")
        data: Dict[str, Any] = {
            "firewall": "lab-fw-01", "object_name": name, "validation": validation,
            "common_name": f"{name}.example.com", "key": "RSA-2048",
            "scm": {"profile_id": self.lab.accounts.profile_for(validation).id, "term": 90}}
        data.update(fields)
        path = os.path.join(self.profiles, f"{name}.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(data, handle)
        return path

    def remove_sample_profiles(self) -> None:
        from lab.workdir import CERTIFICATE_PROFILES
        for name in CERTIFICATE_PROFILES:
            os.remove(os.path.join(self.profiles, f"{name}.yaml"))

    def state_of(self, profile: str) -> Dict[str, Any]:
        import json
        with open(os.path.join(self.state, f"{profile}.json")) as handle:
            return json.load(handle)

    def without_lookup(self) -> None:
        """An Enrollment-API-only configuration: no classic credentials to search orders
        with (scm.lookup_label removed)."""
        import yaml
        with open(self.config) as handle:
            data = yaml.safe_load(handle)
        data["scm"].pop("lookup_label", None)
        with open(self.config, "w") as handle:
            yaml.safe_dump(data, handle)

    def age(self, profile: str, days: int) -> None:
        """Move the times in a state file's history `days` into the past: with the lab's
        `backdate_days`, as if the certificate had been installed that long ago."""
        import datetime as dt
        import json
        path = os.path.join(self.state, f"{profile}.json")
        data = self.state_of(profile)
        for event in data["history"]:
            event["time"] = (dt.datetime.fromisoformat(event["time"]) -
                             dt.timedelta(days=days)).isoformat()
        with open(path, "w") as handle:
            json.dump(data, handle)

    # The lab's own records, counted per service.
    def scm_requests(self) -> list:
        return list(self.lab.scm_endpoint.log.entries)[self._marks[0]:]

    def panos_requests(self) -> list:
        return list(self.lab.panos_endpoint.log.entries)[self._marks[1]:]

    def orders(self) -> list:
        return list(self.lab.scm.order_log)[self._marks[2]:]

    def commits(self) -> list:
        return [e for e in self.panos_requests() if e.get("type") == "commit"]

    def running(self) -> ET.Element:
        return self.lab.panos.running_tree()


@contextlib.contextmanager
def running_lab(directory: str, tls: pki.TlsHierarchy, scm: pki.ScmHierarchy, *,
                firewalls: int = 1, commit_duration: float = 0.1, api: str = "enrollment",
                keep: Optional[Iterable[str]] = None, panorama: int = 0,
                panorama_settings: Any = None, ha_pair: bool = False,
                ha_settings: Any = None) -> Iterator[Workdir]:
    """The one way tests start a whole lab: `firewalls` emulated firewalls and an SCM (and,
    with `panorama=N`, a Panorama managing N of them), with the work directory
    `paloaltoagent.py lab` would write (`keep` names the sample certificate profiles to leave
    in it; None leaves them all). The lab must end without an internal error."""
    from lab.lab import Lab
    from lab.panorama import PanoramaSettings
    from lab.panos import PanosSettings
    from lab.workdir import (CERTIFICATE_PROFILES, PANORAMA_CERTIFICATE_PROFILES,
                             write_workdir)
    instance = Lab(directory, tls=tls, hierarchy=scm, firewalls=firewalls,
                   panos_settings=PanosSettings(commit_duration=commit_duration),
                   panorama=panorama,
                   panorama_settings=panorama_settings or PanoramaSettings(
                       commit_duration=commit_duration, push_duration=commit_duration,
                       device_push_duration=2 * commit_duration),
                   ha_pair=ha_pair, ha_settings=ha_settings).start()
    try:
        work = Workdir(instance, write_workdir(instance, directory, api=api))
        samples = set(CERTIFICATE_PROFILES) | (set(PANORAMA_CERTIFICATE_PROFILES)
                                               if panorama else set())
        if keep is not None:
            for name in samples - set(keep):
                os.remove(os.path.join(work.profiles, f"{name}.yaml"))
        yield work
    finally:
        instance.stop()
    assert instance.internal_errors == 0, "the lab hit an internal error"


@pytest.fixture()
def work(tmp_path: Any, tls_pki: pki.TlsHierarchy, scm_pki: pki.ScmHierarchy
         ) -> Iterator[Workdir]:
    with running_lab(str(tmp_path / "work"), tls_pki, scm_pki) as instance:
        yield instance


@pytest.fixture()
def lab(work: Workdir) -> Any:
    return work.lab


@pytest.fixture()
def classic_work(lab: Any) -> Workdir:
    from lab.workdir import write_workdir
    return Workdir(lab, write_workdir(lab, lab.workdir, api="classic"))


@pytest.fixture(scope="module")
def shared_lab(tmp_path_factory: pytest.TempPathFactory, tls_pki: pki.TlsHierarchy,
               scm_pki: pki.ScmHierarchy) -> Iterator[Any]:
    """One lab for a whole module, for tests that must not change it (input refused before
    anything is sent); each takes its own work directory from `shared_work`."""
    with running_lab(str(tmp_path_factory.mktemp("shared-lab")), tls_pki, scm_pki) as work:
        yield work.lab


@pytest.fixture()
def shared_work(shared_lab: Any, tmp_path: Any) -> Workdir:
    from lab.workdir import write_workdir
    return Workdir(shared_lab, write_workdir(shared_lab, str(tmp_path / "work")))


def edit_yaml(path: str, label: Optional[str] = None, **values: Any) -> None:
    """Change fields of a YAML file (of its `label` block when given); None deletes."""
    import yaml
    with open(path) as handle:
        data = yaml.safe_load(handle)
    target = data[label] if label else data
    for key, value in values.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    mode = os.stat(path).st_mode & 0o777
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    os.chmod(path, mode)


@pytest.fixture()
def fleet(tmp_path: Any, tls_pki: pki.TlsHierarchy, scm_pki: pki.ScmHierarchy
          ) -> Iterator[Workdir]:
    """Two firewalls, one certificate profile on each (site1 on lab-fw-01, site2 on
    lab-fw-02)."""
    with running_lab(str(tmp_path / "fleet"), tls_pki, scm_pki, firewalls=2,
                     keep=[]) as work:
        work.profile("site1", firewall="lab-fw-01")
        work.profile("site2", firewall="lab-fw-02")
        yield work


def in_pty(args: List[str], answer: Optional[bytes],
           interrupt_on: Optional[bytes] = None) -> Tuple[int, str]:
    """Run the agent on a terminal; answer the EULA question when it comes, or with
    `interrupt_on`, press Ctrl-C (SIGINT) once that text is shown."""
    import signal
    master, slave = pty.openpty()
    # Ctrl-C as on a terminal, even when the suite itself runs as a background job of a
    # non-interactive shell, which starts it with SIGINT ignored (inherited over exec): the
    # agent would then never see the signal and wait at its prompt.
    # PYTHONFAULTHANDLER: an agent that does not end is made to show where it is (below).
    process = subprocess.Popen([sys.executable, os.path.join(AGENT_DIR, "paloaltoagent.py"),
                                *args], stdin=slave, stdout=slave, stderr=slave,
                               close_fds=True, env=dict(os.environ, PYTHONFAULTHANDLER="1"),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    output = b""
    answered = False
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not answered and interrupt_on is not None and interrupt_on in output:
            process.send_signal(signal.SIGINT)
            answered = True
        elif not answered and answer is not None and b"[yes/no]" in output:
            os.write(master, answer)
            answered = True
        if process.poll() is not None and not ready:
            break
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # the fault handler prints every thread's stack
        time.sleep(1)
        while select.select([master], [], [], 0.5)[0]:
            try:
                output += os.read(master, 65536)
            except OSError:
                break
        process.kill()
        raise AssertionError("the agent did not end; where it was:\n" +
                             output.decode("utf-8", "replace")[-4000:]) from None
    os.close(master)
    return code, output.decode("utf-8", "replace")

# --- the emulated SCM alone ---------------------------------------------------------------------

SCM_CONTROL_TOKEN = "test-control-token"


def csr_b64(csr: x509.CertificateSigningRequest) -> str:
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode("ascii")


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass
class ScmLab:
    """An emulated SCM alone, on its own endpoint, and raw calls to it (for the SCM lab's
    tests and the fidelity tests of real clients)."""

    endpoint: Endpoint
    service: ScmService
    accounts: ScmAccounts
    tls: pki.TlsHierarchy
    ca: str
    directory: str
    order_log_path: str
    request_log_path: str
    http: requests.Session
    tokens: List[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.endpoint.url

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self.ca)
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.url + path, **kwargs)

    def token(self) -> str:
        response = self.call("POST", TOKEN_PATH, data={
            "client_id": self.accounts.client_id, "client_secret": self.accounts.client_secret,
            "grant_type": "client_credentials"})
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        self.tokens.append(token)
        return token

    def bearer(self) -> Dict[str, str]:
        return {"Authorization": "Bearer " + self.token()}

    def classic(self) -> Dict[str, str]:
        return {"login": self.accounts.login, "password": self.accounts.password,
                "customerUri": self.accounts.customer_uri}

    def control(self, method: str, route: str, body: Optional[Dict[str, Any]] = None
                ) -> requests.Response:
        return self.call(method, "/_lab/" + route, json=body or {},
                         headers={"X-Lab-Control": SCM_CONTROL_TOKEN})

    def profile(self, validation: str) -> int:
        return self.accounts.profile_for(validation).id

    # The two ways to order, with everything valid unless overridden.
    def enroll_rest(self, request: x509.CertificateSigningRequest, validation: str = "DV",
                    headers: Optional[Dict[str, str]] = None, **extra: Any) -> requests.Response:
        body: Dict[str, Any] = {"csr": csr_b64(request), "profileId": self.profile(validation)}
        body.update(extra)
        return self.call("POST", "/api/v1/certificates", json=body,
                         headers=headers or self.bearer())

    def enroll_classic(self, request: x509.CertificateSigningRequest, validation: str = "DV",
                       **extra: Any) -> requests.Response:
        body: Dict[str, Any] = {"orgId": self.accounts.org_id, "csr": csr_pem(request),
                                "certType": self.profile(validation), "term": 90,
                                "subjAltNames": None, "externalRequester": None}
        body.update(extra)
        return self.call("POST", "/api/ssl/v1/enroll", json=body, headers=self.classic())


@pytest.fixture(scope="module")
def scm_lab(tmp_path_factory: pytest.TempPathFactory, tls_pki: pki.TlsHierarchy,
            scm_pki: pki.ScmHierarchy) -> Iterator[ScmLab]:
    """One emulated SCM per test module (use it with `fresh_scm`)."""
    directory = str(tmp_path_factory.mktemp("scm-lab"))
    accounts = ScmAccounts.generate()
    paths = tls_pki.write_files(directory, ["127.0.0.1", "localhost"])
    order_log = os.path.join(directory, "orders.jsonl")
    request_log = os.path.join(directory, "requests.jsonl")
    service = ScmService(scm_pki, tls_pki, accounts, order_log)
    context = server_ssl_context(paths["cert"], paths["key"],
                                 client_ca_pem=pki.cert_pem(tls_pki.root.cert))
    endpoint = Endpoint(service, context, request_log=request_log,
                        control_token=SCM_CONTROL_TOKEN).start()
    service.public_url = endpoint.url
    http = requests.Session()
    try:
        yield ScmLab(endpoint, service, accounts, tls_pki, paths["ca_bundle"], directory,
                     order_log, request_log, http)
    finally:
        http.close()
        endpoint.stop()


@pytest.fixture()
def fresh_scm(scm_lab: ScmLab) -> Iterator[None]:
    """The module's SCM with default settings and no faults, before and after the test."""
    from lab.scm import ScmSettings
    scm_lab.service.settings = ScmSettings()
    scm_lab.endpoint.faults.clear()
    yield
    scm_lab.service.settings = ScmSettings()
    scm_lab.endpoint.faults.clear()
    assert scm_lab.endpoint.internal_errors == 0
