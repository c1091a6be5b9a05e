"""Real keys and certificates for the lab.

Two independent hierarchies live here:

* the **TLS hierarchy**: one root that signs the HTTPS certificates of the emulated firewall and
  SCM (clients trust it through the CA bundle the lab writes out);
* the **SCM hierarchy**: what the emulated Sectigo Certificate Manager issues from. As with the
  real CA there are RSA and ECC roots and a distinct issuing CA per validation level (DV, OV, EV)
  and key family, and the chain length is deliberately not the same for every type (EV goes
  through two intermediates) so that clients build chains by issuer, not by position.

Everything is generated with `cryptography`; nothing here is hand-written ASN.1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]

CURVES = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}
CURVE_BITS = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
SignHash = Union[hashes.SHA256, hashes.SHA384, hashes.SHA512]
DIGESTS: Dict[str, Callable[[], SignHash]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}

# CA/Browser Forum certificate policy OIDs, as public CAs put them in leaves.
POLICY_OIDS = {"DV": "2.23.140.1.2.1", "OV": "2.23.140.1.2.2", "EV": "2.23.140.1.1"}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def generate_key(algorithm: str, bits: int) -> PrivateKey:
    """RSA with a modulus of `bits`, or ECDSA on the NIST curve of `bits` (256/384/521)."""
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if algorithm in ("EC", "ECDSA"):
        return ec.generate_private_key(CURVES[bits])
    raise ValueError(f"unknown key algorithm {algorithm!r}")


def key_family(key: Union[PrivateKey, CertificatePublicKeyTypes]) -> str:
    """'RSA' or 'EC', the two spellings PAN-OS uses in a certificate entry's <algorithm>."""
    return "RSA" if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)) else "EC"


def key_bits(key: Union[PrivateKey, PublicKey]) -> int:
    return key.key_size if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)) \
        else CURVE_BITS.get(key.curve.name, key.curve.key_size)


def public_der(key: Union[PrivateKey, CertificatePublicKeyTypes]) -> bytes:
    public = key.public_key() if isinstance(
        key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else key
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def key_pem(key: PrivateKey, passphrase: Optional[bytes] = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def openssl_oneline(name: x509.Name) -> str:
    """The `/CN=…/O=…` form PAN-OS shows in <subject> and <issuer> (panos.md §3.2)."""
    short = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O",
             NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.LOCALITY_NAME: "L",
             NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.COUNTRY_NAME: "C",
             NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.SERIAL_NUMBER: "serialNumber",
             NameOID.BUSINESS_CATEGORY: "businessCategory",
             NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC"}
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            label = short.get(attr.oid, attr.oid.dotted_string)
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            parts.append(f"/{label}={value}")
    return "".join(parts)


def openssl_name_hash(name: x509.Name) -> str:
    """OpenSSL's X509_NAME_hash (what `openssl x509 -subject_hash` prints, and PAN-OS shows as
    <subject-hash>): SHA-1 over the canonical encoding of the name, first four bytes read
    little-endian. The canonical form re-encodes string values as UTF8String, lower-cased, with
    runs of white space folded; cryptography does the DER, we only normalise the values."""
    rdns = []
    for rdn in name.rdns:
        attrs: List[x509.NameAttribute[Any]] = []
        for attr in rdn:
            value = attr.value
            if isinstance(value, str):
                value = " ".join(value.split()).lower()
                attrs.append(x509.NameAttribute(attr.oid, value, _type=_ASN1Type.UTF8String))
            else:
                attrs.append(attr)
        rdns.append(x509.RelativeDistinguishedName(attrs))
    der = x509.Name(rdns).public_bytes()
    # Drop the outer SEQUENCE header: OpenSSL hashes only the concatenated SETs.
    length_octets = 1 if der[1] < 0x80 else 1 + (der[1] & 0x7F)
    body = der[1 + length_octets:]
    digest = hashlib.sha1(body).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


@dataclass
class Authority:
    """A CA certificate and its key."""

    name: str
    key: PrivateKey
    cert: x509.Certificate
    parent: Optional["Authority"] = None

    def chain(self) -> List[x509.Certificate]:
        """This CA up to and including its root."""
        node: Optional[Authority] = self
        out = []
        while node is not None:
            out.append(node.cert)
            node = node.parent
        return out


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _sign_digest(key: PrivateKey) -> SignHash:
    return hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey) else hashes.SHA256()


def make_root(common_name: str, key: PrivateKey, organization: str, years: int = 25) -> Authority:
    now = utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=3650))
            .not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(_ski(key), critical=False)
            .sign(key, _sign_digest(key)))
    return Authority(common_name, key, cert)


def make_intermediate(common_name: str, key: PrivateKey, parent: Authority,
                      organization: str, years: int = 10) -> Authority:
    now = utcnow()
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(parent.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1000))
            .not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0 if "Server CA" in
                                                 common_name else None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(_ski(key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                parent.key.public_key()), critical=False)
            .sign(parent.key, _sign_digest(parent.key)))
    return Authority(common_name, key, cert, parent)


def general_names(names: Sequence[str]) -> List[x509.GeneralName]:
    out: List[x509.GeneralName] = []
    for item in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            out.append(x509.DNSName(item))
    return out


