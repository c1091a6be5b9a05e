"""The classic REST API of the emulated SCM (sectigo.md §5), under /api/ssl/v1 (and v2),
with password headers, a bearer token, or a client certificate under /private."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from cryptography.hazmat.primitives import serialization

from .. import pki
from ..server import Request, Response
from .checks import merge_names
from .db import Order
from .enrollment import check_collectable, revoke
from .wire import (CLASSIC_FORMATS, JSON_CONTENT, MAX_COMMENTS, MAX_REQUESTER, ApiError, Ctx,
                   dcv_fields, json_object, json_response, opt_int, opt_str, path_id,
                   query_int, query_one, revoke_reason, serial_text, strftime_pattern)

if TYPE_CHECKING:  # pragma: no cover
    from .service import ScmService


class ClassicApi:
    """The route handlers of the classic API."""

    def __init__(self, scm: "ScmService") -> None:
        self.scm = scm

    def _check_org(self, request: Request) -> None:
        text = query_one(request, "organizationId")
        if text is None or text == "":
            return
        if not re.fullmatch(r"[0-9]{1,10}", text):
            raise ApiError(400, -1601, "organizationId")
        if int(text) not in (self.scm.accounts.org_id, self.scm.accounts.department_id):
            raise ApiError(400, -639)

    def types(self, ctx: Ctx) -> Response:
        self._check_org(ctx.request)
        return json_response(200, [p.as_json() for p in self.scm.accounts.profiles])

    def custom_fields(self, ctx: Ctx) -> Response:
        return json_response(200, self.scm.checks.custom_field_defs())

    def organizations(self, ctx: Ctx) -> Response:
        org = self.scm.accounts.org
        return json_response(200, [{"id": org.id, "name": org.name,
                            "departments": [{"id": org.department_id, "parentName": org.name,
                                             "name": org.department_name}]}])

    # -- classic enroll (§5.4) --------------------------------------------------------------

    def enroll(self, ctx: Ctx) -> Response:
        data = json_object(ctx.request)
        org_id = opt_int(data, "orgId")
        if org_id is None:
            raise ApiError(400, -7, "orgId")
        if org_id not in (self.scm.accounts.org_id, self.scm.accounts.department_id):
            raise ApiError(400, -639)
        cert_type = opt_int(data, "certType")
        if cert_type is None:
            raise ApiError(400, -7, "certType")
        profile = self.scm.accounts.profile(cert_type)
        if profile is None:
            raise ApiError(400, -39)
        term = self.scm.checks.term(profile, opt_int(data, "term"), None)
        sans_text = opt_str(data, "subjAltNames", 32767)
        sans = [s.strip() for s in sans_text.split(",") if s.strip()] if sans_text else []
        comments = opt_str(data, "comments", MAX_COMMENTS)
        requester = opt_str(data, "externalRequester", MAX_REQUESTER)
        dcv_fields(data)
        custom: Dict[str, str] = {}
        items = data.get("customFields")
        if items is not None:
            if not isinstance(items, list):
                raise ApiError(400, -1002, details="'customFields' must be an array")
            for item in items:
                if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                        and isinstance(item.get("value"), str)):
                    raise ApiError(400, -1002, details="customFields items are {name, value}")
                custom[item["name"]] = item["value"]
        parsed = self.scm.checks.csr(data, profile, classic=True, required=True)
        assert parsed is not None
        names = merge_names(parsed.common_name, sans)
        self.scm.checks.check_names(names, profile)
        self.scm.checks.check_custom_fields(custom)
        with self.scm.lock:
            order = self.scm.db.new("classic", profile, org_id, parsed.common_name, names,
                                    term, parsed.public_key, ctx.client, comments or "",
                                    requester or "", custom)
        return json_response(200, {"sslId": order.id, "renewId": order.renew_id})

    # -- classic collect (§5.5) -------------------------------------------------------------

    def collect(self, ctx: Ctx) -> Response:
        order_id = path_id(ctx.params["id"])
        fmt = ctx.params.get("format")
        if fmt is not None and query_one(ctx.request, "format") is not None:
            raise ApiError(400, -1601, "format", details="give the format once: path or query")
        if fmt is None:
            fmt = query_one(ctx.request, "format") or "base64"
        if fmt not in CLASSIC_FORMATS:
            raise ApiError(400, -126, fmt[:40])
        with self.scm.lock:
            order = self.scm.db.get(order_id)
            index = self.scm.ca.poll(order)
            if index is not None:
                raise self._pending(index)
            check_collectable(order)
            return self.scm.ca.download(order, fmt)

    def _pending(self, index: int) -> ApiError:
        style = self.scm.settings.pending_style
        if style == "rotate":
            style = ("code0", "-1400", "-183")[index % 3]
        if style == "code0":
            return ApiError(400, 0)
        if style == "-1400":
            return ApiError(404, -1400)
        return ApiError(400, -183)

    # -- classic details and list (§5.6) ----------------------------------------------------

    def details(self, ctx: Ctx) -> Response:
        order_id = path_id(ctx.params["id"])
        pattern = strftime_pattern(query_one(ctx.request, "dateFormat"))
        with self.scm.lock:
            order = self.scm.db.get(order_id)
            return json_response(200, self._details_json(order, pattern))

    def _details_json(self, order: Order, pattern: str) -> Dict[str, Any]:
        def date(value: Optional[dt.datetime]) -> Optional[str]:
            return value.strftime(pattern) if value is not None else None

        family = pki.key_family(order.public_key)
        bits = pki.key_bits(order.public_key)
        out: Dict[str, Any] = {
            "commonName": order.common_name, "sslId": order.id, "id": order.id,
            "orgId": order.org_id, "status": order.status, "orderNumber": order.id + 7_000_000,
            "backendCertId": str(order.id * 3 + 11), "vendor": "Sectigo Lab",
            "certType": order.profile.as_json(), "validationType": order.validation,
            "term": order.term, "owner": order.client, "requester": order.client,
            "requestedVia": "Enrollment Endpoint" if order.api == "enrollment" else "REST API",
            "externalRequester": order.external_requester, "comments": order.comments,
            "requested": date(order.requested), "renewed": order.renewed,
            "keyAlgorithm": family, "keySize": bits,
            "keyType": f"RSA - {bits}" if family == "RSA" else f"EC - P-{bits}",
            "subjectAlternativeNames": list(order.names),
            "customFields": [{"name": k, "value": v} for k, v in order.custom_fields.items()],
            "autoInstallDetails": {"state": "NOT_ELIGIBLE"},
            "autoRenewDetails": {"state": "NOT_ELIGIBLE"},
            "suspendNotifications": False,
        }
        optional = {"approved": date(order.issued), "issued": date(order.issued),
                    "declined": date(order.declined), "revoked": date(order.revoked),
                    "replaced": date(order.replaced), "renewedDate": date(order.renewed_date)}
        out.update({k: v for k, v in optional.items() if v is not None})
        if order.reason_code is not None:
            out["reasonCode"] = order.reason_code
        if order.renew_of is not None:
            out["renewOf"] = order.renew_of
        if order.leaf is not None:
            leaf = order.leaf
            out["expires"] = date(leaf.not_valid_after_utc)
            out["serialNumber"] = serial_text(leaf)
            # The issuer is of the key's family, and pki signs RSA with SHA-256, EC with SHA-384.
            out["signatureAlg"] = "SHA256WITHRSA" if family == "RSA" else "SHA384WITHECDSA"
            out["keyUsages"] = ["digitalSignature"] + (["keyEncipherment"]
                                                       if family == "RSA" else [])
            out["extendedKeyUsages"] = ["serverAuth", "clientAuth"]
            der = leaf.public_bytes(serialization.Encoding.DER)
            out["certificateDetails"] = {
                "issuer": leaf.issuer.rfc4514_string(), "subject": leaf.subject.rfc4514_string(),
                "subjectAltNames": ", ".join(f"dNSName={n}" for n in order.names),
                "md5Hash": hashlib.md5(der).hexdigest().upper(),  # noqa: S324 - a fingerprint
                "sha1Hash": hashlib.sha1(der).hexdigest().upper()}  # noqa: S324
        return out

    def list(self, ctx: Ctx) -> Response:
        request = ctx.request
        size = min(query_int(request, "size", 10, 0), 200)
        position = query_int(request, "position", 0, 0)
        filters: List[Callable[[Order], bool]] = []
        cn = query_one(request, "commonName")
        if cn:
            filters.append(lambda o: o.common_name.lower() == cn.lower())
        san = query_one(request, "subjectAlternativeName")
        if san:
            filters.append(lambda o: san.lower() in (n.lower() for n in o.names))
        status = query_one(request, "status")
        if status:
            filters.append(lambda o: o.status.lower() == status.lower())
        serial = query_one(request, "serialNumber")
        if serial:
            wanted = serial.replace(":", "").lower().lstrip("0")
            filters.append(lambda o: o.leaf is not None
                           and f"{o.leaf.serial_number:x}" == wanted)
        profile_id = _query_id(request, "sslTypeId")
        if profile_id is not None:
            filters.append(lambda o: o.profile.id == profile_id)
        org_id = _query_id(request, "orgId")
        if org_id is not None:
            filters.append(lambda o: o.org_id == org_id)
        with self.scm.lock:
            matching = [o for o in self.scm.db.all() if all(f(o) for f in filters)]
            page = matching[position:position + size]
            items = []
            for order in page:
                item: Dict[str, Any] = {"sslId": order.id, "commonName": order.common_name,
                                        "subjectAlternativeNames": list(order.names)}
                if order.leaf is not None:
                    item["serialNumber"] = serial_text(order.leaf)
                items.append(item)
        return json_response(200, items, [("X-Total-Count", str(len(matching)))])

    # -- classic renew (§5.7) ---------------------------------------------------------------

    def renew_by_id(self, ctx: Ctx) -> Response:
        order_id = path_id(ctx.params["id"])
        data = json_object(ctx.request)
        dcv_fields(data)
        with self.scm.lock:
            old = self.scm.db.get(order_id)
            if old.status not in ("Issued", "Expired", "Revoked"):
                raise ApiError(400, -105, old.status)
            parsed = self.scm.checks.csr(data, old.profile, classic=True, required=False)
            order = self.scm.db.renew(old, "classic", ctx.client, parsed)
        return json_response(200, {"sslId": order.id})

    def renew_by_renew_id(self, ctx: Ctx) -> Response:
        renew_id = ctx.params["renew_id"]
        data = json_object(ctx.request)
        with self.scm.lock:
            old = self.scm.db.by_renew_id(renew_id)
            if old is None:
                raise ApiError(404, -123)
            self.scm.ca.refresh(old)
            if old.status not in ("Issued", "Expired", "Revoked"):
                raise ApiError(400, -105, old.status)
            parsed = self.scm.checks.csr(data, old.profile, classic=True, required=False)
            order = self.scm.db.renew(old, "classic", ctx.client, parsed)
        return Response(204, b"", JSON_CONTENT, log={"id": order.id})

    # -- classic revoke and replace (§5.8) --------------------------------------------------

    def revoke(self, ctx: Ctx) -> Response:
        return revoke(self.scm, ctx)

    def replace(self, ctx: Ctx) -> Response:
        order_id = path_id(ctx.params["id"])
        data = json_object(ctx.request)
        revoke_reason(data)
        common_name = opt_str(data, "commonName")
        if common_name is not None and not 1 <= len(common_name) <= 64:
            raise ApiError(400, -1601, "commonName", details="1 to 64 characters")
        sans = data.get("subjectAlternativeNames")
        if sans is not None and (not isinstance(sans, list)
                                 or not all(isinstance(s, str) for s in sans)):
            raise ApiError(400, -1002, details="'subjectAlternativeNames' must be an array")
        dcv_fields(data)
        with self.scm.lock:
            order = self.scm.db.get(order_id)
            if order.status != "Issued":
                raise ApiError(400, -130, order.status)
            parsed = self.scm.checks.csr(data, order.profile, classic=True, required=True)
            assert parsed is not None
            cn = common_name or parsed.common_name
            names = merge_names(cn, [s.strip() for s in sans or [] if s.strip()])
            self.scm.checks.check_names(names, order.profile)
            order.common_name, order.names = cn, names
            order.public_key = parsed.public_key
            order.status = "Requested"
            order.pending_left = int(self.scm.settings.pending_polls)
            order.polls = 0
            order.leaf, order.chain, order.defect = None, [], ""
            order.replaced = pki.utcnow()
        return Response(204, b"", JSON_CONTENT, log={"id": order_id})


def _query_id(request: Request, name: str) -> Optional[int]:
    text = query_one(request, name)
    if not text:
        return None
    if not re.fullmatch(r"[0-9]{1,10}", text):
        raise ApiError(400, -1601, name)
    return int(text)
