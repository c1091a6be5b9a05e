"""Certificates the agent receives: parse the chain, verify it before import, name CA objects.

"Verify before import" (PRODUCT.md): the leaf's public key must be the CSR's (the key that never
left the firewall), its subjectAltName must cover every name of the profile, each certificate
must be signed by the next up to a self-signed root, and all must be in date. Signature checks
are cryptography's (`verify_directly_issued_by`); nothing here parses ASN.1 by hand.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs7

from .errors import VerificationError
from .facts import Facts, names_cover


@dataclass
class Chain:
    leaf: x509.Certificate
    intermediates: List[x509.Certificate]  # the leaf's issuer first
    root: Optional[x509.Certificate]

    @property
    def cas(self) -> List[x509.Certificate]:
        return self.intermediates + ([self.root] if self.root is not None else [])


def spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def load_certificates(data: bytes) -> List[x509.Certificate]:
    """PEM certificates, PEM or DER PKCS#7, or one DER certificate, whichever SCM sent."""
    text = data.lstrip()
    try:
        if b"-----BEGIN PKCS7-----" in text:
            return list(pkcs7.load_pem_pkcs7_certificates(data))
        if b"-----BEGIN CERTIFICATE-----" in text:
            return x509.load_pem_x509_certificates(data)
        try:
            return list(pkcs7.load_der_pkcs7_certificates(data))
        except ValueError:
            return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise VerificationError(f"SCM sent something that is not a certificate chain "
                                f"({exc})") from None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
        return True
    except Exception:  # InvalidSignature, ValueError, TypeError: all mean "not issued by"
        return False


def self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _signed_by(cert, cert)


def build_chain(certs: Sequence[x509.Certificate], csr_key_der: bytes,
                anchors: Sequence[x509.Certificate] = ()) -> Chain:
    """Order the certificates by issuer, whatever order SCM used: the leaf is the certificate
    with the CSR's key (or, failing that, the one no other certificate names as issuer). When
    SCM's bundle stops short of a root, the chain is completed from `anchors` (CA certificates
    already on the firewall), checking each signature."""
    if not certs:
        raise VerificationError("SCM sent no certificate")
    unique = list({fingerprint(c): c for c in certs}.values())
    leaf = next((c for c in unique if spki(c.public_key()) == csr_key_der), None)
    if leaf is None:
        subjects_used_as_issuer = {c.issuer for c in unique}
        candidates = [c for c in unique if not is_ca(c)] or \
            [c for c in unique if c.subject not in subjects_used_as_issuer]
        leaf = candidates[0] if candidates else unique[0]
    intermediates: List[x509.Certificate] = []
    root = None
    current = leaf
    remaining = [c for c in unique if c is not leaf]
    while True:
        issuer = next((c for c in remaining if c.subject == current.issuer), None)
        if issuer is None:
            issuer = next((a for a in anchors if a.subject == current.issuer
                           and _signed_by(current, a)), None)
        if issuer is None or len(intermediates) > 8:
            break
        if issuer in remaining:  # an anchor from the firewall is not among SCM's
            remaining.remove(issuer)
        if self_signed(issuer):
            root = issuer
            break
        intermediates.append(issuer)
        current = issuer
    return Chain(leaf, intermediates, root)


