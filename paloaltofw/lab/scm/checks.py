"""What the emulated SCM checks in an order before it takes it (Pebble's "va", broadly): the
CSR (Base64, DER, key type and size against the profile's keyTypes, signature, CN), the
names (fully qualified, no wildcard on EV, validated by DCV), the term and the custom
fields."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from .. import pki
from .accounts import CertProfile
from .wire import MAX_CSR, MAX_NAMES, ApiError

if TYPE_CHECKING:  # pragma: no cover
    from .service import ScmService


_B64_STRICT = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CLASSIC_CSR_CHARS = re.compile(r"[A-Za-z0-9+/=\s-]+")
_PEM_CSR = re.compile(r"-----BEGIN (NEW )?CERTIFICATE REQUEST-----(?P<b64>[A-Za-z0-9+/=\s]*)"
                      r"-----END (NEW )?CERTIFICATE REQUEST-----")


def csr_der(text: str, classic: bool) -> bytes:
    """The CSR's DER. The Enrollment API takes only single-line Base64 (§6.3); the classic API
    takes PEM or bare Base64 with white space (§5.4)."""
    if len(text) > MAX_CSR:
        raise ApiError(400, -9, details=f"the CSR is longer than {MAX_CSR} characters")
    if classic:
        if not _CLASSIC_CSR_CHARS.fullmatch(text):
            raise ApiError(400, -9)
        stripped = text.strip()
        if stripped.startswith("-----"):
            found = _PEM_CSR.fullmatch(stripped)
            if not found:
                raise ApiError(400, -9, details="PEM armour is not a CERTIFICATE REQUEST")
            stripped = found.group("b64")
        compact = "".join(stripped.split())
    else:
        compact = text
        if "-----" in text:
            raise ApiError(400, -9, details="send the Base64 of the DER without BEGIN/END lines")
    if not _B64_STRICT.fullmatch(compact) or len(compact) % 4:
        raise ApiError(400, -9)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, -9) from None


@dataclass
class ParsedCsr:
    common_name: str
    public_key: pki.PublicKey


def parse_csr(der: bytes, profile: CertProfile) -> ParsedCsr:
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError:
        raise ApiError(400, -10) from None
    try:
        key = csr.public_key()
    except (ValueError, TypeError, NotImplementedError):
        raise ApiError(400, -11) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ApiError(400, -141, 2048)
        allowed = profile.key_types.get("RSA", [])
        if str(key.key_size) not in allowed:
            raise ApiError(400, -13, details=f"RSA sizes allowed: {', '.join(allowed)}")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if "EC" not in profile.key_types:
            raise ApiError(400, -170)
        curve = pki.CURVE_BITS.get(key.curve.name)
        allowed = profile.key_types["EC"]
        if curve is None or f"P-{curve}" not in allowed:
            raise ApiError(400, -13, details=f"EC curves allowed: {', '.join(allowed)}")
    else:
        raise ApiError(400, -11)
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, NotImplementedError):
        valid = False
    if not valid:
        raise ApiError(400, -138, details="the CSR's signature does not verify")
    try:
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        raise ApiError(400, -10) from None
    if not cns or not isinstance(cns[0].value, str) or not cns[0].value:
        raise ApiError(400, -138, details="the CSR's subject has no CN")
    return ParsedCsr(cns[0].value, key)


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_name(name: str) -> None:
    """A DNS name (wildcard only as the whole left-most label) or a public IP address."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
    if address is not None:
        if not address.is_global:
            raise ApiError(400, -62, description=f"Invalid IP address {name}")
        return
    if len(name) > 253:
        raise ApiError(400, -306, name[:64] + "...", 253)
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels) \
            or labels[-1].isdigit():
        raise ApiError(400, -732, details=f"not a fully qualified domain name: {name[:80]!r}")


def merge_names(common_name: str, sans: List[str]) -> List[str]:
    out: List[str] = []
    seen = set()
    for name in [common_name] + sans:
        key = name.lower()
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


class Checks:
    """The checks that depend on the account and the lab's settings."""

    def __init__(self, scm: "ScmService") -> None:
        self.scm = scm

    def custom_field_defs(self) -> List[Dict[str, Any]]:
        mandatory = set(self.scm.settings.mandatory_custom_fields)
        out = [dict(item, mandatory=bool(item["mandatory"]) or item["name"] in mandatory)
               for item in self.scm.accounts.custom_fields]
        known = {item["name"] for item in out}
        extra_id = 900
        for name in self.scm.settings.mandatory_custom_fields:
            if name not in known:
                out.append({"id": extra_id, "name": name, "mandatory": True})
                known.add(name)
                extra_id += 1
        return out

    def check_custom_fields(self, values: Dict[str, str]) -> None:
        defs = self.custom_field_defs()
        names = {item["name"] for item in defs}
        for name in values:
            if name not in names:
                raise ApiError(400, -135, details=f"unknown custom field {name[:80]!r}")
        for item in defs:
            if item["mandatory"] and not values.get(item["name"]):
                raise ApiError(400, -62, details=f"missing {item['name']!r}")

    def check_names(self, names: List[str], profile: CertProfile) -> None:
        if profile.validation == "EV":
            wild = [n for n in names if n.startswith("*")]
            if wild:
                # The EV Guidelines forbid wildcard names.
                raise ApiError(400, -732, details=f"wildcards are not allowed in EV "
                                                  f"certificates: {wild[0][:80]!r}")
        if len(names) > MAX_NAMES:
            raise ApiError(400, -1601, "subjAltNames", details=f"at most {MAX_NAMES} names")
        for name in names:
            check_name(name)
        if len(names[0]) > 64:
            raise ApiError(400, -306, names[0][:64] + "...", 64)
        missing = [n for n in names if not self.validated(n)]
        if missing:
            shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise ApiError(400, -737, shown)

    def validated(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        if name.startswith("*."):
            name = name[2:]
        for domain in self.scm.settings.validated_domains:
            domain = domain.lower().rstrip(".")
            if domain == "*":
                return True
            if domain.startswith("*."):
                domain = domain[2:]
            if name == domain or name.endswith("." + domain):
                return True
        return False

    def term(self, profile: CertProfile, term: Optional[int], default: Optional[int]) -> int:
        if term is None:
            return default if default in profile.terms else max(profile.terms)
        if term not in profile.terms:
            raise ApiError(400, -36, details="allowed: " + ", ".join(map(str, profile.terms)))
        return term

    def csr(self, data: Dict[str, Any], profile: CertProfile, classic: bool,
             required: bool) -> Optional[ParsedCsr]:
        value = data.get("csr")
        if value is None or value == "":
            if required:
                raise ApiError(400, -7, "csr")
            return None
        if not isinstance(value, str):
            raise ApiError(400, -1002, details="'csr' must be a JSON string")
        return parse_csr(csr_der(value, classic), profile)
