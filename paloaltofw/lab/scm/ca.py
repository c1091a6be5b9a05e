"""Issuance in the emulated SCM (Pebble's "ca"): when a pending order is issued (after
settings.pending_polls "pending" answers, or declined), what its certificate holds (the
profile's validation level, the organization record for OV/EV subjects, the requested names,
Sectigo's validity from midnight of the issue day), the injectable defects, and the chain in
each download format's order."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import TYPE_CHECKING, Dict, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from .. import pki
from ..server import Response
from .db import Order
from .wire import DOWNLOAD_CONTENT

if TYPE_CHECKING:  # pragma: no cover
    from .service import ScmService

log = logging.getLogger("lab.scm")


class Authority:
    """Issues the certificates of the orders."""

    def __init__(self, scm: "ScmService") -> None:
        self.scm = scm
        self._rogue_keys: Dict[str, pki.PrivateKey] = {}

    def refresh(self, order: Order) -> None:
        if order.status == "Issued" and order.leaf is not None \
                and order.leaf.not_valid_after_utc < pki.utcnow():
            order.status = "Expired"

    def poll(self, order: Order) -> Optional[int]:
        """One collect/download of a Requested order. Returns the index of this pending answer
        (0, 1, ...) while it stays pending, None once it has been finalised."""
        if order.status != "Requested":
            return None
        if order.pending_left > 0:
            order.pending_left -= 1
            index = order.polls
            order.polls += 1
            return index
        self.finalise(order)
        return None

    def finalise(self, order: Order) -> None:
        order.pending_left = 0
        if order.decline:
            order.status = "Declined"
            order.declined = pki.utcnow()
            log.info("order %s declined", order.id)
            return
        self.issue(order)

    def issue(self, order: Order) -> None:
        defect = ""
        if self.scm.settings.bad_issuance and self.scm.settings.bad_issuance_count > 0:
            defect = self.scm.settings.bad_issuance
            self.scm.settings.bad_issuance_count = self.scm.settings.bad_issuance_count - 1
        family = pki.key_family(order.public_key)
        issuer = self.scm.hierarchy.issuers[(order.validation, family)]
        today = pki.utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        not_before = today - dt.timedelta(days=self.scm.settings.backdate_days)
        if defect == "expired":
            not_before = today - dt.timedelta(days=order.term)
        elif defect == "not_yet_valid":
            not_before = today + dt.timedelta(days=1)
        not_after = not_before + dt.timedelta(days=order.term) - dt.timedelta(seconds=1)
        public_key = order.public_key
        if defect == "wrong_key":
            public_key = self._other_key(order.public_key).public_key()
        names = [order.common_name] if defect == "missing_names" else order.names
        signer = issuer
        if defect == "broken_chain":
            # Same issuer name, different key: the chain looks right but does not verify.
            signer = pki.Authority(issuer.name, self._rogue_key(family), issuer.cert,
                                   issuer.parent)
        order.leaf = pki.issue_leaf(signer, public_key, self._subject(order), names,
                                    not_before, not_after,
                                    policy=pki.POLICY_OIDS[order.validation])
        order.chain = issuer.chain()
        order.defect = defect
        order.status = "Issued"
        order.issued = pki.utcnow()
        self.refresh(order)
        log.info("order %s issued%s", order.id, f" with defect {defect}" if defect else "")

    def _other_key(self, key: pki.PublicKey) -> pki.PrivateKey:
        if isinstance(key, rsa.RSAPublicKey):
            return rsa.generate_private_key(public_exponent=65537, key_size=key.key_size)
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return ec.generate_private_key(key.curve)

    def _rogue_key(self, family: str) -> pki.PrivateKey:
        if family not in self._rogue_keys:
            self._rogue_keys[family] = (pki.generate_key("RSA", 2048) if family == "RSA"
                                        else pki.generate_key("EC", 384))
        return self._rogue_keys[family]

    def _subject(self, order: Order) -> x509.Name:
        org = self.scm.accounts.org
        attrs: List[x509.NameAttribute[str]] = []
        if order.validation == "EV":
            attrs += [x509.NameAttribute(NameOID.SERIAL_NUMBER, org.registration_number),
                      x509.NameAttribute(NameOID.JURISDICTION_COUNTRY_NAME,
                                         org.jurisdiction_country),
                      x509.NameAttribute(NameOID.BUSINESS_CATEGORY, org.business_category)]
        if order.validation in ("OV", "EV"):
            attrs += [x509.NameAttribute(NameOID.COUNTRY_NAME, org.country),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, org.state),
                      x509.NameAttribute(NameOID.LOCALITY_NAME, org.locality),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org.name)]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, order.common_name))
        return x509.Name(attrs)

    def download(self, order: Order, fmt: str) -> Response:
        assert order.leaf is not None
        leaf, chain = order.leaf, list(order.chain)
        top_down = list(reversed(chain))
        pem_formats: Dict[str, List[x509.Certificate]] = {
            "x509": top_down + [leaf], "x509R": [leaf] + chain, "pem": [leaf] + chain,
            "x509CO": [leaf], "pemco": [leaf], "x509IO": top_down, "x509IOR": chain,
            "pemia": [leaf] + chain[:-1]}
        if fmt in pem_formats:
            body = "".join(pki.cert_pem(c) for c in pem_formats[fmt]).encode("ascii")
            ext = "pem" if fmt.startswith("pem") else "crt"
        else:
            encoding = serialization.Encoding.PEM if fmt == "base64" \
                else serialization.Encoding.DER
            body = pkcs7.serialize_certificates(top_down + [leaf], encoding)
            ext = "p7b"
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", order.common_name.replace("*", "star"))
        headers = [("Content-Disposition", f'attachment; filename="{stem}.{ext}"')]
        return Response(200, body, DOWNLOAD_CONTENT, headers, log={"id": order.id})
