"""Certificate objects on the emulated firewall: generate, import, export (panos.md §3).

An entry is an element of `…/certificate`, with the fields of panos.md §3.2. The private key
stays on the box: it is stored in the entry's `<private-key>` as `-AQ==` followed by the key
encrypted under the device's master key (AES-GCM), the same envelope shape real devices use,
so the key travels with the configuration through commits and deletes and nothing else holds it.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from . import pki
from .panos_config import ConfigError, cdata

RSA_BITS = {1024, 2048, 3072, 4096}
ECDSA_BITS = {256, 384, 521}
# SHA-1 and MD5 appear in tools (panos.md §3.3) but cannot sign here; the device answers as a
# FIPS-CC mode device does for them.
DIGESTS = {"sha256", "sha384", "sha512"}
KNOWN_GENERATE = {"certificate-name", "name", "algorithm", "digest", "signed-by", "ca",
                  "days-till-expiry", "country-code", "state", "locality", "organization",
                  "organization-unit", "email", "hostname", "ip", "alt-email"}


class MasterKey:
    """Encrypts private keys for `<private-key>` the way a device master key would."""

    PREFIX = "-AQ=="

    def __init__(self, key: Optional[bytes] = None) -> None:
        self._aead = AESGCM(key or AESGCM.generate_key(bit_length=256))

    def seal(self, private_key: pki.PrivateKey) -> str:
        der = private_key.private_bytes(serialization.Encoding.DER,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        nonce = os.urandom(12)
        return self.PREFIX + base64.b64encode(nonce + self._aead.encrypt(nonce, der, None)) \
            .decode("ascii")

    def open(self, blob: str) -> pki.PrivateKey:
        raw = base64.b64decode(blob[len(self.PREFIX):])
        der = self._aead.decrypt(raw[:12], raw[12:], None)
        key = serialization.load_der_private_key(der, None)
        assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
        return key


def device_date(when: dt.datetime) -> str:
    """`Apr 13 16:45:50 2026 GMT`, OpenSSL style: the day is space-padded (`Apr  3`)."""
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"


def _child(entry: ET.Element, tag: str, text: str) -> None:
    node = ET.SubElement(entry, tag)
    node.text = text


def certificate_entry(name: str, cert: x509.Certificate, sealed_key: Optional[str],
                      status: str = "valid") -> ET.Element:
    """An entry holding a certificate (and the sealed key when the box has it)."""
    entry = ET.Element("entry", {"name": name})
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    is_ca = False
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        pass
    not_after = cert.not_valid_after_utc
    _child(entry, "subject-hash", pki.openssl_name_hash(cert.subject))
    _child(entry, "issuer-hash", pki.openssl_name_hash(cert.issuer))
    _child(entry, "not-valid-before", device_date(cert.not_valid_before_utc))
    _child(entry, "issuer", pki.openssl_oneline(cert.issuer))
    _child(entry, "not-valid-after", device_date(not_after))
    # Imported CA certificates may lack a common name (panos.md §3.2, PAN-321143).
    _child(entry, "common-name", str(cn[0].value) if cn else "")
    _child(entry, "expiry-epoch", str(int(not_after.timestamp())))
    _child(entry, "ca", "yes" if is_ca else "no")
    _child(entry, "subject", pki.openssl_oneline(cert.subject))
    _child(entry, "public-key", pki.cert_pem(cert))
    _child(entry, "algorithm", pki.key_family(cert.public_key()))
    if sealed_key:
        _child(entry, "private-key", sealed_key)
    _child(entry, "status", status)
    return entry


def entry_certificate(entry: ET.Element) -> Optional[x509.Certificate]:
    pem = entry.findtext("public-key")
    return x509.load_pem_x509_certificate(pem.encode()) if pem else None


# --- request certificate generate --------------------------------------------------------------

@dataclass
class GenerateRequest:
    name: str
    common_name: str
    algorithm: str = "RSA"
    bits: int = 2048
    digest: str = "sha256"
    signed_by: Optional[str] = None  # an on-box CA; None: self-signed, or a CSR if external
    external: bool = False
    ca: bool = False
    days: int = 365
    subject: List[Tuple[x509.ObjectIdentifier, str]] = field(default_factory=list)
    hostnames: List[str] = field(default_factory=list)
    ips: List[str] = field(default_factory=list)
    emails: List[str] = field(default_factory=list)

    @classmethod
    def parse(cls, generate: ET.Element) -> "GenerateRequest":
        for child in generate:
            if child.tag not in KNOWN_GENERATE:
                raise ConfigError(17, cdata(f" request -> certificate -> generate -> "
                                            f"{child.tag}  is unexpected"))

        def text(tag: str) -> Optional[str]:
            value = generate.findtext(tag)
            return value.strip() if value is not None and value.strip() else None

        def members(tag: str) -> List[str]:
            node = generate.find(tag)
            return [] if node is None else [(m.text or "").strip() for m in node.findall(
                "member") if (m.text or "").strip()]

        name, common_name = text("certificate-name"), text("name")
        for tag, value in (("certificate-name", name), ("name", common_name)):
            if value is None:
                raise ConfigError(17, cdata(f" request -> certificate -> generate  {tag} is "
                                            "missing"))
        assert name is not None and common_name is not None
        request = cls(name, common_name)
        algorithm = generate.find("algorithm")
        if algorithm is not None:
            rsa_bits, ec_bits = algorithm.findtext("RSA/rsa-nbits"), \
                algorithm.findtext("ECDSA/ecdsa-nbits")
            try:
                if rsa_bits is not None:
                    request.algorithm, request.bits = "RSA", int(rsa_bits)
                    valid = request.bits in RSA_BITS
                elif ec_bits is not None:
                    request.algorithm, request.bits = "ECDSA", int(ec_bits)
                    valid = request.bits in ECDSA_BITS
                else:
                    valid = False
            except ValueError:
                valid = False
            if not valid:
                raise ConfigError(17, cdata(" request -> certificate -> generate -> algorithm "
                                            " is invalid: use <RSA><rsa-nbits>1024|2048|3072|"
                                            "4096</rsa-nbits></RSA> or <ECDSA><ecdsa-nbits>256|"
                                            "384|521</ecdsa-nbits></ECDSA>"))
        request.digest = (text("digest") or "sha256").lower()
        if request.digest not in DIGESTS:
            raise ConfigError(17, f"Unsupported digest or keys used in FIPS-CC mode: "
                                  f"{request.digest}")
        signed_by = text("signed-by")
        request.signed_by = None if signed_by in (None, "external") else signed_by
        request.external = signed_by == "external"
        request.ca = (text("ca") or "no") == "yes"
        days = text("days-till-expiry")
        if days is not None:
            if not days.isdigit() or not 1 <= int(days) <= 7300:
                raise ConfigError(17, cdata(f" days-till-expiry '{days}' is invalid"))
            request.days = int(days)
        country = text("country-code")
        if country is not None and (len(country) != 2 or not country.isalpha()):
            raise ConfigError(17, cdata(f" country-code '{country}' is invalid"))
        for tag, oid in (("country-code", NameOID.COUNTRY_NAME),
                         ("state", NameOID.STATE_OR_PROVINCE_NAME),
                         ("locality", NameOID.LOCALITY_NAME),
                         ("organization", NameOID.ORGANIZATION_NAME)):
            value = text(tag)
            if value:
                request.subject.append((oid, value))
        for unit in members("organization-unit"):
            request.subject.append((NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
        if text("email"):
            request.subject.append((NameOID.EMAIL_ADDRESS, text("email") or ""))
        request.hostnames, request.ips, request.emails = members("hostname"), members("ip"), \
            members("alt-email")
        return request

    def subject_name(self) -> x509.Name:
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, self.common_name)]
        attributes += [x509.NameAttribute(oid, value) for oid, value in self.subject]
        try:
            return x509.Name(attributes)
        except ValueError as exc:
            raise ConfigError(17, f"invalid subject: {exc}") from None

    def alt_names(self) -> List[x509.GeneralName]:
        names: List[x509.GeneralName] = [x509.DNSName(h) for h in self.hostnames]
        names += pki.general_names(self.ips)
        names += [x509.RFC822Name(e) for e in self.emails]
        return names


def generate_entry(request: GenerateRequest, master: MasterKey,
                   signer: Optional[Tuple[x509.Certificate, pki.PrivateKey]]) -> ET.Element:
    """Make the key pair on the box, then a CSR (signed-by external), or a certificate signed
    by an on-box CA (`signer`), or a self-signed one (no signed-by)."""
    key = pki.generate_key(request.algorithm, request.bits)
    digest = pki.DIGESTS[request.digest]()
    subject = request.subject_name()
    alt = request.alt_names()
    if request.external:
        csr_builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
        if alt:
            csr_builder = csr_builder.add_extension(x509.SubjectAlternativeName(alt),
                                                    critical=False)
        if request.ca:
            csr_builder = csr_builder.add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True)
        csr = csr_builder.sign(key, digest)
        entry = ET.Element("entry", {"name": request.name})
        _child(entry, "common-name", request.common_name)
        _child(entry, "algorithm", pki.key_family(key))
        _child(entry, "ca", "yes" if request.ca else "no")
        _child(entry, "subject", pki.openssl_oneline(subject))
        _child(entry, "subject-hash", pki.openssl_name_hash(subject))
        _child(entry, "csr", csr.public_bytes(serialization.Encoding.PEM).decode("ascii"))
        _child(entry, "private-key", master.seal(key))
        return entry
    now = pki.utcnow()
    issuer_cert, issuer_key = signer if signer else (None, key)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=request.days))
               .add_extension(x509.BasicConstraints(ca=request.ca, path_length=None),
                              critical=True))
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(issuer_key, digest)
    return certificate_entry(request.name, cert, master.seal(key))


# --- import ---------------------------------------------------------------------------------

def _failed(name: str, why: str) -> ConfigError:
    return ConfigError(400, f"Import of {name} failed. {why}")


def _keys_match(cert: x509.Certificate, key: pki.PrivateKey) -> bool:
    return pki.public_der(cert.public_key()) == pki.public_der(key)


def import_certificate(name: str, data: bytes, existing: Optional[ET.Element],
                       master: MasterKey, now: dt.datetime) -> ET.Element:
    """category=certificate: the first certificate of the file goes under `name`, paired with
    the on-box key of that name when there is one (which it must match)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            certs = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise _failed(name, "Failed to extract certificate") from None
    cert = certs[0]
    if cert.not_valid_after_utc < now:
        raise _failed(name, "Certificate is expired")
    sealed = existing.findtext("private-key") if existing is not None else None
    if sealed:
        if not _keys_match(cert, master.open(sealed)):
            raise _failed(name, "private key doesn't exist for csr")
    return certificate_entry(name, cert, sealed)


