"""The Enrollment API of the emulated SCM (sectigo.md §6): `POST /api/v1/certificates` and
`GET/POST /api/v1/certificates/{certId}[/renew|/revoke]`, bearer tokens only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..server import Response
from .accounts import CertProfile
from .checks import merge_names
from .db import Order
from .wire import (CLASSIC_FORMATS, JSON_CONTENT, MAX_COMMENTS, MAX_REQUESTER, ApiError, Ctx,
                   dcv_fields, json_object, json_response, opt_int, opt_str, path_id,
                   query_one, revoke_reason)

if TYPE_CHECKING:  # pragma: no cover
    from .service import ScmService


class EnrollmentApi:
    """The route handlers of the Enrollment API."""

    def __init__(self, scm: "ScmService") -> None:
        self.scm = scm

    def _profile(self, data: Dict[str, Any]) -> Optional[CertProfile]:
        profile_id = opt_int(data, "profileId")
        alias = opt_int(data, "productId")
        if profile_id is not None and alias is not None and profile_id != alias:
            raise ApiError(400, -1601, "productId", details="profileId and productId differ")
        chosen = profile_id if profile_id is not None else alias
        if chosen is None:
            return None
        profile = self.scm.accounts.profile(chosen)
        if profile is None:
            raise ApiError(400, -111, chosen)
        return profile

    def _extras(self, data: Dict[str, Any]) -> Tuple[
            Optional[List[str]], Optional[str], Optional[str], Optional[Dict[str, str]]]:
        sans = data.get("subjAltNames")
        if sans is not None and (not isinstance(sans, list)
                                 or not all(isinstance(s, str) for s in sans)):
            raise ApiError(400, -1002, details="'subjAltNames' must be an array of strings")
        comments = opt_str(data, "comments", MAX_COMMENTS)
        requester = opt_str(data, "externalRequester", MAX_REQUESTER)
        custom = data.get("customFields")
        if custom is not None and (not isinstance(custom, dict)
                                   or not all(isinstance(v, str) for v in custom.values())):
            raise ApiError(400, -1002, details="'customFields' must be an object of strings")
        dcv_fields(data)
        return sans, comments, requester, custom

    def enroll(self, ctx: Ctx) -> Response:
        data = json_object(ctx.request)
        profile = self._profile(data)
        if profile is None:
            raise ApiError(400, -7, "profileId")
        sans, comments, requester, custom = self._extras(data)
        term = self.scm.checks.term(profile, opt_int(data, "term"), None)
        parsed = self.scm.checks.csr(data, profile, classic=False, required=True)
        assert parsed is not None
        names = merge_names(parsed.common_name, sans or [])
        self.scm.checks.check_names(names, profile)
        self.scm.checks.check_custom_fields(custom or {})
        with self.scm.lock:
            order = self.scm.db.new("enrollment", profile, self.scm.accounts.department_id,
                                    parsed.common_name, names, term, parsed.public_key,
                                    ctx.client, comments or "", requester or "", custom)
        return json_response(200, {"certId": order.id})

    def download(self, ctx: Ctx) -> Response:
        order_id = path_id(ctx.params["id"])
        fmt = query_one(ctx.request, "format")
        if fmt is not None and fmt not in CLASSIC_FORMATS:
            raise ApiError(400, -1450, fmt[:40])
        with self.scm.lock:
            order = self.scm.db.get(order_id)
            index = self.scm.ca.poll(order)
            if index is not None:
                raise ApiError(404, -103 if index % 2 == 0 else -109)
            check_collectable(order)
            return self.scm.ca.download(order, fmt or "x509R")

    def renew(self, ctx: Ctx) -> Response:
        order_id = path_id(ctx.params["id"])
        data = json_object(ctx.request)
        profile = self._profile(data)
        sans, comments, requester, custom = self._extras(data)
        term = opt_int(data, "term")
        with self.scm.lock:
            old = self.scm.db.get(order_id)
            if old.status not in ("Issued", "Expired", "Revoked"):
                raise ApiError(400, -130, old.status)
            parsed = self.scm.checks.csr(data, profile or old.profile, classic=False, required=False)
            order = self.scm.db.renew(old, "enrollment", ctx.client, parsed, profile, term,
                                      sans, comments, requester, custom)
        return json_response(200, {"certId": order.id})

    def revoke(self, ctx: Ctx) -> Response:
        return revoke(self.scm, ctx)


def check_collectable(order: Order) -> None:
    if order.status == "Revoked":
        raise ApiError(400, -110)
    if order.status == "Declined":
        raise ApiError(400, -1112, "Declined")


def revoke(scm: "ScmService", ctx: Ctx) -> Response:
    """Both APIs' revoke route: {"reasonCode"?, "reason"} -> 204."""
    order_id = path_id(ctx.params["id"])
    _reason_text, code = revoke_reason(json_object(ctx.request))
    with scm.lock:
        scm.db.revoke(order_id, code)
    return Response(204, b"", JSON_CONTENT, log={"id": order_id})
