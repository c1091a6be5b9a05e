"""The lab as one object: PKI, the emulated firewall and SCM, their ports, logs and credentials.

Used three ways: by the pytest fixtures (in-process, free ports), by
`paloaltoagent.py lab --workdir DIR` (prints one JSON line and serves until stopped), and by
`paloaltoagent.py demo`. Nothing in the agent imports this package.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import ssl
import threading
from typing import Any, Dict, List, Optional

from . import pki
from .ha import HaLink, HaSettings, pair_up
from .panos import Admin, PanosService, PanosSettings
from .panorama import PanoramaService, PanoramaSettings
from .scm import TOKEN_PATH, ScmAccounts, ScmService, ScmSettings
from .server import Endpoint, RequestLog, server_ssl_context

# The firewall's administrators: the agent's dedicated API account, a human superuser and a
# second human, so that partial commits by admin can be seen to leave others' changes alone.
AGENT_ADMIN = "certbot"
OTHER_ADMINS = ("admin", "alice")

# An SSL/TLS service profile that exists before the agent runs, bound to a self-signed
# certificate, as on a freshly set-up GlobalProtect portal.
SEED_PROFILE = "GP-Portal-TLS"
SEED_CERTIFICATE = "gp-portal-selfsigned"

# Every other kind of consumer (panorama-ha-bindings.md §4), as `seed_consumers` sets them up
# on a firewall, each using the seed certificate: the management interface through its own
# shared profile, a GlobalProtect portal through SEED_PROFILE and a gateway through a vsys1
# profile (which names the shared certificate, §5), an SSL inbound inspection rule (text
# before PAN-OS 10.2, a member list from 10.2) and an IKE gateway.
MANAGEMENT_PROFILE = "Mgmt-TLS"
GATEWAY_PROFILE = "GP-Gateway-TLS"
PORTAL = "GP-Portal"
GATEWAY = "GP-Gateway"
INBOUND_RULE = "Inbound-Web"
IKE_GATEWAY = "Branch-VPN"
VSYS1 = "/config/devices/entry[@name='localhost.localdomain']/vsys/entry[@name='vsys1']"


def seed_consumers(service: PanosService) -> None:
    """Give a firewall every consumer kind, all using SEED_CERTIFICATE (see above)."""
    device = "/config/devices/entry[@name='localhost.localdomain']"
    profile = ("<entry name='{}'><protocol-settings><min-version>tls1-2</min-version>"
               "<max-version>max</max-version></protocol-settings><certificate>"
               f"{SEED_CERTIFICATE}</certificate></entry>")
    service.seed("/config/shared/ssl-tls-service-profile", profile.format(MANAGEMENT_PROFILE))
    service.seed(f"{device}/deviceconfig/system",
                 f"<ssl-tls-service-profile>{MANAGEMENT_PROFILE}</ssl-tls-service-profile>")
    service.seed(f"{VSYS1}/ssl-tls-service-profile", profile.format(GATEWAY_PROFILE))
    service.seed(f"{VSYS1}/global-protect/global-protect-portal",
                 f"<entry name='{PORTAL}'><portal-config><ssl-tls-service-profile>"
                 f"{SEED_PROFILE}</ssl-tls-service-profile></portal-config></entry>")
    service.seed(f"{VSYS1}/global-protect/global-protect-gateway",
                 f"<entry name='{GATEWAY}'><ssl-tls-service-profile>{GATEWAY_PROFILE}"
                 "</ssl-tls-service-profile></entry>")
    inbound = f"<certificates><member>{SEED_CERTIFICATE}</member></certificates>" \
        if service.settings.list_form() else SEED_CERTIFICATE
    service.seed(f"{VSYS1}/rulebase/decryption/rules",
                 f"<entry name='{INBOUND_RULE}'><type><ssl-inbound-inspection>{inbound}"
                 "</ssl-inbound-inspection></type><action>decrypt</action></entry>")
    service.seed(f"{device}/network/ike/gateway",
                 f"<entry name='{IKE_GATEWAY}'><authentication><certificate>"
                 f"<local-certificate><name>{SEED_CERTIFICATE}</name></local-certificate>"
                 "</certificate></authentication></entry>")


# With a Panorama: one template with an SSL/TLS service profile (bound to a self-signed
# certificate in the template), in two template stacks that split the firewalls, and
# Panorama's own web interface profile.
TEMPLATE = "branch"
TEMPLATE_PROFILE = "Branch-Portal-TLS"
TEMPLATE_CERTIFICATE = "branch-selfsigned"
STACKS = ("stack-a", "stack-b")
PANORAMA_PROFILE = "Panorama-UI-TLS"
PANORAMA_CERTIFICATE = "panorama-selfsigned"


class Lab:
    """Start with `Lab(workdir).start()`; stop with `.stop()` (or use it as a context)."""

    def __init__(self, workdir: str, host: str = "127.0.0.1", panos_port: int = 0,
                 scm_port: int = 0, panos_settings: Optional[PanosSettings] = None,
                 scm_settings: Optional[ScmSettings] = None, seed: bool = True,
                 tls: Optional[pki.TlsHierarchy] = None,
                 hierarchy: Optional[pki.ScmHierarchy] = None, firewalls: int = 1,
                 panorama: int = 0,
                 panorama_settings: Optional[PanoramaSettings] = None,
                 ha_pair: bool = False, ha_settings: Optional[HaSettings] = None) -> None:
        """`panorama=N`: also a Panorama managing the first N firewalls (at least N are made).
        `ha_pair`: the first two firewalls are an HA pair, lab-fw-01 active (lab/ha.py)."""
        if ha_pair and 0 < panorama < 3:
            # The profile for a firewall through Panorama needs one outside the pair: the
            # agent does not reach HA pairs through Panorama.
            raise ValueError("--ha-pair with --panorama N needs N of at least 3 (Panorama "
                             "must manage a firewall outside the HA pair)")
        self.workdir = os.path.abspath(workdir)
        self.host = host
        self.control_token = secrets.token_urlsafe(16)
        labdir = os.path.join(self.workdir, "lab")
        os.makedirs(labdir, exist_ok=True)
        self.paths: Dict[str, str] = {
            "panos_requests": os.path.join(labdir, "panos-requests.jsonl"),
            "scm_requests": os.path.join(labdir, "scm-requests.jsonl"),
            "scm_orders": os.path.join(labdir, "scm-orders.jsonl"),
        }
        # Tests pass the hierarchies in, so that each test's lab starts in milliseconds.
        self.tls = tls or pki.TlsHierarchy.create()
        self.paths.update(self.tls.write_files(labdir, [host, "localhost"]))
        root_pem = pki.cert_pem(self.tls.root.cert)

        self.admin_passwords = {name: secrets.token_urlsafe(12)
                                for name in (AGENT_ADMIN,) + OTHER_ADMINS}
        # One process can present many firewalls, each on its own port with its own
        # configuration, keys and settings (so one can be made to fail while others work).
        self.firewalls: List[PanosService] = []
        for number in range(1, max(firewalls, panorama, 2 if ha_pair else 1) + 1):
            service = PanosService([Admin(n, p) for n, p in self.admin_passwords.items()],
                                   hostname=f"lab-fw-{number:02d}",
                                   serial=f"0079510{number:08d}",
                                   settings=dataclasses.replace(panos_settings or
                                                                PanosSettings()))
            if seed:
                service.seed_self_signed(SEED_CERTIFICATE, "portal.example.com")
                service.seed("/config/shared/ssl-tls-service-profile",
                             f'<entry name="{SEED_PROFILE}"><protocol-settings><min-version>'
                             "tls1-2</min-version><max-version>max</max-version>"
                             f"</protocol-settings><certificate>{SEED_CERTIFICATE}"
                             "</certificate></entry>")
            self.firewalls.append(service)
        self.panos = self.firewalls[0]
        self.ha: Optional[HaLink] = pair_up(self.firewalls[0], self.firewalls[1],
                                            ha_settings) if ha_pair else None
        self.panorama: Optional[PanoramaService] = None
        if panorama:
            self.panorama = self._make_panorama(self.firewalls[:panorama], seed,
                                                panorama_settings or PanoramaSettings())
        self.accounts = ScmAccounts.generate()
        self.scm = ScmService(hierarchy or pki.ScmHierarchy.create(), self.tls, self.accounts,
                              order_log=self.paths["scm_orders"], settings=scm_settings)

        context = server_ssl_context(self.paths["cert"], self.paths["key"])
        panos_log = RequestLog(self.paths["panos_requests"])
        self.panos_endpoints = [
            Endpoint(service, context, host, panos_port if index == 0 else 0, panos_log,
                     self.control_token) for index, service in enumerate(self.firewalls)]
        self.panos_endpoint = self.panos_endpoints[0]
        self.panorama_endpoint: Optional[Endpoint] = None
        if self.panorama is not None:
            self.panorama_endpoint = Endpoint(self.panorama, context, host, 0, panos_log,
                                              self.control_token)
        scm_context = server_ssl_context(self.paths["cert"], self.paths["key"], root_pem)
        self.scm_endpoint = Endpoint(self.scm, scm_context, host, scm_port,
                                     self.paths["scm_requests"], self.control_token)
        self.scm.public_url = self.scm_endpoint.url

    def _make_panorama(self, managed: List[PanosService], seed: bool,
                       settings: PanoramaSettings) -> PanoramaService:
        panorama = PanoramaService([Admin(n, p) for n, p in self.admin_passwords.items()],
                                   managed, settings=settings)
        for firewall in managed:
            # Template keys are sealed with Panorama's master key: the firewalls share it, as
            # real deployments must for pushed keys to open.
            firewall.master = panorama.master
        if seed:
            entry = panorama.self_signed(TEMPLATE_CERTIFICATE, "branch.example.com")
            panorama.seed_template(TEMPLATE, (
                f"<shared><certificate>{entry}</certificate><ssl-tls-service-profile>"
                f"<entry name='{TEMPLATE_PROFILE}'><protocol-settings><min-version>tls1-2"
                "</min-version><max-version>max</max-version></protocol-settings>"
                f"<certificate>{TEMPLATE_CERTIFICATE}</certificate></entry>"
                "</ssl-tls-service-profile></shared>"))
            half = (len(managed) + 1) // 2
            groups = [managed[:half], managed[half:]] if len(managed) > 1 else [managed]
            for stack, members in zip(STACKS, groups):
                panorama.seed_stack(stack, [TEMPLATE], [fw.serial for fw in members])
            own = panorama.self_signed(PANORAMA_CERTIFICATE, "panorama.example.com")
            panorama.seed("/config/panorama/certificate", own)
            panorama.seed("/config/panorama/ssl-tls-service-profile",
                          f"<entry name='{PANORAMA_PROFILE}'><protocol-settings><min-version>"
                          "tls1-2</min-version><max-version>max</max-version>"
                          f"</protocol-settings><certificate>{PANORAMA_CERTIFICATE}"
                          "</certificate></entry>")
            panorama.seed("/config/devices/entry[@name='localhost.localdomain']/deviceconfig"
                          "/system", f"<ssl-tls-service-profile>{PANORAMA_PROFILE}"
                                     "</ssl-tls-service-profile>")
            panorama.push_now()
        return panorama

    def start(self) -> "Lab":
        for endpoint in self.endpoints:
            endpoint.start()
        return self

    def stop(self) -> None:
        # All at once: each server notices its shutdown at its next poll (0.2 s), which one
        # after another took 40 s for a 200-firewall fleet.
        stopping = [threading.Thread(target=endpoint.stop) for endpoint in self.endpoints]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def endpoints(self) -> List[Endpoint]:
        extra = [self.panorama_endpoint] if self.panorama_endpoint is not None else []
        return self.panos_endpoints + extra + [self.scm_endpoint]

    @property
    def internal_errors(self) -> int:
        return sum(e.internal_errors for e in self.endpoints)

    def panos_api_key(self, admin: str = AGENT_ADMIN) -> str:
        return self.panos.api_key(admin)

    def info(self, config_path: Optional[str] = None) -> Dict[str, Any]:
        """What `lab` prints: everything a client needs to talk to the running lab."""
        scm = self.scm_endpoint.url
        return {
            "config": config_path,
            "ca_bundle": self.paths["ca_bundle"],
            "control_token": self.control_token,
            "panos": {"url": self.panos_endpoint.url, "api_key": self.panos_api_key(),
                      "username": AGENT_ADMIN, "password": self.admin_passwords[AGENT_ADMIN],
                      "admin": AGENT_ADMIN, "hostname": self.panos.hostname},
            "scm": {"enrollment_url": f"{scm}/api/v1",
                    "token_url": f"{scm}{TOKEN_PATH}",
                    "client_id": self.accounts.client_id,
                    "client_secret": self.accounts.client_secret,
                    "classic_url": f"{scm}/api",
                    "login": self.accounts.login, "password": self.accounts.password,
                    "customer_uri": self.accounts.customer_uri,
                    "org_id": self.accounts.org_id,
                    "cert_types": {v: self.accounts.profile_for(v).id
                                   for v in ("DV", "OV", "EV")}},
            "firewalls": [{"hostname": s.hostname, "url": e.url, "serial": s.serial,
                           "api_key": s.api_key(AGENT_ADMIN)}
                          for s, e in zip(self.firewalls, self.panos_endpoints)],
            "panorama": None if self.panorama is None or self.panorama_endpoint is None else {
                "hostname": self.panorama.hostname, "url": self.panorama_endpoint.url,
                "serial": self.panorama.serial, "managed": sorted(self.panorama.managed),
                "template": TEMPLATE, "stacks": list(STACKS)},
            "ha_pair": None if self.ha is None else {
                "peers": [p.hostname for p in self.ha.peers],
                "active": self.ha.active().hostname},
            "logs": {"panos_requests": self.paths["panos_requests"],
                     "scm_requests": self.paths["scm_requests"],
                     "scm_orders": self.paths["scm_orders"]},
        }

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the lab (for pan-python and the like)."""
        return ssl.create_default_context(cafile=self.paths["ca_bundle"])