def import_keypair(name: str, data: bytes, fmt: str, passphrase: Optional[str],
                   master: MasterKey, now: dt.datetime) -> ET.Element:
    """category=keypair: certificate and key in one file (PEM or PKCS#12)."""
    if not passphrase:
        raise _failed(name, "passphrase is required")
    secret = passphrase.encode()
    try:
        if fmt == "pkcs12":
            key, cert, _ = pkcs12.load_key_and_certificates(data, secret)
        else:
            cert = x509.load_pem_x509_certificates(data)[0]
            key = serialization.load_pem_private_key(data, secret)
    except (ValueError, TypeError, IndexError):
        raise _failed(name, "Failed to extract certificate") from None
    if cert is None or not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise _failed(name, "Failed to extract certificate")
    if cert.not_valid_after_utc < now:
        raise _failed(name, "Certificate is expired")
    if not _keys_match(cert, key):
        raise _failed(name, "private key mismatch")
    return certificate_entry(name, cert, master.seal(key))


def import_private_key(name: str, data: bytes, passphrase: Optional[str],
                       existing: Optional[ET.Element], master: MasterKey) -> ET.Element:
    """category=private-key: the key for a certificate already imported under `name`."""
    if not passphrase:
        raise _failed(name, "passphrase is required")
    cert = entry_certificate(existing) if existing is not None else None
    if existing is None or cert is None:
        raise _failed(name, "certificate doesn't exist for private key")
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode())
    except (ValueError, TypeError):
        raise _failed(name, "Failed to extract private key") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) or \
            not _keys_match(cert, key):
        raise _failed(name, "private key mismatch")
    return certificate_entry(name, cert, master.seal(key), existing.findtext("status") or
                             "valid")


