"""Configuration and profiles: read once, validated completely, turned into typed objects.

Layout (README, "Configuration reference"):

* `config.yaml`: SCM settings, logging, encryption, renewal defaults, where things live;
* `profiles_dir/sectigo_credentials.yaml`: labelled SCM credential blocks (Sectigo SDK format,
  sectigo.md §2.1);
* `profiles_dir/fw_*.yaml`: firewall profiles, one block per firewall;
* every other `profiles_dir/*.yaml`: one certificate profile each, named after the file.

Every check happens here, before any request is sent; an error names the file and the field.
The rest of the agent trusts these objects.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import yaml

from .errors import ConfigError

# PAN-OS object names: at most 63 characters on a firewall (31 on Panorama). We allow the
# subset every source agrees on (panos.md §3.11; peers.md §2: '*' and '_' cannot lead).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_OBJECT_NAME = 63
# The longest renewal window, as a share of the certificate's lifetime: a longer one would
# replace a certificate soon after it is issued, on nearly every run.
MAX_WINDOW_PERCENT = 90
# Renewals go under `<object_name>-YYYYMMDD[-N]`, so the base must leave room for that.
RENEWAL_SUFFIX_ROOM = 13
KEY_TYPES = {"RSA-2048": ("RSA", 2048), "RSA-3072": ("RSA", 3072), "RSA-4096": ("RSA", 4096),
             "ECDSA-P256": ("ECDSA", 256), "ECDSA-P384": ("ECDSA", 384),
             "ECDSA-P521": ("ECDSA", 521)}
DIGESTS = ("sha256", "sha384", "sha512")
VALIDATIONS = ("DV", "OV", "EV")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ISO_COUNTRIES = set(
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ "
    "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM "
    "DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS "
    "GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN "
    "KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ "
    "MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM "
    "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
    "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI "
    "VN VU WF WS YE YT ZA ZM ZW".split())
DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
CREDENTIALS_FILE = "sectigo_credentials.yaml"
NOTIFICATIONS_FILE = "notifications.yaml"
# The fields `encrypt` and the run-time decryption treat as secret, per kind of file.
SECRET_FIELDS = ("client_secret", "scm_password", "api_key", "password")
NOTIFICATION_SECRETS = ("password", "url")
ENCRYPTED_MARKER = "-----BEGIN PGP MESSAGE-----"

# Decrypts a GPG-armoured value in memory: (ciphertext, file, field) -> plaintext.
Decryptor = Callable[[str, str, str], str]


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


# --- typed configuration ----------------------------------------------------------------------

@dataclass(frozen=True)
class KeySpec:
    algorithm: str  # "RSA" or "ECDSA"
    bits: int

    @property
    def label(self) -> str:
        return f"{self.algorithm}-{'P' if self.algorithm == 'ECDSA' else ''}{self.bits}"


@dataclass(frozen=True)
class Subject:
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

    profile_id: Optional[int]
    term: Optional[int] = None
    org_id: Optional[int] = None
    comments: Optional[str] = None
    external_requester: Optional[str] = None
    custom_fields: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CertificateProfile:
    name: str
    path: str
    firewall: str
    object_name: str
    validation: str
    common_name: str
    subject_alt_names: Tuple[str, ...]
    subject: Subject
    key: KeySpec
    digest: str
    order: OrderSettings
    renewal: RenewalWindow
    ssl_tls_service_profiles: Tuple[str, ...]

    @property
    def names(self) -> Tuple[str, ...]:
        """Every name the certificate must cover: the common name first, then the SANs."""
        return tuple(dict.fromkeys((self.common_name,) + self.subject_alt_names))


@dataclass(frozen=True)
class TlsSettings:
    verify: bool = True
    ca_bundle: Optional[str] = None
    fingerprint: Optional[str] = None  # SHA-256 of the server certificate, lower-case hex


@dataclass(frozen=True)
class FirewallProfile:
    name: str
    path: str
    url: str
    admin: str
    api_key: Optional[Secret] = None
    username: Optional[str] = None
    password: Optional[Secret] = None
    commit_description: str = "Certificates updated by paloaltoagent"
    tls: TlsSettings = TlsSettings()
    vsys: Optional[str] = None
    timeout: float = 30.0
    commit_timeout: float = 600.0


@dataclass(frozen=True)
class ScmCredentials:
    label: str
    path: str
    api: str  # "enrollment" or "classic"
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
    tls: TlsSettings
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
    logging: LoggingSettings
    encryption: EncryptionSettings
    renewal: RenewalWindow
    scm: Optional[ScmSettings]
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


# --- reading YAML strictly --------------------------------------------------------------------

# libyaml's parser when PyYAML has it (ten times faster on a fleet's thousand profiles); the
# constructor is the safe one either way.
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """Safe loading, and a duplicate key is an error (PyYAML would keep the last silently)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise ConfigError("file not found", path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a YAML file", path) from None
    except PermissionError:
        raise ConfigError("cannot read the file (permission denied)", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file ({exc.strerror or exc})", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if "alias" in f"{getattr(exc, 'context', '')} {problem}":
            # `common_name: *.example.com`: in YAML a leading * starts an alias.
            problem += "; a value that starts with '*' (a wildcard name) must be quoted, " \
                       "e.g. common_name: \"*.example.com\""
        raise ConfigError(f"invalid YAML: {where}{problem}", path) from None


class Fields:
    """Typed, checked access to one YAML mapping; errors name the file and the field."""

    def __init__(self, data: Any, path: str, prefix: str = "",
                 decrypt: Optional[Decryptor] = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping (key: value lines)", path, prefix or None)
        self.data: Dict[str, Any] = data
        self.path = path
        self.prefix = prefix
        self.decrypt = decrypt

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, self.path, self.name(key))

    def only(self, known: Sequence[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.error(str(key), f"unknown field{did_you_mean(str(key), known)}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def section(self, key: str) -> "Fields":
        return Fields(self.data.get(key), self.path, self.name(key), self.decrypt)

    def str(self, key: str, default: Optional[str] = None, required: bool = False) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(key, "required field is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(key, f"must be text, not {type(value).__name__}")
        text = str(value).strip()
        if not text and required:
            raise self.error(key, "must not be empty")
        return text or default

    def secret(self, key: str, required: bool = False) -> Optional[Secret]:
        value = self.str(key, required=required)
        if value is None:
            return None
        if value.startswith(ENCRYPTED_MARKER):
            if self.decrypt is None:
                raise self.error(key, "is GPG-encrypted but config.yaml has no encryption "
                                      "settings to decrypt it")
            value = self.decrypt(value, self.path, self.name(key))
        return Secret(value)

    def int(self, key: str, default: Optional[int] = None, minimum: Optional[int] = None,
            maximum: Optional[int] = None, required: bool = False) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.error(key, "required field is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be a whole number, not {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}")
        return value

    def number(self, key: str, default: float, minimum: float = 0.0) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, not {value!r}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: Optional[str] = None,
               required: bool = False, upper: bool = False) -> Any:
        value = self.str(key, default, required)
        if value is None:
            return None
        normalized = value.upper() if upper else value
        if normalized not in choices:
            raise self.error(key, f"'{value}' is not one of {', '.join(choices)}")
        return normalized

    def str_list(self, key: str) -> List[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.error(key, "must be a list")
        out = []
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int)) or \
                    not str(item).strip():
                raise self.error(f"{key}[{index}]", "must be non-empty text")
            out.append(str(item).strip())
        return out

    def file(self, key: str, base: str) -> Optional[str]:
        value = self.str(key)
        if value is None:
            return None
        path = resolve(base, value)
        if not os.path.isfile(path):
            raise self.error(key, f"file not found: {path}")
        return path


    def ca_bundle(self, key: str, base: str) -> Optional[str]:
        """A PEM file of CA certificates, checked now: a DER file, a key or a bundle with no
        readable certificate would otherwise fail only when connecting, as a TLS error."""
        path = self.file(key, base)
        if path is not None:
            problem = pem_bundle_problem(path)
            if problem:
                raise self.error(key, f"{path}: {problem}")
        return path


@functools.lru_cache(maxsize=32)
def _pem_bundle_problem(path: str, _identity: Tuple[int, int]) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return "is not a PEM CA bundle (no '-----BEGIN CERTIFICATE-----' block; convert a " \
               "DER file with: openssl x509 -inform der -in FILE -out FILE.pem)"
    import ssl  # the check TLS itself will make when connecting
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        detail = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))
        return f"cannot be loaded as PEM CA certificates (OpenSSL: {detail})"
    return None


def pem_bundle_problem(path: str) -> Optional[str]:
    """Why `path` is not a usable PEM CA bundle (None: it is). Checked once per file version:
    a fleet's firewall profiles usually share one bundle."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return _pem_bundle_problem(path, (info.st_mtime_ns, info.st_size))


def resolve(base: str, value: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def did_you_mean(word: str, options: Sequence[str]) -> str:
    hint = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean '{hint[0]}'?" if hint else \
        (f"; known: {', '.join(sorted(options))}" if options else "")


def check_private(path: str) -> None:
    """Refuse a credentials file that group or others can read (or write)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"holds credentials but is readable by group or others (mode "
                          f"{stat.S_IMODE(mode):o}); run: chmod 600 '{path}'", path)


# --- value checks ----------------------------------------------------------------------------

def valid_dns_name(name: str, wildcard: bool = True) -> bool:
    if len(name) > 253:
        return False
    labels = name.rstrip(".").split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return False
    return len(labels) >= 1 and all(DNS_LABEL.fullmatch(label) for label in labels)


def valid_name_value(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return valid_dns_name(name)


def certificate_name_problem(name: str, validation: str) -> Optional[str]:
    """Why SCM would refuse `name` in a certificate (None: it would not), in words an
    administrator can act on. Only fully qualified names and valid IP addresses are issued by
    a public CA; a wildcard must be the whole leftmost label, and never on EV."""
    if not name.isascii():
        import idna  # requests' own dependency: IDNA 2008, as CAs apply it
        try:
            ascii_form = idna.encode(name.rstrip("."), uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return f"'{name}' is not a valid DNS name (non-ASCII characters)"
        return f"'{name}' has non-ASCII characters; write its punycode form '{ascii_form}'"
    if ":" in name or re.fullmatch(r"[0-9.]+", name):
        try:
            if "%" in name:  # a scoped (link-local) address names an interface, not a host
                raise ValueError(name)
            ipaddress.ip_address(name)
            return None
        except ValueError:
            return f"'{name}' is not a valid IP address"
    if name.endswith("."):
        return f"'{name}' ends with a dot; write it without: '{name.rstrip('.')}'"
    if len(name) > 253:
        return f"'{name[:40]}...' is longer than 253 characters"
    labels = name.split(".")
    if "*" in name:
        if labels[0] != "*" or "*" in ".".join(labels[1:]):
            return f"'{name}': a wildcard must be the whole leftmost label, as in " \
                   "'*.example.com'"
        if validation == "EV":
            return f"'{name}': EV certificates cannot have wildcard names (EV Guidelines); " \
                   "use OV or DV, or list the names"
        labels = labels[1:]
        if len(labels) < 2:
            return f"'{name}': a wildcard needs a domain of at least two labels after it, " \
                   "as in '*.example.com'"
    bad = next((label for label in labels if not DNS_LABEL.fullmatch(label)), None)
    if bad is not None:
        return f"'{name}' is not a DNS name or IP address (label '{bad}': letters, digits " \
               "and '-' only, not at either end)" if bad else \
            f"'{name}' is not a DNS name or IP address (empty label)"
    if len(labels) < 2:
        return f"'{name}' is a single label; SCM issues only fully qualified names " \
               f"(e.g. '{name}.example.com')"
    if labels[-1].isdigit():
        return f"'{name}': the top-level label '{labels[-1]}' is numeric, which no domain is"
    return None


def renewal_window(fields: Fields, days_key: str, default: RenewalWindow) -> RenewalWindow:
    """`renew_before: 33%` (a share of the lifetime) or `renew_before: 30` (days), or the
    older `<days_key>: 30`; one of them at most."""
    if fields.has(days_key) and fields.has("renew_before"):
        raise fields.error("renew_before", f"give renew_before or {days_key}, not both")
    if fields.has(days_key):
        return RenewalWindow(days=fields.int(days_key, minimum=0, maximum=3650),
                             source=f"{fields.path}: {fields.name(days_key)}")
    if not fields.has("renew_before"):
        return default
    value = fields.data["renew_before"]
    source = f"{fields.path}: {fields.name('renew_before')}"
    text = str(value).strip() if not isinstance(value, bool) and \
        isinstance(value, (int, str)) else ""
    match = re.fullmatch(r"(\d{1,4})\s*(%|d|days?)?", text)
    if not match:
        raise fields.error("renew_before", f"{value!r} must be a number of days (30) or a "
                                           "share of the lifetime (33%)")
    number, unit = int(match.group(1)), match.group(2)
    if unit == "%":
        if not 1 <= number <= MAX_WINDOW_PERCENT:
            raise fields.error("renew_before", f"{number}% must be between 1% and "
                                               f"{MAX_WINDOW_PERCENT}% of the lifetime")
        return RenewalWindow(percent=number, source=source)
    if number > 3650:
        raise fields.error("renew_before", "must be at most 3650 days")
    return RenewalWindow(days=number, source=source)


def check_object_name(fields: Fields, key: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise fields.error(key, f"'{value}' has {len(value)} characters; at most {limit} "
                                f"(PAN-OS allows {MAX_OBJECT_NAME}, and renewals add "
                                "'-YYYYMMDD-N')")
    if not NAME_RE.fullmatch(value):
        hint = re.sub(r"[^A-Za-z0-9_-]+", "-", value).strip("-_") or "my-certificate"
        raise fields.error(key, f"'{value}' is not a valid PAN-OS object name: use letters, "
                                f"digits, '-' and '_', starting with a letter or digit "
                                f"(for example '{hint}')")


def normalize_fingerprint(fields: Fields, key: str) -> Optional[str]:
    value = fields.str(key)
    if value is None:
        return None
    hexa = value.replace(":", "").replace(" ", "").lower()
    if hexa.startswith("sha256/"):
        hexa = hexa[7:]
    if not re.fullmatch(r"[0-9a-f]{64}", hexa):
        raise fields.error(key, "must be the SHA-256 fingerprint of the certificate "
                                "(64 hex digits, colons allowed)")
    return hexa


def tls_settings(fields: Fields, base: str) -> TlsSettings:
    verify = fields.bool("verify_tls", True)
    return TlsSettings(verify, fields.ca_bundle("ca_bundle", base),
                       normalize_fingerprint(fields, "fingerprint"))


def https_url(fields: Fields, key: str, required: bool = True) -> Any:
    value = fields.str(key, required=required)
    if value is None:
        return None
    scheme, separator, rest = value.partition("://")
    if separator and "@" in rest:
        # A user name or password. Never repeat what stands before the last @: a password may
        # hold '/', '?' or '#', which would make it look like a path to a URL parser.
        shown = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        raise fields.error(key, f"'{shown}' holds a user name or password; remove the "
                                "'user:password@' part (credentials have fields of their own)")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise fields.error(key, f"'{value}' must be an https:// URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise fields.error(key, f"'{value}' has an invalid port") from None
    if parts.query or parts.fragment:
        raise fields.error(key, f"'{value}' must not have a query (?...) or fragment (#...)")
    return value.rstrip("/")


def firewall_url(fields: Fields, key: str) -> str:
    """The management interface's origin. PAN-OS documentation writes the API's address as
    `https://firewall/api/`, so that form is accepted too; any other path is refused here
    rather than answered with a 404 at run time."""
    value = https_url(fields, key)
    parts = urlsplit(value)
    if parts.path.rstrip("/") not in ("", "/api"):
        raise fields.error(key, f"'{value}' has the path '{parts.path}'; give only "
                                f"https://host[:port] (or https://host[:port]/api/)")
    return f"https://{parts.netloc}"


# --- the files --------------------------------------------------------------------------------

CONFIG_FIELDS = ("profiles_dir", "state_dir", "scm", "logging", "encryption", "renewal",
                 "max_parallel_firewalls", "metrics")
DEFAULT_PARALLEL = 16
SCM_FIELDS = ("credentials_file", "credentials_label", "lookup_label", "ca_bundle",
              "verify_tls", "fingerprint", "timeout", "poll_interval", "poll_timeout")
FIREWALL_FIELDS = ("url", "host", "port", "api_key", "username", "password", "admin",
                   "commit_description", "verify_tls", "ca_bundle", "fingerprint", "vsys",
                   "timeout", "commit_timeout")
CERTIFICATE_FIELDS = ("firewall", "object_name", "validation", "common_name",
                      "subject_alt_names", "subject", "key", "digest", "scm",
                      "renew_before_days", "renew_before", "ssl_tls_service_profiles")
SUBJECT_FIELDS = ("organization", "organizational_unit", "locality", "state", "country",
                  "email")
ORDER_FIELDS = ("profile_id", "term", "org_id", "comments", "external_requester",
                "custom_fields")
ENROLLMENT_KEYS = ("client_id", "client_secret", "scm_url", "token_url", "api")
CLASSIC_KEYS = ("scm_url", "scm_user", "scm_password", "scm_uri", "scm_org_id",
                "scm_ssl_cert_type", "scm_client_cert", "scm_client_key", "client_id",
                "client_secret", "token_url", "api")


def _encryption(top: Fields, base: str) -> EncryptionSettings:
    enc = top.section("encryption")
    enc.only(("mode", "gpg_home", "gpg_binary", "recipient", "passphrase_file",
              "passphrase_env"))
    mode = enc.choice("mode", ("none", "public-key", "symmetric"), "none")
    settings = EncryptionSettings(
        mode, resolve(base, enc.str("gpg_home")) if enc.has("gpg_home") else None,
        enc.str("gpg_binary", "gpg"), enc.str("recipient"),
        resolve(base, enc.str("passphrase_file")) if enc.has("passphrase_file") else None,
        enc.str("passphrase_env"))
    if mode == "public-key" and not settings.recipient:
        raise enc.error("recipient", "required when mode is public-key")
    if settings.passphrase_file and settings.passphrase_env:
        raise enc.error("passphrase_env", "give passphrase_file or passphrase_env, not both")
    return settings


def _paths(top: Fields, base: str) -> Tuple[str, str, str]:
    """(profiles_dir, state_dir, credentials file)."""
    profiles_dir = resolve(base, top.str("profiles_dir", "profiles"))
    state_dir = resolve(base, top.str("state_dir", "state"))
    if not os.path.isdir(profiles_dir):
        raise top.error("profiles_dir", f"directory not found: {profiles_dir}")
    credentials = resolve(base, top.section("scm").str(
        "credentials_file", os.path.join(profiles_dir, CREDENTIALS_FILE)))
    return profiles_dir, state_dir, credentials


def _yaml_files(profiles_dir: str) -> List[str]:
    """The YAML files of profiles_dir, whatever the case of their extension (`A.YAML`);
    hidden files (editors' backups and locks) are not profiles."""
    try:
        names = sorted(os.listdir(profiles_dir))
    except OSError as exc:
        raise ConfigError(f"cannot list the directory ({exc.strerror})", profiles_dir) \
            from None
    return [os.path.join(profiles_dir, n) for n in names
            if not n.startswith(".") and n.lower().endswith((".yaml", ".yml"))]


def _is_firewall_file(path: str) -> bool:
    return os.path.basename(path).lower().startswith("fw_")


def _firewall_files(profiles_dir: str) -> List[str]:
    return [f for f in _yaml_files(profiles_dir) if _is_firewall_file(f)]


def _certificate_files(profiles_dir: str, credentials_path: str) -> List[str]:
    """Every certificate profile file; two files for one profile name (`a.yaml` and
    `a.yml`) are an error rather than one of them silently winning."""
    files: Dict[str, str] = {}
    for path in _yaml_files(profiles_dir):
        if _is_firewall_file(path) or os.path.abspath(path) == credentials_path or \
                os.path.basename(path).lower() == NOTIFICATIONS_FILE:
            continue
        name = os.path.splitext(os.path.basename(path))[0]
        if name in files:
            raise ConfigError(f"defines certificate profile '{name}' as "
                              f"{os.path.basename(files[name])} does; remove or rename one of "
                              "the two", path)
        files[name] = path
    return list(files.values())


def secret_files(path: str) -> Tuple[EncryptionSettings, List[str]]:
    """What `encrypt`/`decrypt` work on by default: the SCM credentials file and every
    firewall profile file; with the encryption settings."""
    path = os.path.abspath(path)
    top = Fields(read_yaml(path), path)
    top.only(CONFIG_FIELDS)
    base = os.path.dirname(path)
    profiles_dir, _, credentials = _paths(top, base)
    notifications = os.path.join(profiles_dir, NOTIFICATIONS_FILE)
    files = ([credentials] if os.path.isfile(credentials) else []) + \
        _firewall_files(profiles_dir) + \
        ([notifications] if os.path.isfile(notifications) else [])
    return _encryption(top, base), files


def load_config(path: str, make_decryptor: Optional[Callable[[EncryptionSettings, str],
                                                             Decryptor]] = None,
                need_scm: bool = True) -> Config:
    """Read and validate config.yaml and everything it points to. Encrypted secrets are
    decrypted in memory with the decryptor `make_decryptor` builds from the settings."""
    path = os.path.abspath(path)
    top = Fields(read_yaml(path), path)
    top.only(CONFIG_FIELDS)
    base = os.path.dirname(path)
    profiles_dir, state_dir, credentials_path = _paths(top, base)

    log = top.section("logging")
    log.only(("level", "file", "max_bytes", "backup_count"))
    log_file = log.str("file")
    logging_settings = LoggingSettings(
        log.choice("level", LOG_LEVELS, "INFO", upper=True),
        resolve(base, log_file) if log_file else None,
        log.int("max_bytes", 10 * 1024 * 1024, minimum=1024),
        log.int("backup_count", 5, minimum=0, maximum=100))
    encryption = _encryption(top, base)
    decrypt = make_decryptor(encryption, path) if make_decryptor and \
        encryption.mode != "none" else None
    try:
        return _load_rest(path, top, base, profiles_dir, state_dir, credentials_path,
                          logging_settings, encryption, decrypt, need_scm)
    finally:
        close = getattr(decrypt, "close", None)
        if close is not None:
            close()  # every secret is read: stop what gpg started for them


def _load_rest(path: str, top: Fields, base: str, profiles_dir: str, state_dir: str,
               credentials_path: str, logging_settings: LoggingSettings,
               encryption: EncryptionSettings, decrypt: Optional[Decryptor],
               need_scm: bool) -> Config:

    renewal = top.section("renewal")
    renewal.only(("days_before_expiry", "renew_before"))
    window = renewal_window(renewal, "days_before_expiry", RenewalWindow(
        source=f"{path}: renewal.days_before_expiry (default)"))

    scm_fields = top.section("scm")
    scm_fields.only(SCM_FIELDS)
    firewalls: Dict[str, FirewallProfile] = {}
    for file_path in _firewall_files(profiles_dir):
        if os.path.abspath(file_path) == credentials_path:
            continue
        for profile in load_firewalls(file_path, decrypt):
            if profile.name in firewalls:
                raise ConfigError(f"firewall profile '{profile.name}' is also defined in "
                                  f"{firewalls[profile.name].path}", file_path, profile.name)
            firewalls[profile.name] = profile
    scm = None
    if need_scm:
        credentials = load_credentials(credentials_path, scm_fields.str("credentials_label"),
                                       decrypt)
        lookup = credentials if credentials.api == "classic" else None
        lookup_label = scm_fields.str("lookup_label")
        if lookup_label:
            lookup = load_credentials(credentials_path, lookup_label, decrypt)
            if lookup.api != "classic":
                raise scm_fields.error("lookup_label", f"block '{lookup_label}' must hold "
                                                       "classic API credentials (scm_user ...)")
        scm = ScmSettings(credentials, tls_settings(scm_fields, base),
                          scm_fields.number("timeout", 30.0, 1.0),
                          scm_fields.number("poll_interval", 10.0, 0.0),
                          scm_fields.number("poll_timeout", 120.0, 0.0), lookup)
    certificates: Dict[str, CertificateProfile] = {}
    for file_path in _certificate_files(profiles_dir, credentials_path):
        profile = load_certificate(file_path, firewalls, window,
                                   scm.credentials if scm else None)
        certificates[profile.name] = profile
    claimed: Dict[Tuple[str, str], str] = {}
    for profile in certificates.values():
        key = (profile.firewall, profile.object_name.lower())
        if key in claimed:
            raise ConfigError(f"object '{profile.object_name}' on firewall "
                              f"'{profile.firewall}' is already managed by certificate profile "
                              f"'{claimed[key]}'; give each profile its own object_name",
                              profile.path, "object_name")
        claimed[key] = profile.name
    metrics = top.section("metrics")
    metrics.only(("file",))
    notifications_path = os.path.join(profiles_dir, NOTIFICATIONS_FILE)
    return Config(path, base, profiles_dir, state_dir, logging_settings, encryption,
                  window, scm, firewalls, certificates, max_parallel_firewalls=top.int(
                      "max_parallel_firewalls", DEFAULT_PARALLEL, minimum=1, maximum=256),
                  metrics_file=resolve(base, metrics.str("file")) if metrics.has("file")
                  else None,
                  notifications=load_notifications(notifications_path, decrypt)
                  if os.path.isfile(notifications_path) else None)


def load_notifications(path: str, decrypt: Optional[Decryptor]) -> NotificationSettings:
    top = Fields(read_yaml(path), path, decrypt=decrypt)
    top.only(("expiry_warning_days", "email", "webhook"))
    base = os.path.dirname(path)
    email = webhook = None
    if top.has("email"):
        fields = top.section("email")
        fields.only(("host", "port", "starttls", "username", "password", "from", "to",
                     "ca_bundle", "timeout"))
        recipients = fields.str_list("to")
        if not recipients:
            raise fields.error("to", "give at least one recipient address")
        for index, address in enumerate(recipients + [fields.str("from", required=True)]):
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
                raise fields.error(f"to[{index}]" if index < len(recipients) else "from",
                                   f"'{address}' is not an e-mail address")
        username, password = fields.str("username"), fields.secret("password")
        if bool(username) != bool(password):
            raise fields.error("password", "username and password go together")
        starttls = fields.bool("starttls", True)
        if password and not starttls:
            raise fields.error("starttls", "a password is only sent over STARTTLS")
        email = EmailSettings(fields.str("host", required=True), fields.str("from"),
                              tuple(recipients), fields.int("port", 587, 1, 65535), starttls,
                              username, password, fields.ca_bundle("ca_bundle", base),
                              fields.number("timeout", 30.0, 1.0))
    if top.has("webhook"):
        fields = top.section("webhook")
        fields.only(("url", "ca_bundle", "timeout"))
        url = fields.secret("url", required=True)
        assert url is not None
        if not url.reveal().startswith("https://"):
            raise fields.error("url", "must be an https:// URL")
        webhook = WebhookSettings(url, fields.ca_bundle("ca_bundle", base),
                                  fields.number("timeout", 30.0, 1.0))
    if email is None and webhook is None:
        raise top.error("email", "configure email, webhook or both (or remove the file)")
    if email and email.password or webhook:
        check_private(path)
    return NotificationSettings(top.int("expiry_warning_days", 14, minimum=0, maximum=365),
                                email, webhook)


def load_firewalls(path: str, decrypt: Optional[Decryptor]) -> List[FirewallProfile]:
    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError("must map firewall profile names to their settings", path)
    base = os.path.dirname(path)
    out = []
    secret_seen = False
    for name, body in data.items():
        name = str(name)
        fields = Fields(body, path, name, decrypt)
        fields.only(FIREWALL_FIELDS)
        if fields.has("url") == fields.has("host"):
            raise fields.error("url", "give either url (https://host[:port]) or host")
        if fields.has("url"):
            url = firewall_url(fields, "url")
        else:
            host = fields.str("host", required=True)
            if not valid_name_value(host):
                raise fields.error("host", f"'{host}' is not a DNS name or IP address (give "
                                           "url for a full https:// URL)")
            port = fields.int("port", 443, minimum=1, maximum=65535)
            netloc = f"[{host}]" if ":" in host else host
            url = f"https://{netloc}:{port}" if port != 443 else f"https://{netloc}"
        api_key = fields.secret("api_key")
        username = fields.str("username")
        password = fields.secret("password")
        if bool(username) != bool(password):
            raise fields.error("password" if username else "username",
                               "username and password go together")
        if not api_key and not username:
            raise fields.error("api_key", "give api_key, or username and password")
        secret_seen = secret_seen or bool(api_key or password)
        admin = fields.str("admin", username)
        if not admin:
            raise fields.error("admin", "required with api_key: the administrator whose "
                                        "changes the partial commit takes")
        vsys = fields.str("vsys")
        if vsys == "shared":
            vsys = None
        if vsys is not None and not re.fullmatch(r"vsys\d{1,3}", vsys):
            raise fields.error("vsys", f"'{vsys}' must be vsysN (or omitted for shared)")
        out.append(FirewallProfile(
            name, path, url, admin, api_key, username, password,
            fields.str("commit_description", "Certificates updated by paloaltoagent"),
            tls_settings(fields, base), vsys, fields.number("timeout", 30.0, 1.0),
            fields.number("commit_timeout", 600.0, 1.0)))
    if secret_seen:
        check_private(path)
    return out


def load_credentials(path: str, label: Optional[str],
                     decrypt: Optional[Decryptor]) -> ScmCredentials:
    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError("must hold labelled credential blocks (see profiles_sample)", path)
    if label is None:
        if len(data) != 1:
            raise ConfigError(f"has several blocks ({', '.join(map(str, data))}); choose one "
                              "with scm.credentials_label in config.yaml", path)
        label = str(next(iter(data)))
    if label not in data:
        raise ConfigError(f"no credentials block '{label}'{did_you_mean(label, list(data))}",
                          path, label)
    check_private(path)
    fields = Fields(data[label], path, label, decrypt)
    base = os.path.dirname(path)
    api = fields.choice("api", ("enrollment", "classic"),
                        "classic" if fields.has("scm_user") or fields.has("scm_client_cert")
                        else "enrollment")
    if api == "enrollment":
        fields.only(ENROLLMENT_KEYS)
        return ScmCredentials(label, path, api, https_url(fields, "scm_url"),
                              fields.str("client_id", required=True),
                              fields.secret("client_secret", required=True),
                              https_url(fields, "token_url", required=False))
    fields.only(CLASSIC_KEYS)
    url = https_url(fields, "scm_url")
    client_cert = fields.file("scm_client_cert", base)
    client_key = fields.file("scm_client_key", base)
    if bool(client_cert) != bool(client_key):
        raise fields.error("scm_client_key", "scm_client_cert and scm_client_key go together")
    if client_key:
        check_private(client_key)
    has_oauth = fields.has("client_id")
    if has_oauth:
        client_id = fields.str("client_id", required=True)
        client_secret = fields.secret("client_secret", required=True)
        login = password = customer_uri = None
    else:
        client_id, client_secret = None, None
        login = fields.str("scm_user", required=True)
        customer_uri = fields.str("scm_uri", required=True)
        password = fields.secret("scm_password", required=not client_cert)
    return ScmCredentials(label, path, api, url, client_id, client_secret,
                          https_url(fields, "token_url", required=False), login, password,
                          customer_uri, fields.int("scm_org_id", minimum=1),
                          fields.int("scm_ssl_cert_type", minimum=1), client_cert, client_key)


def load_certificate(path: str, firewalls: Mapping[str, FirewallProfile],
                     default_window: RenewalWindow,
                     credentials: Optional[ScmCredentials]) -> CertificateProfile:
    name = os.path.splitext(os.path.basename(path))[0]
    fields = Fields(read_yaml(path), path)
    fields.only(CERTIFICATE_FIELDS)
    firewall = fields.str("firewall", required=True)
    if firewall not in firewalls:
        raise fields.error("firewall", f"no firewall profile '{firewall}' in the fw_*.yaml "
                                       f"files{did_you_mean(firewall, list(firewalls))}")
    object_name = fields.str("object_name", name)
    check_object_name(fields, "object_name", object_name,
                      MAX_OBJECT_NAME - RENEWAL_SUFFIX_ROOM)
    validation = fields.choice("validation", VALIDATIONS, required=True, upper=True)
    common_name = fields.str("common_name", required=True)
    if len(common_name) > 64:
        raise fields.error("common_name", "at most 64 characters (X.509 upper bound); put "
                                          "longer names in subject_alt_names")
    problem = certificate_name_problem(common_name, validation)
    if problem:
        raise fields.error("common_name", problem)
    sans = fields.str_list("subject_alt_names")
    for index, san in enumerate(sans):
        problem = certificate_name_problem(san, validation)
        if problem:
            raise fields.error(f"subject_alt_names[{index}]", problem)
    key_text = fields.str("key", "RSA-2048").upper().replace("EC-", "ECDSA-")
    if key_text not in KEY_TYPES:
        raise fields.error("key", f"'{fields.data.get('key')}' is not supported; use one of "
                                  f"{', '.join(KEY_TYPES)}")
    digest = fields.choice("digest", DIGESTS, "sha256")
    subject_fields = fields.section("subject")
    subject_fields.only(SUBJECT_FIELDS)
    country = subject_fields.str("country")
    if country is not None and country.upper() not in ISO_COUNTRIES:
        raise subject_fields.error("country", f"'{country}' is not an ISO 3166 two-letter "
                                              "country code (e.g. US, GB, DE)")
    subject = Subject(subject_fields.str("organization"),
                      tuple(subject_fields.str_list("organizational_unit")),
                      subject_fields.str("locality"), subject_fields.str("state"),
                      country.upper() if country else None, subject_fields.str("email"))
    order_fields = fields.section("scm")
    order_fields.only(ORDER_FIELDS)
    custom = order_fields.section("custom_fields")
    custom_fields = tuple((str(k), custom.str(str(k), required=True)) for k in custom.data)
    default_type = credentials.cert_type if credentials else None
    profile_id = order_fields.int("profile_id", default_type, minimum=1)
    if profile_id is None and credentials is not None:
        raise order_fields.error("profile_id", "required: the SCM certificate profile id "
                                               "(certType) to order from")
    org_id = order_fields.int("org_id", credentials.org_id if credentials else None, minimum=1)
    if credentials is not None and credentials.api == "classic" and org_id is None:
        raise order_fields.error("org_id", "required for the classic API (or scm_org_id in the "
                                           "credentials block)")
    comments = order_fields.str("comments")
    if comments and len(comments) > 1024:
        raise order_fields.error("comments", "at most 1024 characters")
    requester = order_fields.str("external_requester")
    if requester and len(requester) > 512:
        raise order_fields.error("external_requester", "at most 512 characters")
    order = OrderSettings(profile_id, order_fields.int("term", minimum=1, maximum=3650), org_id,
                          comments, requester, custom_fields)
    window = renewal_window(fields, "renew_before_days", default_window)
    # A window close to the term replaces the certificate soon after it is issued, on nearly
    # every run: at most MAX_WINDOW_PERCENT of the term, as for a window given in percent.
    longest = order.term * MAX_WINDOW_PERCENT // 100 if order.term is not None else None
    if longest is not None and window.percent is None and window.days > longest:
        where, _, key = window.source.rpartition(": ")
        inherited = where != path
        raise fields.error("scm.term" if inherited else key,
                           f"the renewal window of {window.days} days"
                           f"{f' (from {window.source})' if inherited else ''} is too long "
                           f"for the certificate's term (scm.term: {order.term} days; at most "
                           f"{longest} days, {MAX_WINDOW_PERCENT}%), so runs would order a new "
                           "certificate soon after each one is issued; choose fewer days, or a "
                           "share of the lifetime such as renew_before: 33%")
    services = fields.str_list("ssl_tls_service_profiles")
    for index, service in enumerate(services):
        if len(service) > MAX_OBJECT_NAME or not re.fullmatch(r"[A-Za-z0-9][\w .()-]*",
                                                              service):
            raise fields.error(f"ssl_tls_service_profiles[{index}]",
                               f"'{service}' is not a valid SSL/TLS service profile name")
    algorithm, bits = KEY_TYPES[key_text]
    return CertificateProfile(
        name, path, firewall, object_name, validation, common_name, tuple(sans), subject,
        KeySpec(algorithm, bits), digest, order, window, tuple(services))
