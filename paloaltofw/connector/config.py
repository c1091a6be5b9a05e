"""Configuration and profiles: read once, validated completely, turned into the typed objects of
settings.py.

Layout (README, "Configuration reference"):

* `config.yaml`: SCM settings, logging, encryption, renewal defaults, where things live;
* `profiles_dir/sectigo_credentials.yaml`: labelled SCM credential blocks (Sectigo SDK format,
  sectigo.md §2.1);
* `profiles_dir/fw_*.yaml`: firewall profiles, one block per firewall;
* every other `profiles_dir/*.yaml`: one certificate profile each, named after the file.

Every check happens here, before any request is sent; an error names the file and the field.
The rest of the agent trusts these objects. A field a file leaves out takes the default of
its settings dataclass (read as `FirewallProfile.timeout`, never written here again).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from .cache import KnownFiles
from .checks import (ISO_COUNTRIES, MAX_OBJECT_NAME, RENEWAL_SUFFIX_ROOM, ca_bundle,
                     certificate_name_problem, check_object_name, check_window_against_term,
                     firewall_url, https_url, renewal_window, required_https_url, tls_settings,
                     valid_host)
from .errors import ConfigError
from .fields import (ENCRYPTED_MARKER, LOADER, Decryptor, Fields, check_private, did_you_mean,
                     read_yaml, resolve)
from .settings import (APIS, DIGESTS, ENCRYPTION_MODES, HTTPS_PORT, KEY_TYPES, LOG_LEVELS,
                       PROFILES_DIR, STATE_DIR, VALIDATIONS, BindingSettings,
                       CertificateProfile, Config, DeviceKind, EmailSettings, EncryptionSettings,
                       FirewallProfile, KeySpec, LoggingSettings, NotificationSettings,
                       OrderSettings, RenewalWindow, ScmCredentials, ScmSettings, Subject,
                       WebhookSettings)

CREDENTIALS_FILE = "sectigo_credentials.yaml"
NOTIFICATIONS_FILE = "notifications.yaml"
# The fields `encrypt` and the run-time decryption treat as secret, per kind of file.
SECRET_FIELDS = ("client_secret", "scm_password", "api_key", "password")
NOTIFICATION_SECRETS = ("password", "url")

CONFIG_FIELDS = ("profiles_dir", "state_dir", "scm", "logging", "encryption", "renewal",
                 "max_parallel_firewalls", "metrics")
SCM_FIELDS = ("credentials_file", "credentials_label", "lookup_label", "ca_bundle",
              "verify_tls", "fingerprint", "timeout", "poll_interval", "poll_timeout")
LOGGING_FIELDS = ("level", "file", "max_bytes", "backup_count")
ENCRYPTION_FIELDS = ("mode", "gpg_home", "gpg_binary", "recipient", "passphrase_file",
                     "passphrase_env")
FIREWALL_FIELDS = ("type", "url", "host", "port", "api_key", "username", "password", "admin",
                   "commit_description", "verify_tls", "ca_bundle", "fingerprint", "vsys",
                   "timeout", "commit_timeout", "ha_peer", "ha_sync_timeout")
# A Panorama has no vsys, no HA peer here, and waits for its pushes' devices.
PANORAMA_FIELDS = tuple(f for f in FIREWALL_FIELDS if f not in ("vsys", "ha_peer",
                                                                 "ha_sync_timeout")) + \
    ("push_timeout",)
# A template on a Panorama, and a firewall reached through one: the Panorama entry gives the
# connection, these only say where on it.
TEMPLATE_FIELDS = ("type", "panorama", "template", "vsys", "template_stacks")
VIA_FIELDS = ("type", "via", "serial", "vsys")
DEVICE_KINDS = tuple(k.value for k in DeviceKind)
CERTIFICATE_FIELDS = ("firewall", "object_name", "validation", "common_name",
                      "subject_alt_names", "subject", "key", "digest", "scm",
                      "renew_before_days", "renew_before", "ssl_tls_service_profiles",
                      "bindings")
BINDING_FIELDS = ("management_ui", "globalprotect_portals", "globalprotect_gateways",
                  "decryption_rules", "ike_gateways", "follow")
SUBJECT_FIELDS = ("organization", "organizational_unit", "locality", "state", "country",
                  "email")
ORDER_FIELDS = ("profile_id", "term", "org_id", "comments", "external_requester",
                "custom_fields")
ENROLLMENT_KEYS = ("client_id", "client_secret", "scm_url", "token_url", "api")
CLASSIC_KEYS = ("scm_url", "scm_user", "scm_password", "scm_uri", "scm_org_id",
                "scm_ssl_cert_type", "scm_client_cert", "scm_client_key", "client_id",
                "client_secret", "token_url", "api")
EMAIL_FIELDS = ("host", "port", "starttls", "username", "password", "from", "to", "ca_bundle",
                "timeout")
WEBHOOK_FIELDS = ("url", "ca_bundle", "timeout")
SERVICE_PROFILE_NAME = re.compile(r"[A-Za-z0-9][\w .()-]*")
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][\w .-]*")
EMAIL_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

MakeDecryptor = Callable[[EncryptionSettings, str], Decryptor]


# --- config.yaml ------------------------------------------------------------------------------

def load_config(path: str, make_decryptor: Optional[MakeDecryptor] = None,
                need_scm: bool = True) -> Config:
    """Read and validate config.yaml and everything it points to. Encrypted secrets are
    decrypted in memory with the decryptor `make_decryptor` builds from the settings."""
    path = os.path.abspath(path)
    top = Fields(read_yaml(path), path)
    top.only(CONFIG_FIELDS)
    base = os.path.dirname(path)
    profiles_dir, state_dir, credentials_path = _paths(top, base)
    logging_settings = _logging(top.section("logging"), base)
    encryption = _encryption(top.section("encryption"), base)
    decrypt = make_decryptor(encryption, path) if make_decryptor and \
        encryption.mode != "none" else None
    try:
        renewal = top.section("renewal")
        renewal.only(("days_before_expiry", "renew_before"))
        window = renewal_window(renewal, "days_before_expiry", RenewalWindow(
            source=f"{path}: renewal.days_before_expiry (default)"))
        scm_fields = top.section("scm")
        scm_fields.only(SCM_FIELDS)
        firewalls = _all_firewalls(profiles_dir, credentials_path, decrypt)
        scm = _scm(scm_fields, base, credentials_path, decrypt) if need_scm else None
        certificates: Dict[str, CertificateProfile] = {}
        parsed = KnownFiles(state_dir, LOADER)  # profiles parsed by earlier runs (cache.py)
        for file_path in _certificate_files(profiles_dir, credentials_path):
            profile = load_certificate(file_path, firewalls, window,
                                       scm.credentials if scm else None, parsed)
            certificates[profile.name] = profile
        parsed.save(complete=True)
        _one_profile_per_object(certificates, firewalls)
        metrics = top.section("metrics")
        metrics.only(("file",))
        notifications_path = os.path.join(profiles_dir, NOTIFICATIONS_FILE)
        return Config(
            path=path, base_dir=base, profiles_dir=profiles_dir, state_dir=state_dir,
            logging=logging_settings, encryption=encryption, renewal=window, scm=scm,
            firewalls=firewalls, certificates=certificates,
            max_parallel_firewalls=top.integer(
                "max_parallel_firewalls", Config.max_parallel_firewalls, minimum=1,
                maximum=256),
            metrics_file=metrics.resolved("file", base),
            notifications=load_notifications(notifications_path, decrypt)
            if os.path.isfile(notifications_path) else None)
    finally:
        close = getattr(decrypt, "close", None)
        if close is not None:
            close()  # every secret is read: stop what gpg started for them


def secret_files(path: str) -> Tuple[EncryptionSettings, List[str]]:
    """What `encrypt`/`decrypt` work on by default: the SCM credentials file, every firewall
    profile file and the notifications file; with the encryption settings."""
    path = os.path.abspath(path)
    top = Fields(read_yaml(path), path)
    top.only(CONFIG_FIELDS)
    base = os.path.dirname(path)
    profiles_dir, _, credentials = _paths(top, base)
    notifications = os.path.join(profiles_dir, NOTIFICATIONS_FILE)
    files = ([credentials] if os.path.isfile(credentials) else []) + \
        _firewall_files(profiles_dir) + \
        ([notifications] if os.path.isfile(notifications) else [])
    return _encryption(top.section("encryption"), base), files


def _paths(top: Fields, base: str) -> Tuple[str, str, str]:
    """(profiles_dir, state_dir, credentials file)."""
    profiles_dir = resolve(base, top.text("profiles_dir", PROFILES_DIR))
    state_dir = resolve(base, top.text("state_dir", STATE_DIR))
    if not os.path.isdir(profiles_dir):
        raise top.error("profiles_dir", f"directory not found: {profiles_dir}")
    credentials = resolve(base, top.section("scm").text(
        "credentials_file", os.path.join(profiles_dir, CREDENTIALS_FILE)))
    return profiles_dir, state_dir, credentials


def _logging(fields: Fields, base: str) -> LoggingSettings:
    fields.only(LOGGING_FIELDS)
    return LoggingSettings(
        level=fields.choice("level", LOG_LEVELS, LoggingSettings.level, upper=True),
        file=fields.resolved("file", base),
        max_bytes=fields.integer("max_bytes", LoggingSettings.max_bytes, minimum=1024),
        backup_count=fields.integer("backup_count", LoggingSettings.backup_count, minimum=0,
                                    maximum=100))


def _encryption(fields: Fields, base: str) -> EncryptionSettings:
    fields.only(ENCRYPTION_FIELDS)
    settings = EncryptionSettings(
        mode=fields.choice("mode", ENCRYPTION_MODES, EncryptionSettings.mode),
        gpg_home=fields.resolved("gpg_home", base),
        gpg_binary=fields.text("gpg_binary", EncryptionSettings.gpg_binary),
        recipient=fields.text("recipient"),
        passphrase_file=fields.resolved("passphrase_file", base),
        passphrase_env=fields.text("passphrase_env"))
    if settings.mode == "public-key" and not settings.recipient:
        raise fields.error("recipient", "required when mode is public-key")
    if settings.passphrase_file and settings.passphrase_env:
        raise fields.error("passphrase_env", "give passphrase_file or passphrase_env, not both")
    return settings


def _scm(fields: Fields, base: str, credentials_path: str,
         decrypt: Optional[Decryptor]) -> ScmSettings:
    credentials = load_credentials(credentials_path, fields.text("credentials_label"), decrypt)
    lookup = credentials if credentials.api == "classic" else None
    lookup_label = fields.text("lookup_label")
    if lookup_label:
        lookup = load_credentials(credentials_path, lookup_label, decrypt)
        if lookup.api != "classic":
            raise fields.error("lookup_label", f"block '{lookup_label}' must hold classic API "
                                               "credentials (scm_user ...)")
    return ScmSettings(
        credentials=credentials, tls=tls_settings(fields, base),
        timeout=fields.number("timeout", ScmSettings.timeout, minimum=1.0),
        poll_interval=fields.number("poll_interval", ScmSettings.poll_interval),
        poll_timeout=fields.number("poll_timeout", ScmSettings.poll_timeout), lookup=lookup)


def _one_profile_per_object(certificates: Mapping[str, CertificateProfile],
                            firewalls: Mapping[str, FirewallProfile]) -> None:
    claimed: Dict[Tuple[str, str], str] = {}
    for profile in certificates.values():
        # The two entries of an HA pair are one configuration.
        device = firewalls[profile.firewall]
        where = "/".join(sorted((device.name, device.peer.name))) if device.peer else \
            profile.firewall
        key = (where, profile.object_name.lower())
        if key in claimed:
            raise ConfigError(f"object '{profile.object_name}' on firewall "
                              f"'{where}' is already managed by certificate profile "
                              f"'{claimed[key]}'; give each profile its own object_name",
                              profile.path, "object_name")
        claimed[key] = profile.name


# --- the files of profiles_dir -----------------------------------------------------------------

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


def _all_firewalls(profiles_dir: str, credentials_path: str,
                   decrypt: Optional[Decryptor]) -> Dict[str, FirewallProfile]:
    firewalls: Dict[str, FirewallProfile] = {}
    for file_path in _firewall_files(profiles_dir):
        if os.path.abspath(file_path) == credentials_path:
            continue
        for profile in load_firewalls(file_path, decrypt):
            if profile.name in firewalls:
                raise ConfigError(f"firewall profile '{profile.name}' is also defined in "
                                  f"{firewalls[profile.name].path}", file_path, profile.name)
            firewalls[profile.name] = profile
    # Templates and firewalls through Panorama take their Panorama entry's connection,
    # wherever (in which fw_*.yaml file) it is; an HA peer is the other entry, resolved.
    linked = {name: _linked(profile, firewalls) for name, profile in firewalls.items()}
    return {name: _paired(profile, linked) for name, profile in linked.items()}


def _paired(profile: FirewallProfile, devices: Mapping[str, FirewallProfile]
            ) -> FirewallProfile:
    if profile.ha_peer is None:
        return profile
    peer = devices.get(profile.ha_peer)
    field_name = f"{profile.name}.ha_peer"
    if peer is None:
        raise ConfigError(f"no firewall profile '{profile.ha_peer}' in the fw_*.yaml files"
                          + did_you_mean(profile.ha_peer, list(devices)), profile.path,
                          field_name)
    if peer.name == profile.name or peer.kind is not DeviceKind.FIREWALL or \
            peer.serial is not None or profile.serial is not None:
        raise ConfigError(f"'{profile.ha_peer}' must be the other firewall of the HA pair, "
                          "reached directly (an entry with url or host)", profile.path,
                          field_name)
    if peer.ha_peer != profile.name:
        # One-sided, profiles on the other entry would skip the pair's logic.
        raise ConfigError(f"'{peer.name}' must name '{profile.name}' as its ha_peer too "
                          f"(it names {repr(peer.ha_peer) if peer.ha_peer else 'none'})",
                          profile.path, field_name)
    if peer.vsys != profile.vsys:
        raise ConfigError(f"'{peer.name}' keeps certificates in {peer.vsys or 'shared'}, "
                          f"'{profile.name}' in {profile.vsys or 'shared'}: an HA pair has "
                          "one configuration", profile.path, field_name)
    return dataclasses.replace(profile, peer=dataclasses.replace(peer, ha_peer=None))


def _linked(profile: FirewallProfile, devices: Mapping[str, FirewallProfile]
            ) -> FirewallProfile:
    if profile.panorama is None:
        return profile
    key = "via" if profile.kind is DeviceKind.FIREWALL else "panorama"
    panorama = devices.get(profile.panorama)
    if panorama is None or panorama.kind is not DeviceKind.PANORAMA:
        panoramas = [n for n, d in devices.items() if d.kind is DeviceKind.PANORAMA]
        why = f"'{profile.panorama}' is not a Panorama (give its entry type: panorama)" \
            if panorama is not None else \
            f"no Panorama profile '{profile.panorama}' in the fw_*.yaml files" + \
            did_you_mean(profile.panorama, panoramas)
        raise ConfigError(why, profile.path, f"{profile.name}.{key}")
    return dataclasses.replace(
        profile, url=panorama.url, admin=panorama.admin, api_key=panorama.api_key,
        username=panorama.username, password=panorama.password,
        commit_description=panorama.commit_description, tls=panorama.tls,
        timeout=panorama.timeout, commit_timeout=panorama.commit_timeout,
        push_timeout=panorama.push_timeout)


# --- firewall profiles -------------------------------------------------------------------------

def load_firewalls(path: str, decrypt: Optional[Decryptor]) -> List[FirewallProfile]:
    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError("must map firewall profile names to their settings", path)
    profiles = [_firewall(Fields(body, path, str(name), decrypt), str(name))
                for name, body in data.items()]
    if any(p.api_key or p.password for p in profiles):
        check_private(path)
    return profiles


def _firewall(fields: Fields, name: str) -> FirewallProfile:
    kind = DeviceKind(fields.choice("type", DEVICE_KINDS, DeviceKind.FIREWALL.value))
    if kind is DeviceKind.TEMPLATE:
        return _template(fields, name)
    if kind is DeviceKind.FIREWALL and fields.has("via"):
        return _via(fields, name)
    fields.only(PANORAMA_FIELDS if kind is DeviceKind.PANORAMA else FIREWALL_FIELDS)
    base = os.path.dirname(fields.path)
    if fields.has("url") == fields.has("host"):
        raise fields.error("url", "give either url (https://host[:port]) or host")
    if fields.has("url"):
        url = firewall_url(fields, "url")
    else:
        host = fields.required("host")
        if not valid_host(host):
            raise fields.error("host", f"'{host}' is not a DNS name or IP address (give url "
                                       "for a full https:// URL)")
        port = fields.integer("port", HTTPS_PORT, minimum=1, maximum=65535)
        netloc = f"[{host}]" if ":" in host else host
        url = f"https://{netloc}:{port}" if port != HTTPS_PORT else f"https://{netloc}"
    api_key = fields.secret("api_key")
    username = fields.text("username")
    password = fields.secret("password")
    if bool(username) != bool(password):
        raise fields.error("password" if username else "username",
                           "username and password go together")
    if not api_key and not username:
        raise fields.error("api_key", "give api_key, or username and password")
    admin = fields.text("admin") or username
    if not admin:
        raise fields.error("admin", "required with api_key: the administrator whose changes "
                                    "the partial commit takes")
    return FirewallProfile(
        name=name, path=fields.path, url=url, admin=admin, api_key=api_key, username=username,
        password=password,
        commit_description=fields.text("commit_description",
                                       FirewallProfile.commit_description),
        tls=tls_settings(fields, base), vsys=_vsys(fields),
        timeout=fields.number("timeout", FirewallProfile.timeout, minimum=1.0),
        commit_timeout=fields.number("commit_timeout", FirewallProfile.commit_timeout,
                                     minimum=1.0),
        kind=kind,
        push_timeout=fields.number("push_timeout", FirewallProfile.push_timeout, minimum=1.0),
        ha_peer=fields.text("ha_peer"),
        ha_sync_timeout=fields.number("ha_sync_timeout", FirewallProfile.ha_sync_timeout,
                                      minimum=1.0))


def _vsys(fields: Fields) -> Optional[str]:
    vsys = fields.text("vsys")
    if vsys == "shared":
        return None
    if vsys is not None and not re.fullmatch(r"vsys\d{1,3}", vsys):
        raise fields.error("vsys", f"'{vsys}' must be vsysN (or omitted for shared)")
    return vsys


def _template(fields: Fields, name: str) -> FirewallProfile:
    """A template on a Panorama: certificates under its shared (or vsys) store, pushed to the
    template stacks that hold it (panorama-ha-bindings.md §1)."""
    fields.only(TEMPLATE_FIELDS)
    template = fields.required("template")
    stacks = fields.names("template_stacks")
    for key, value in [("template", template)] + \
            [(f"template_stacks[{i}]", s) for i, s in enumerate(stacks)]:
        if len(value) > MAX_OBJECT_NAME or not TEMPLATE_NAME.fullmatch(value):
            raise fields.error(key, f"'{value}' is not a valid template name")
    # Connection settings come from the Panorama entry (see _linked); these are placeholders
    # no one reads before they are replaced.
    return FirewallProfile(
        name=name, path=fields.path, url="", admin="", kind=DeviceKind.TEMPLATE,
        panorama=fields.required("panorama"), template=template, vsys=_vsys(fields),
        template_stacks=tuple(stacks))


def _via(fields: Fields, name: str) -> FirewallProfile:
    """A firewall reached through a Panorama: every request goes to Panorama with
    target=SERIAL (panos.md §6.1), the key and CSR stay on the firewall."""
    fields.only(VIA_FIELDS)
    serial = fields.data.get("serial")
    if isinstance(serial, int) and not isinstance(serial, bool):
        raise fields.error("serial", "write the serial number in quotes (\"007951000123456\"): "
                                     "YAML reads a bare number and drops its leading zeros")
    serial_text = fields.required("serial")
    if not re.fullmatch(r"[0-9A-Za-z]{6,32}", serial_text):
        raise fields.error("serial", f"'{serial_text}' is not a device serial number")
    return FirewallProfile(
        name=name, path=fields.path, url="", admin="", kind=DeviceKind.FIREWALL,
        panorama=fields.required("via"), serial=serial_text, vsys=_vsys(fields))


# --- SCM credentials ---------------------------------------------------------------------------

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
    api = fields.choice("api", APIS, "classic" if fields.has("scm_user") or
                        fields.has("scm_client_cert") else "enrollment")
    if api == "enrollment":
        fields.only(ENROLLMENT_KEYS)
        return ScmCredentials(label=label, path=path, api=api,
                              url=required_https_url(fields, "scm_url"),
                              client_id=fields.required("client_id"),
                              client_secret=fields.required_secret("client_secret"),
                              token_url=https_url(fields, "token_url"))
    return _classic_credentials(fields, label)


def _classic_credentials(fields: Fields, label: str) -> ScmCredentials:
    fields.only(CLASSIC_KEYS)
    base = os.path.dirname(fields.path)
    url = required_https_url(fields, "scm_url")
    client_cert = fields.file("scm_client_cert", base)
    client_key = fields.file("scm_client_key", base)
    if bool(client_cert) != bool(client_key):
        raise fields.error("scm_client_key", "scm_client_cert and scm_client_key go together")
    if client_key:
        check_private(client_key)
    client_id = client_secret = login = customer_uri = password = None
    if fields.has("client_id"):  # an Admin API client: a bearer token on the classic API
        client_id = fields.required("client_id")
        client_secret = fields.required_secret("client_secret")
    else:
        login = fields.required("scm_user")
        customer_uri = fields.required("scm_uri")
        password = fields.secret("scm_password") if client_cert else \
            fields.required_secret("scm_password")
    return ScmCredentials(label=label, path=fields.path, api="classic", url=url,
                          client_id=client_id, client_secret=client_secret,
                          token_url=https_url(fields, "token_url"), login=login,
                          password=password, customer_uri=customer_uri,
                          org_id=fields.integer("scm_org_id", minimum=1),
                          cert_type=fields.integer("scm_ssl_cert_type", minimum=1),
                          client_cert=client_cert, client_key=client_key)


# --- certificate profiles ----------------------------------------------------------------------

def load_certificate(path: str, firewalls: Mapping[str, FirewallProfile],
                     default_window: RenewalWindow,
                     credentials: Optional[ScmCredentials],
                     parsed: Optional[KnownFiles] = None) -> CertificateProfile:
    name = os.path.splitext(os.path.basename(path))[0]
    fields = Fields(read_yaml(path, parsed), path)
    fields.only(CERTIFICATE_FIELDS)
    firewall = fields.required("firewall")
    if firewall not in firewalls:
        raise fields.error("firewall", f"no firewall profile '{firewall}' in the fw_*.yaml "
                                       f"files{did_you_mean(firewall, list(firewalls))}")
    object_name = fields.text("object_name", name)
    device = firewalls[firewall]
    limit = device.object_name_limit
    check_object_name(fields, "object_name", object_name, limit - RENEWAL_SUFFIX_ROOM,
                      limit, "PAN-OS" if device.kind is DeviceKind.FIREWALL else "Panorama")
    validation = fields.required_choice("validation", VALIDATIONS, upper=True)
    common_name = fields.required("common_name")
    if len(common_name) > 64:
        raise fields.error("common_name", "at most 64 characters (X.509 upper bound); put "
                                          "longer names in subject_alt_names")
    problem = certificate_name_problem(common_name, validation)
    if problem:
        raise fields.error("common_name", problem)
    sans = fields.names("subject_alt_names")
    for index, san in enumerate(sans):
        problem = certificate_name_problem(san, validation)
        if problem:
            raise fields.error(f"subject_alt_names[{index}]", problem)
    order = _order(fields.section("scm"), credentials)
    window = renewal_window(fields, "renew_before_days", default_window)
    check_window_against_term(fields, window, order.term)
    services = fields.names("ssl_tls_service_profiles")
    for index, service in enumerate(services):
        if len(service) > MAX_OBJECT_NAME or not SERVICE_PROFILE_NAME.fullmatch(service):
            raise fields.error(f"ssl_tls_service_profiles[{index}]",
                               f"'{service}' is not a valid SSL/TLS service profile name")
    return CertificateProfile(
        name=name, path=path, firewall=firewall, object_name=object_name,
        validation=validation, common_name=common_name, subject_alt_names=tuple(sans),
        subject=_subject(fields.section("subject")), key=_key(fields),
        digest=fields.choice("digest", DIGESTS, CertificateProfile.digest), order=order,
        renewal=window, ssl_tls_service_profiles=tuple(services),
        bindings=_bindings(fields.section("bindings"), device))


def _bindings(fields: Fields, device: FirewallProfile) -> BindingSettings:
    fields.only(BINDING_FIELDS)
    lists = {}
    for key in BINDING_FIELDS[1:5]:
        lists[key] = tuple(fields.names(key))
        for index, value in enumerate(lists[key]):
            if len(value) > MAX_OBJECT_NAME or not SERVICE_PROFILE_NAME.fullmatch(value):
                raise fields.error(f"{key}[{index}]", f"'{value}' is not a valid name")
    settings = BindingSettings(
        management_ui=fields.flag("management_ui", BindingSettings.management_ui),
        follow=fields.flag("follow", BindingSettings.follow), **lists)
    if device.kind is DeviceKind.PANORAMA and (any(lists.values()) or settings.management_ui):
        raise fields.error("management_ui" if settings.management_ui else
                           next(k for k, v in lists.items() if v),
                           "Panorama's own certificate feeds its SSL/TLS service profiles "
                           "only; choose the web interface's profile under Panorama > Setup "
                           "> Management")
    if settings.management_ui and device.vsys:
        raise fields.error("management_ui", f"the management interface uses shared "
                                            f"certificates, and {device.name} keeps this one "
                                            f"in {device.vsys}")
    return settings


def _key(fields: Fields) -> KeySpec:
    text = fields.text("key")
    if text is None:
        return CertificateProfile.key
    label = text.upper().replace("EC-", "ECDSA-")
    if label not in KEY_TYPES:
        raise fields.error("key", f"'{fields.data.get('key')}' is not supported; use one of "
                                  f"{', '.join(KEY_TYPES)}")
    algorithm, bits = KEY_TYPES[label]
    return KeySpec(algorithm=algorithm, bits=bits)


def _subject(fields: Fields) -> Subject:
    fields.only(SUBJECT_FIELDS)
    country = fields.text("country")
    if country is not None and country.upper() not in ISO_COUNTRIES:
        raise fields.error("country", f"'{country}' is not an ISO 3166 two-letter country "
                                      "code (e.g. US, GB, DE)")
    return Subject(organization=fields.text("organization"),
                   organizational_unit=tuple(fields.names("organizational_unit")),
                   locality=fields.text("locality"), state=fields.text("state"),
                   country=country.upper() if country else None, email=fields.text("email"))


def _order(fields: Fields, credentials: Optional[ScmCredentials]) -> OrderSettings:
    fields.only(ORDER_FIELDS)
    custom = fields.section("custom_fields")
    profile_id = fields.integer("profile_id", minimum=1)
    if profile_id is None and credentials is not None:
        profile_id = credentials.cert_type
        if profile_id is None:
            raise fields.error("profile_id", "required: the SCM certificate profile id "
                                             "(certType) to order from")
    org_id = fields.integer("org_id", minimum=1)
    if org_id is None and credentials is not None:
        org_id = credentials.org_id
        if credentials.api == "classic" and org_id is None:
            raise fields.error("org_id", "required for the classic API (or scm_org_id in the "
                                         "credentials block)")
    comments = fields.text("comments")
    if comments and len(comments) > 1024:
        raise fields.error("comments", "at most 1024 characters")
    requester = fields.text("external_requester")
    if requester and len(requester) > 512:
        raise fields.error("external_requester", "at most 512 characters")
    return OrderSettings(profile_id=profile_id,
                         term=fields.integer("term", minimum=1, maximum=3650), org_id=org_id,
                         comments=comments, external_requester=requester,
                         custom_fields=tuple((k, custom.required(k)) for k in custom.keys()))


# --- notifications.yaml ------------------------------------------------------------------------

def load_notifications(path: str, decrypt: Optional[Decryptor]) -> NotificationSettings:
    top = Fields(read_yaml(path), path, decrypt=decrypt)
    top.only(("expiry_warning_days", "email", "webhook"))
    base = os.path.dirname(path)
    email = _email(top.section("email"), base) if top.has("email") else None
    webhook = _webhook(top.section("webhook"), base) if top.has("webhook") else None
    if email is None and webhook is None:
        raise top.error("email", "configure email, webhook or both (or remove the file)")
    if email and email.password or webhook:
        check_private(path)
    return NotificationSettings(
        expiry_warning_days=top.integer("expiry_warning_days",
                                        NotificationSettings.expiry_warning_days, minimum=0,
                                        maximum=365),
        email=email, webhook=webhook)


def _email(fields: Fields, base: str) -> EmailSettings:
    fields.only(EMAIL_FIELDS)
    recipients = fields.names("to")
    if not recipients:
        raise fields.error("to", "give at least one recipient address")
    sender = fields.required("from")
    for index, address in enumerate(recipients + [sender]):
        if not EMAIL_ADDRESS.fullmatch(address):
            raise fields.error(f"to[{index}]" if index < len(recipients) else "from",
                               f"'{address}' is not an e-mail address")
    username, password = fields.text("username"), fields.secret("password")
    if bool(username) != bool(password):
        raise fields.error("password", "username and password go together")
    starttls = fields.flag("starttls", EmailSettings.starttls)
    if password and not starttls:
        raise fields.error("starttls", "a password is only sent over STARTTLS")
    return EmailSettings(
        host=fields.required("host"), sender=sender, recipients=tuple(recipients),
        port=fields.integer("port", EmailSettings.port, minimum=1, maximum=65535),
        starttls=starttls, username=username, password=password,
        ca_bundle=ca_bundle(fields, "ca_bundle", base),
        timeout=fields.number("timeout", EmailSettings.timeout, minimum=1.0))


def _webhook(fields: Fields, base: str) -> WebhookSettings:
    fields.only(WEBHOOK_FIELDS)
    url = fields.required_secret("url")
    if not url.reveal().startswith("https://"):
        raise fields.error("url", "must be an https:// URL")
    return WebhookSettings(url=url, ca_bundle=ca_bundle(fields, "ca_bundle", base),
                           timeout=fields.number("timeout", WebhookSettings.timeout,
                                                 minimum=1.0))


__all__ = ["ENCRYPTED_MARKER", "NOTIFICATIONS_FILE", "NOTIFICATION_SECRETS", "SECRET_FIELDS",
           "load_config", "load_certificate", "load_credentials", "load_firewalls",
           "load_notifications", "secret_files"]
