"""The typed configuration: what `config.py` builds from the YAML files, once, and the rest of
the agent trusts. Every default is written here and nowhere else (the loader passes only the
values a file gives); objects are built with keywords.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

# The key types a firewall can generate (panos.md §3.3), as profiles name them.
KEY_TYPES: Dict[str, Tuple[str, int]] = {
    "RSA-2048": ("RSA", 2048), "RSA-3072": ("RSA", 3072), "RSA-4096": ("RSA", 4096),
    "ECDSA-P256": ("ECDSA", 256), "ECDSA-P384": ("ECDSA", 384), "ECDSA-P521": ("ECDSA", 521)}
DIGESTS = ("sha256", "sha384", "sha512")
VALIDATIONS = ("DV", "OV", "EV")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
APIS = ("enrollment", "classic")
ENCRYPTION_MODES = ("none", "public-key", "symmetric")
# Defaults that are not a dataclass field's (config.py turns them into one).
PROFILES_DIR = "profiles"  # config.yaml's profiles_dir, relative to the file
STATE_DIR = "state"  # config.yaml's state_dir
HTTPS_PORT = 443  # a firewall profile's port, with host
# Certificate object names: at most 63 characters on a firewall, 31 on Panorama and in its
# templates (panos.md §3.11).
FIREWALL_NAME_LIMIT = 63
PANORAMA_NAME_LIMIT = 31


class Secret:
    """A secret value that will not show itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class KeySpec:
    algorithm: str = "RSA"  # "RSA" or "ECDSA"
    bits: int = 2048

    @property
    def label(self) -> str:
        return f"{self.algorithm}-{'P' if self.algorithm == 'ECDSA' else ''}{self.bits}"


@dataclass(frozen=True)
class Subject:
    """CSR subject fields beyond the common name (OV/EV)."""

    organization: Optional[str] = None
    organizational_unit: Tuple[str, ...] = ()
    locality: Optional[str] = None
    state: Optional[str] = None
    country: Optional[str] = None
    email: Optional[str] = None


@dataclass(frozen=True)
class RenewalWindow:
    """When a certificate becomes due: a number of days before it expires, or a share of its
    lifetime (`33%`), which stays right as public lifetimes shrink from 200 to 47 days.
    `source` is the file and field it was set in, for messages."""

    days: int = 30
    percent: Optional[int] = None
    source: str = ""

    def before_expiry(self, lifetime: dt.timedelta) -> dt.timedelta:
        """How long before expiry a certificate of this lifetime becomes due."""
        if self.percent is not None:
            return lifetime * self.percent / 100
        return dt.timedelta(days=self.days)

    def __str__(self) -> str:
        return f"{self.percent}% of the lifetime" if self.percent is not None else \
            f"{self.days} days"


@dataclass(frozen=True)
class OrderSettings:
    """What goes into the SCM order besides the CSR."""

    profile_id: Optional[int] = None
    term: Optional[int] = None  # None: SCM's default for the profile
    org_id: Optional[int] = None
    comments: Optional[str] = None
    external_requester: Optional[str] = None
    custom_fields: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BindingSettings:
    """The consumers a certificate feeds beyond its SSL/TLS service profiles (the profile's
    `bindings:` section; panorama-ha-bindings.md §4)."""

    management_ui: bool = False  # the management interface's SSL/TLS profile
    globalprotect_portals: Tuple[str, ...] = ()  # through each one's SSL/TLS profile
    globalprotect_gateways: Tuple[str, ...] = ()
    decryption_rules: Tuple[str, ...] = ()  # SSL inbound inspection rules
    ike_gateways: Tuple[str, ...] = ()  # local certificate of each
    follow: bool = True  # also repoint every managed consumer of the superseded object


@dataclass(frozen=True)
class CertificateProfile:
    """One certificate on one firewall (`profiles_dir/NAME.yaml`)."""

    name: str
    path: str
    firewall: str
    object_name: str
    validation: str  # DV | OV | EV
    common_name: str
    subject_alt_names: Tuple[str, ...] = ()
    subject: Subject = Subject()
    key: KeySpec = KeySpec()
    digest: str = "sha256"
    order: OrderSettings = OrderSettings()
    renewal: RenewalWindow = RenewalWindow()
    ssl_tls_service_profiles: Tuple[str, ...] = ()
    bindings: BindingSettings = BindingSettings()

    @property
    def names(self) -> Tuple[str, ...]:
        """Every name the certificate must cover: the common name first, then the SANs."""
        return tuple(dict.fromkeys((self.common_name,) + self.subject_alt_names))


@dataclass(frozen=True)
class TlsSettings:
    verify: bool = True
    ca_bundle: Optional[str] = None
    fingerprint: Optional[str] = None  # SHA-256 of the server certificate, lower-case hex


