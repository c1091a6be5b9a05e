"""Checks of single values in the configuration, each with a message an administrator can act
on: certificate names SCM would refuse, PAN-OS object names, URLs, fingerprints, CA bundles,
renewal windows. Used by config.py, at load time, before anything is sent.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from typing import Optional, Tuple
from urllib.parse import urlsplit

from .fields import Fields
from .settings import FIREWALL_NAME_LIMIT, RenewalWindow, TlsSettings

# PAN-OS object names (the lengths are in settings.py). We allow the subset every source
# agrees on (panos.md §3.11; peers.md §2: '*' and '_' cannot lead).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_OBJECT_NAME = FIREWALL_NAME_LIMIT
# Renewals go under `<object_name>-YYYYMMDD[-N]`, so the base must leave room for that.
RENEWAL_SUFFIX_ROOM = 13
# The longest renewal window, as a share of the certificate's lifetime: a longer one would
# replace a certificate soon after it is issued, on nearly every run.
MAX_WINDOW_PERCENT = 90
DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
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


# --- names -------------------------------------------------------------------------------------

def valid_host(name: str) -> bool:
    """A firewall's address: an IP address or a DNS name (a single label is fine here)."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        labels = name.rstrip(".").split(".")
        return len(name) <= 253 and all(DNS_LABEL.fullmatch(label) for label in labels)


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


def check_object_name(fields: Fields, key: str, value: str, limit: int,
                      device_limit: int = MAX_OBJECT_NAME, where: str = "PAN-OS") -> None:
    if len(value) > limit:
        raise fields.error(key, f"'{value}' has {len(value)} characters; at most {limit} "
                                f"({where} allows {device_limit}, and renewals add "
                                "'-YYYYMMDD-N')")
    if not NAME_RE.fullmatch(value):
        hint = re.sub(r"[^A-Za-z0-9_-]+", "-", value).strip("-_") or "my-certificate"
        raise fields.error(key, f"'{value}' is not a valid PAN-OS object name: use letters, "
                                f"digits, '-' and '_', starting with a letter or digit "
                                f"(for example '{hint}')")


# --- renewal windows ---------------------------------------------------------------------------

def renewal_window(fields: Fields, days_key: str, default: RenewalWindow) -> RenewalWindow:
    """`renew_before: 33%` (a share of the lifetime) or `renew_before: 30` (days), or the
    older `<days_key>: 30`; one of them at most."""
    if fields.has(days_key) and fields.has("renew_before"):
        raise fields.error("renew_before", f"give renew_before or {days_key}, not both")
    if fields.has(days_key):
        return RenewalWindow(days=fields.integer(days_key, 0, minimum=0, maximum=3650),
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


def check_window_against_term(fields: Fields, window: RenewalWindow,
                              term: Optional[int]) -> None:
    """A window close to the term replaces the certificate soon after it is issued, on nearly
    every run: at most MAX_WINDOW_PERCENT of the term, as for a window given in percent."""
    if term is None or window.percent is not None:
        return
    longest = term * MAX_WINDOW_PERCENT // 100
    if window.days <= longest:
        return
    where, _, key = window.source.rpartition(": ")
    inherited = where != fields.path
    raise fields.error("scm.term" if inherited else key,
                       f"the renewal window of {window.days} days"
                       f"{f' (from {window.source})' if inherited else ''} is too long for "
                       f"the certificate's term (scm.term: {term} days; at most {longest} "
                       f"days, {MAX_WINDOW_PERCENT}%), so runs would order a new certificate "
                       "soon after each one is issued; choose fewer days, or a share of the "
                       "lifetime such as renew_before: 33%")


# --- addresses and trust -----------------------------------------------------------------------

def https_url(fields: Fields, key: str) -> Optional[str]:
    value = fields.text(key)
    return None if value is None else _https_url(fields, key, value)


def required_https_url(fields: Fields, key: str) -> str:
    return _https_url(fields, key, fields.required(key))


def _https_url(fields: Fields, key: str, value: str) -> str:
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
    value = required_https_url(fields, key)
    parts = urlsplit(value)
    if parts.path.rstrip("/") not in ("", "/api"):
        raise fields.error(key, f"'{value}' has the path '{parts.path}'; give only "
                                f"https://host[:port] (or https://host[:port]/api/)")
    return f"https://{parts.netloc}"


def normalize_fingerprint(fields: Fields, key: str) -> Optional[str]:
    value = fields.text(key)
    if value is None:
        return None
    hexa = value.replace(":", "").replace(" ", "").lower()
    if hexa.startswith("sha256/"):
        hexa = hexa[7:]
    if not re.fullmatch(r"[0-9a-f]{64}", hexa):
        raise fields.error(key, "must be the SHA-256 fingerprint of the certificate "
                                "(64 hex digits, colons allowed)")
    return hexa


def ca_bundle(fields: Fields, key: str, base: str) -> Optional[str]:
    """A PEM file of CA certificates, checked now: a DER file, a key or a bundle with no
    readable certificate would otherwise fail only when connecting, as a TLS error."""
    path = fields.file(key, base)
    if path is not None:
        problem = pem_bundle_problem(path)
        if problem:
            raise fields.error(key, f"{path}: {problem}")
    return path


def tls_settings(fields: Fields, base: str) -> TlsSettings:
    return TlsSettings(verify=fields.flag("verify_tls", TlsSettings.verify),
                       ca_bundle=ca_bundle(fields, "ca_bundle", base),
                       fingerprint=normalize_fingerprint(fields, "fingerprint"))


def pem_bundle_problem(path: str) -> Optional[str]:
    """Why `path` is not a usable PEM CA bundle (None: it is). Checked once per file version:
    a fleet's firewall profiles usually share one bundle."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return _pem_bundle_problem(path, (info.st_mtime_ns, info.st_size))


@functools.lru_cache(maxsize=32)
def _pem_bundle_problem(path: str, _identity: Tuple[int, int]) -> Optional[str]:
    # Memoized on the file's identity (path, mtime, size): a pure function of the file.
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
        # A bare client context: create_default_context() would first load the system's
        # whole CA store (18 ms here), which this check does not need.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        detail = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))
        return f"cannot be loaded as PEM CA certificates (OpenSSL: {detail})"
    return None