# --- export ---------------------------------------------------------------------------------

def export(entry: ET.Element, fmt: Optional[str], include_key: bool,
           passphrase: Optional[str], master: MasterKey) -> Tuple[str, bytes]:
    """(filename, content) of an export; filenames are the lower-cased name plus extension,
    as pan-python's tests expect of a real device."""
    name = entry.get("name", "")
    if not fmt:
        raise ConfigError(400, 'Parameter "format" is required while exporting certificate')
    if fmt == "pkcs10":
        csr = entry.findtext("csr")
        if not csr:
            raise ConfigError(400, f"Certificate {name} has no certificate signing request")
        return f"{name.lower()}.csr", csr.encode("ascii")
    cert = entry_certificate(entry)
    if cert is None:
        raise ConfigError(400, f"Certificate {name} has no certificate to export; "
                               "use format=pkcs10 for a pending request")
    key = None
    if include_key:
        if not passphrase:
            raise ConfigError(400, "Parameter passphrase is required when include-key is yes")
        sealed = entry.findtext("private-key")
        if not sealed:
            raise ConfigError(400, f"Certificate {name} has no private key")
        key = master.open(sealed)
    if fmt == "pem":
        body = pki.cert_pem(cert).encode("ascii")
        if key is not None:
            body += pki.key_pem(key, (passphrase or "").encode())
        return f"{name.lower()}.pem", body
    if fmt == "pkcs12":
        if key is None:
            raise ConfigError(400, "PKCS12 export requires include-key=yes and a passphrase")
        return f"{name.lower()}.p12", pkcs12.serialize_key_and_certificates(
            name.encode(), key, cert, None,
            serialization.BestAvailableEncryption((passphrase or "").encode()))
    raise ConfigError(400, f"Invalid format {fmt}: use pem, pkcs10 or pkcs12")