def certificate_names(cert: x509.Certificate) -> List[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + \
        [str(v) for v in san.get_values_for_type(x509.IPAddress)]


def covers(cert: x509.Certificate, name: str) -> bool:
    return names_cover(certificate_names(cert), name)


def verify_issued(chain: Chain, csr_key_der: bytes, names: Sequence[str],
                  now: Optional[dt.datetime] = None) -> None:
    """Raise VerificationError with the first problem found; return quietly when all is well."""
    now = now or dt.datetime.now(dt.timezone.utc)
    leaf = chain.leaf
    if spki(leaf.public_key()) != csr_key_der:
        raise VerificationError("the issued certificate does not carry the key of the CSR "
                                "made on the firewall")
    missing = [n for n in names if not covers(leaf, n)]
    if missing:
        raise VerificationError(f"the issued certificate does not cover {', '.join(missing)} "
                                f"(it has: {', '.join(certificate_names(leaf)) or 'no SANs'})")
    for cert in [leaf] + chain.cas:
        if cert.not_valid_before_utc > now:
            # Possibly this machine's clock: collect again next run rather than give up.
            raise VerificationError(f"'{subject_cn(cert)}' is not valid before "
                                    f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check "
                                    "this machine's clock)", retry=True)
        if cert.not_valid_after_utc < now:
            raise VerificationError(f"'{subject_cn(cert)}' expired on "
                                    f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if chain.root is None:
        raise VerificationError(f"the chain does not reach a root: no certificate for issuer "
                                f"'{(chain.intermediates or [leaf])[-1].issuer.rfc4514_string()}'")
    path = [leaf] + chain.intermediates + [chain.root]
    for child, parent in zip(path, path[1:]):
        if not is_ca(parent):
            raise VerificationError(f"'{subject_cn(parent)}' signs '{subject_cn(child)}' but "
                                    "is not a CA certificate")
        if not _signed_by(child, parent):
            raise VerificationError(f"the signature on '{subject_cn(child)}' does not verify "
                                    f"with '{subject_cn(parent)}'")


def facts_of(cert: x509.Certificate) -> Facts:
    """What the lifecycle asks of an installed certificate, read from its X.509 (facts.py)."""
    try:
        names: Optional[Tuple[str, ...]] = tuple(certificate_names(cert))
    except Exception:  # noqa: BLE001 - ValueError, DuplicateExtension, UnsupportedGeneralNameType...
        names = None
    return Facts(not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                 key_label=key_label(cert), subject_cn=subject_cn(cert),
                 issuer_cn=issuer_cn(cert), names=names)


def load_pem(pem: str) -> Optional[x509.Certificate]:
    """The certificate of a PEM text, None when it is not a readable one."""
    try:
        return x509.load_pem_x509_certificate(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None


def subject_cn(cert: x509.Certificate) -> str:
    return _cn(cert.subject)


def issuer_cn(cert: x509.Certificate) -> str:
    return _cn(cert.issuer)


def _cn(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(found[0].value) if found else name.rfc4514_string()


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def csr_key(csr_pem: str) -> bytes:
    """The public key (SubjectPublicKeyInfo, DER) of a PEM CSR."""
    return spki(x509.load_pem_x509_csr(csr_pem.encode("ascii")).public_key())


def csr_summary(csr_pem: str) -> Tuple[str, List[str]]:
    """The key type (as profiles name it) and the names of a PEM CSR: its CN and SANs."""
    csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
    names = [str(a.value) for a in csr.subject.get_attributes_for_oid(
        x509.NameOID.COMMON_NAME)]
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [str(v) for v in san.get_values_for_type(x509.DNSName)] + \
            [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return _key_label(csr.public_key()), names


def ca_object_name(cert: x509.Certificate, limit: int = 63) -> str:
    """A stable PAN-OS object name for a CA certificate: its CN made name-safe, with a short
    fingerprint so that two CAs with one CN (a re-keyed intermediate) do not collide."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", subject_cn(cert)).strip("-_") or "CA"
    tag = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:8]
    return f"{base[:limit - len(tag) - 1].rstrip('-_')}-{tag}"


POLICY_VALIDATION = {"2.23.140.1.2.1": "DV", "2.23.140.1.2.2": "OV", "2.23.140.1.1": "EV"}


def validation_level(cert: x509.Certificate) -> Optional[str]:
    """DV, OV or EV from the CA/Browser Forum policy OID of a leaf, when it carries one."""
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return None
    for policy in policies:
        level = POLICY_VALIDATION.get(policy.policy_identifier.dotted_string)
        if level:
            return level
    return None


def key_label(cert: x509.Certificate) -> str:
    return _key_label(cert.public_key())


def _key_label(key: object) -> str:
    size = getattr(key, "key_size", 0)
    curve = getattr(getattr(key, "curve", None), "name", "")
    if curve:
        return {"secp256r1": "ECDSA-P256", "secp384r1": "ECDSA-P384",
                "secp521r1": "ECDSA-P521"}.get(curve, f"ECDSA-{curve}")
    return f"RSA-{size}"