class DeviceKind(str, Enum):
    """What a device profile (`type:`) is."""

    FIREWALL = "firewall"  # a firewall: directly, or through Panorama with `via`
    PANORAMA = "panorama"  # a Panorama: its own certificates
    TEMPLATE = "panorama-template"  # a template on a Panorama, pushed to its stacks

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class FirewallProfile:
    """One device (a block of a `profiles_dir/fw_*.yaml` file): a firewall, a Panorama, a
    template on a Panorama, or a firewall reached through a Panorama. The last two have their
    Panorama's connection settings (url, credentials, admin, TLS, timeouts)."""

    name: str
    path: str
    url: str  # https://host[:port], the management interface (Panorama's, when linked)
    admin: str  # whose changes the partial commit takes
    api_key: Optional[Secret] = None
    username: Optional[str] = None
    password: Optional[Secret] = None
    commit_description: str = "Certificates updated by paloaltoagent"
    tls: TlsSettings = TlsSettings()
    vsys: Optional[str] = None  # None: the shared certificate store
    timeout: float = 30.0
    commit_timeout: float = 600.0
    kind: DeviceKind = DeviceKind.FIREWALL
    panorama: Optional[str] = None  # a template's, or a `via` firewall's, Panorama entry
    serial: Optional[str] = None  # a firewall through Panorama: requests carry target=SERIAL
    template: Optional[str] = None  # a template entry: the template's name on Panorama
    template_stacks: Tuple[str, ...] = ()  # where to push; empty: every stack holding it
    push_timeout: float = 900.0  # a Panorama: seconds to wait for a push's devices
    ha_peer: Optional[str] = None  # the other firewall entry of its HA pair
    peer: Optional["FirewallProfile"] = None  # that entry, resolved (its own peer unset)
    ha_sync_timeout: float = 120.0  # seconds to wait for the pair's config sync

    @property
    def label(self) -> str:
        """How messages name the device: `firewall X`, `Panorama X`."""
        return f"firewall {self.name}" if self.kind is DeviceKind.FIREWALL else \
            f"Panorama {self.panorama or self.name}" if self.kind is DeviceKind.PANORAMA \
            else f"Panorama {self.panorama} template {self.template}"

    @property
    def object_name_limit(self) -> int:
        """Certificate object names: 63 characters on a firewall, 31 on Panorama and in its
        templates (panos.md §3.11)."""
        return FIREWALL_NAME_LIMIT if self.kind is DeviceKind.FIREWALL else PANORAMA_NAME_LIMIT


@dataclass(frozen=True)
class ScmCredentials:
    """One labelled block of the SCM credentials file (sectigo.md §2.1)."""

    label: str
    path: str
    api: str  # enrollment | classic
    url: str
    client_id: Optional[str] = None
    client_secret: Optional[Secret] = None
    token_url: Optional[str] = None
    login: Optional[str] = None
    password: Optional[Secret] = None
    customer_uri: Optional[str] = None
    org_id: Optional[int] = None
    cert_type: Optional[int] = None
    client_cert: Optional[str] = None
    client_key: Optional[str] = None


@dataclass(frozen=True)
class ScmSettings:
    credentials: ScmCredentials
    tls: TlsSettings = TlsSettings()
    timeout: float = 30.0
    poll_interval: float = 10.0
    poll_timeout: float = 120.0
    # Classic-API credentials used only to find an order an interrupted run placed but never
    # recorded (the Enrollment API cannot list orders); the main ones when they are classic.
    lookup: Optional[ScmCredentials] = None


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    file: Optional[str] = None
    max_bytes: int = 10 * 1024 * 1024
    backup_count: int = 5


@dataclass(frozen=True)
class EncryptionSettings:
    mode: str = "none"  # none | public-key | symmetric
    gpg_home: Optional[str] = None
    gpg_binary: str = "gpg"
    recipient: Optional[str] = None
    passphrase_file: Optional[str] = None
    passphrase_env: Optional[str] = None


@dataclass(frozen=True)
class EmailSettings:
    host: str
    sender: str
    recipients: Tuple[str, ...]
    port: int = 587
    starttls: bool = True
    username: Optional[str] = None
    password: Optional[Secret] = None
    ca_bundle: Optional[str] = None
    timeout: float = 30.0


@dataclass(frozen=True)
class WebhookSettings:
    url: Secret  # incoming-webhook URLs carry their token
    ca_bundle: Optional[str] = None
    timeout: float = 30.0


@dataclass(frozen=True)
class NotificationSettings:
    """Alerts on failures, and on certificates the run left within `expiry_warning_days`."""

    expiry_warning_days: int = 14
    email: Optional[EmailSettings] = None
    webhook: Optional[WebhookSettings] = None


@dataclass(frozen=True)
class Config:
    path: str
    base_dir: str
    profiles_dir: str
    state_dir: str
    logging: LoggingSettings = LoggingSettings()
    encryption: EncryptionSettings = EncryptionSettings()
    renewal: RenewalWindow = RenewalWindow()
    scm: Optional[ScmSettings] = None
    firewalls: Dict[str, FirewallProfile] = field(default_factory=dict)
    certificates: Dict[str, CertificateProfile] = field(default_factory=dict)
    max_parallel_firewalls: int = 16
    metrics_file: Optional[str] = None
    notifications: Optional[NotificationSettings] = None

    def secrets(self) -> List[str]:
        """Every secret value, for the log redaction filter."""
        values: List[Optional[Secret]] = []
        if self.notifications:
            if self.notifications.email:
                values.append(self.notifications.email.password)
            if self.notifications.webhook:
                url = self.notifications.webhook.url
                values.append(url)
                # urllib3's debug line names only the path, where webhook services put the
                # token. A short path holds no token, and masking it would blur other lines.
                path = urlsplit(url.reveal())._replace(scheme="", netloc="").geturl()
                if len(path) >= 16:
                    values.append(Secret(path))
        for fw in self.firewalls.values():
            values += [fw.api_key, fw.password]
        if self.scm:
            for creds in (self.scm.credentials, self.scm.lookup):
                if creds is not None:
                    values += [creds.client_secret, creds.password]
        return [v.reveal() for v in values if v]