def issue_leaf(ca: Authority, public_key: PublicKey, subject: x509.Name, names: Sequence[str],
               not_before: dt.datetime, not_after: dt.datetime,
               policy: Optional[str] = None, server: bool = True) -> x509.Certificate:
    """A TLS server leaf. `names` become the subjectAltName, in order, without duplicates."""
    unique = list(dict.fromkeys(names))
    rsa_key = isinstance(public_key, rsa.RSAPublicKey)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(ca.cert.subject)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=rsa_key, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server
                   else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    if unique:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names(unique)),
                                        critical=False)
    if policy:
        builder = builder.add_extension(x509.CertificatePolicies([x509.PolicyInformation(
            x509.ObjectIdentifier(policy), None)]), critical=False)
    return builder.sign(ca.key, _sign_digest(ca.key))


# --- the two hierarchies ----------------------------------------------------------------------

SCM_ORG = "Sectigo Lab (emulated, not trusted anywhere)"

# (validation, family) -> names of the intermediates below the family's root, top first.
SCM_ISSUERS: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("DV", "RSA"): ("Lab Sectigo RSA Domain Validation Secure Server CA",),
    ("OV", "RSA"): ("Lab Sectigo RSA Organization Validation Secure Server CA",),
    ("EV", "RSA"): ("Lab Sectigo Public Server Authentication Root R46",
                    "Lab Sectigo RSA Extended Validation Secure Server CA"),
    ("DV", "EC"): ("Lab Sectigo ECC Domain Validation Secure Server CA",),
    ("OV", "EC"): ("Lab Sectigo ECC Organization Validation Secure Server CA",),
    ("EV", "EC"): ("Lab Sectigo Public Server Authentication Root E46",
                   "Lab Sectigo ECC Extended Validation Secure Server CA"),
}


@dataclass
class ScmHierarchy:
    """Roots and issuing CAs of the emulated SCM, one issuer per (validation, key family)."""

    roots: Dict[str, Authority]
    issuers: Dict[Tuple[str, str], Authority]

    @classmethod
    def create(cls) -> "ScmHierarchy":
        # CA keys are P-384 / RSA-2048: realistic enough, and fast to make at every lab start.
        roots = {"RSA": make_root("Lab USERTrust RSA Certification Authority",
                                  generate_key("RSA", 2048), SCM_ORG),
                 "EC": make_root("Lab USERTrust ECC Certification Authority",
                                 generate_key("EC", 384), SCM_ORG)}
        issuers: Dict[Tuple[str, str], Authority] = {}
        made: Dict[str, Authority] = {}
        for (validation, family), chain in SCM_ISSUERS.items():
            parent = roots[family]
            for cn in chain:
                if cn not in made:
                    key = generate_key("RSA", 2048) if family == "RSA" else generate_key("EC", 384)
                    made[cn] = make_intermediate(cn, key, parent, SCM_ORG)
                parent = made[cn]
            issuers[(validation, family)] = parent
        return cls(roots, issuers)

    def all_ca_certs(self) -> List[x509.Certificate]:
        seen: Dict[bytes, x509.Certificate] = {}
        for issuer in self.issuers.values():
            for cert in issuer.chain():
                seen[cert.fingerprint(hashes.SHA256())] = cert
        return list(seen.values())


@dataclass
class TlsHierarchy:
    """The root behind the lab's own HTTPS endpoints, and the server certificates it signs."""

    root: Authority
    server_key: PrivateKey = field(default_factory=lambda: generate_key("EC", 256))

    @classmethod
    def create(cls) -> "TlsHierarchy":
        return cls(make_root("PaloAltoFW Lab TLS Root CA", generate_key("EC", 256),
                             "PaloAltoFW Lab"))

    def server_certificate(self, hosts: Sequence[str]) -> x509.Certificate:
        now = utcnow()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        return issue_leaf(self.root, self.server_key.public_key(), subject,
                          list(hosts), now - dt.timedelta(hours=1),
                          now + dt.timedelta(days=30))

    def client_certificate(self, login: str) -> Tuple[x509.Certificate, PrivateKey]:
        """A client certificate for SCM's `/private` certificate authentication."""
        now = utcnow()
        key = generate_key("EC", 256)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, login)])
        cert = issue_leaf(self.root, key.public_key(), subject, [], now - dt.timedelta(hours=1),
                          now + dt.timedelta(days=30), server=False)
        return cert, key

    def write_files(self, directory: str, hosts: Sequence[str]) -> Dict[str, str]:
        """Write the CA bundle, the server certificate and key; return their paths."""
        os.makedirs(directory, exist_ok=True)
        paths = {"ca_bundle": os.path.join(directory, "lab-ca.pem"),
                 "cert": os.path.join(directory, "lab-server.pem"),
                 "key": os.path.join(directory, "lab-server.key")}
        with open(paths["ca_bundle"], "w", encoding="ascii") as handle:
            handle.write(cert_pem(self.root.cert))
        with open(paths["cert"], "w", encoding="ascii") as handle:
            handle.write(cert_pem(self.server_certificate(hosts)))
        fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem(self.server_key))
        return paths
