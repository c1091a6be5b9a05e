"""The emulated SCM's front end (Pebble's "wfe"): the routes, authentication, the lab's controls
and the Service interface the HTTPS endpoint calls. The work is the roles': `db` (orders),
`ca` (issuance), `checks` (what an order must satisfy), `tokens` (OAuth), and the two APIs'
handlers, `enrollment` and `classic`."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Pattern, Tuple

from cryptography import x509
from cryptography.x509.oid import NameOID

from .. import pki
from ..server import Request, Response, Service
from .accounts import ScmAccounts
from .ca import Authority
from .checks import Checks
from .classic import ClassicApi
from .db import Order, Orders
from .enrollment import EnrollmentApi
from .settings import ScmSettings
from .tokens import TOKEN_PATH, Tokens
from .wire import (JSON_CONTENT, MESSAGES, REVOKE_REASONS, ApiError, Ctx, KeycloakError, dumps,
                   is_int)


@dataclass(frozen=True)
class _Route:
    methods: Tuple[str, ...]
    pattern: Pattern[str]
    handler: str
    api: str  # "token" | "enrollment" | "classic"


def _routes() -> List[_Route]:
    ssl = r"/ssl/v[12]"
    reserved = r"(?!(?:types|customFields|enroll|collect|renewById|renew|revoke|replace)$)"
    table = [
        (("POST",), re.escape(TOKEN_PATH), "tokens.route", "token"),
        (("POST",), r"/v1/certificates", "enrollment.enroll", "enrollment"),
        (("GET",), r"/v1/certificates/(?P<id>[^/]+)", "enrollment.download", "enrollment"),
        (("POST",), r"/v1/certificates/(?P<id>[^/]+)/renew", "enrollment.renew",
         "enrollment"),
        (("POST",), r"/v1/certificates/(?P<id>[^/]+)/revoke", "enrollment.revoke",
         "enrollment"),
        (("GET",), rf"{ssl}/types", "classic.types", "classic"),
        (("GET",), rf"{ssl}/customFields", "classic.custom_fields", "classic"),
        (("GET",), r"/organization/v1", "classic.organizations", "classic"),
        (("POST",), rf"{ssl}/enroll", "classic.enroll", "classic"),
        (("GET",), rf"{ssl}/collect/(?P<id>[^/]+)", "classic.collect", "classic"),
        (("GET",), rf"{ssl}/collect/(?P<id>[^/]+)/(?P<format>[^/]+)", "classic.collect", "classic"),
        (("POST",), rf"{ssl}/renewById/(?P<id>[^/]+)", "classic.renew_by_id", "classic"),
        (("POST",), rf"{ssl}/renew/(?P<renew_id>[^/]+)", "classic.renew_by_renew_id", "classic"),
        (("POST",), rf"{ssl}/revoke/(?P<id>[^/]+)", "classic.revoke", "classic"),
        (("POST",), rf"{ssl}/replace/(?P<id>[^/]+)", "classic.replace", "classic"),
        (("GET", "HEAD"), ssl, "classic.list", "classic"),
        (("GET",), rf"{ssl}/{reserved}(?P<id>[^/]+)", "classic.details", "classic"),
    ]
    return [_Route(methods, re.compile(pattern + "$"), handler, api)
            for methods, pattern, handler, api in table]


class ScmService(Service):
    """The emulated SCM. Set `public_url` once the Endpoint exists (see module docstring)."""

    name = "scm"

    def __init__(self, hierarchy: pki.ScmHierarchy, tls: pki.TlsHierarchy,
                 accounts: ScmAccounts, order_log: Optional[str] = None,
                 settings: Optional[ScmSettings] = None) -> None:
        self.hierarchy = hierarchy
        self.tls = tls
        self.accounts = accounts
        self.settings = settings or ScmSettings()
        self.public_url: Optional[str] = None
        self.db = Orders(self, order_log)
        self.lock = self.db.lock
        self.ca = Authority(self)
        self.checks = Checks(self)
        self.tokens = Tokens(self)
        self.enrollment = EnrollmentApi(self)
        self.classic = ClassicApi(self)
        self._routes = _routes()

    @property
    def orders(self) -> Dict[int, Order]:
        return self.db.by_id

    @property
    def order_log(self) -> List[Dict[str, Any]]:
        """One entry per billable operation (enroll in either API, renewById,
        renew/{renewId}, Enrollment renew)."""
        return self.db.log

    # -- Service interface -------------------------------------------------------------------

    def summary(self, request: Request) -> str:
        # Method and path only: query strings and bodies may carry secrets, and ids are enough
        # to match faults on.
        return f"{request.method} {request.path}"

    def fault_response(self, status: int, retry_after: Optional[float]) -> Response:
        headers: List[Tuple[str, str]] = []
        if retry_after:
            headers.append(("Retry-After", str(int(retry_after)) if float(retry_after).is_integer()
                            else str(retry_after)))
        text = ("Too many requests. Please retry later." if status == 429
                else MESSAGES[-2])
        return Response(status, dumps({"code": -2, "description": text}), JSON_CONTENT,
                        headers, log={"code": -2})

    def internal_error(self) -> Response:
        return Response(503, dumps({"code": -2, "description": MESSAGES[-2]}), JSON_CONTENT,
                        log={"code": -2})

    def control(self, action: str, body: Dict[str, Any]) -> Any:
        """Lab actions: expire_tokens, revoke/issue_now/expire/decline {"id": N}, orders."""
        if action == "expire_tokens":
            return {"expired": self.tokens.expire_all()}
        if action == "orders":
            with self.lock:
                return [order.summary() for order in self.orders.values()]
        if action not in ("revoke", "issue_now", "expire", "decline"):
            raise ValueError(f"unknown action {action!r}; known: expire_tokens, revoke, "
                             f"issue_now, expire, decline, orders")
        order_id = body.get("id")
        if not isinstance(order_id, int) or not is_int(order_id):
            raise ValueError("body must be {\"id\": <order id>}")
        with self.lock:
            order = self.orders.get(order_id)
            if order is None:
                raise ValueError(f"no order {order_id}")
            self.ca.refresh(order)
            if action == "revoke":
                if order.status not in ("Issued", "Expired"):
                    raise ValueError(f"order {order_id} is {order.status}, not Issued")
                order.status = "Revoked"
                order.revoked = pki.utcnow()
                reason = body.get("reasonCode", 0)
                order.reason_code = reason if reason in REVOKE_REASONS else 0
            elif action == "expire":
                if order.status != "Issued":
                    raise ValueError(f"order {order_id} is {order.status}, not Issued")
                order.status = "Expired"
            else:
                if order.status != "Requested":
                    raise ValueError(f"order {order_id} is {order.status}, not Requested")
                if action == "decline":
                    order.decline = True
                self.ca.finalise(order)
            return {"id": order.id, "status": order.status}

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        response = self._route(request)
        response.log.setdefault("auth", "none")
        return response

    def _route(self, request: Request) -> Response:
        path = request.path
        private = path.startswith("/private/api/")
        in_api = private or path.startswith("/api/")
        sub = path[len("/private/api"):] if private else path[len("/api"):] if in_api else path
        candidates: List[_Route] = []
        for route in self._routes:
            if route.api == "token":
                target: Optional[str] = path
            elif route.api == "enrollment":
                target = sub if in_api and not private else None
            else:
                target = sub if in_api else None
            if target is not None and route.pattern.match(target):
                candidates.append(route)
        if not candidates:
            return ApiError(404, -1, description=f"Unknown resource: {request.method[:16]} "
                            f"{path[:200]}").response()
        chosen = next((r for r in candidates if request.method in r.methods), None)
        if chosen is None:
            if candidates[0].api == "token":
                return self.tokens.error(KeycloakError(405, "invalid_request",
                                                       "HTTP method not allowed"))
            allowed = sorted({m for r in candidates for m in r.methods})
            return ApiError(405, -1, description=f"Method {request.method[:16]} is not "
                            f"supported for this resource",
                            headers=[("Allow", ", ".join(allowed))]).response()
        route = chosen
        match = route.pattern.match(path if route.api == "token" else sub)
        assert match is not None  # it matched when the candidates were collected
        ctx = Ctx(request, {k: v for k, v in match.groupdict().items() if v is not None},
                   private=private)
        role, handler = route.handler.split(".")
        if route.api == "token":
            try:
                return self.tokens.route(ctx)
            except KeycloakError as exc:
                return self.tokens.error(exc)
        try:
            self._authenticate(ctx, route.api)
            response: Response = getattr(getattr(self, role), handler)(ctx)
        except ApiError as exc:
            response = exc.response()
        response.log.setdefault("auth", ctx.auth)
        return response

    def token_url(self, request: Optional[Request] = None) -> str:
        return self.base_url(request) + TOKEN_PATH

    def base_url(self, request: Optional[Request]) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = request.header("Host") if request is not None else None
        # Only a plain host[:port] is echoed back into a header; anything else is not trusted.
        if host and re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?",
                                 host):
            return f"https://{host}"
        return "https://localhost"

    # -- authentication ---------------------------------------------------------------------

    def _unauthorized(self, ctx: Ctx, token_presented: bool) -> ApiError:
        value = f'Bearer authorization_uri="{self.token_url(ctx.request)}"'
        if token_presented:
            value += ', error="invalid_token"'
        return ApiError(401, -16, headers=[("WWW-Authenticate", value)])

    def _bearer(self, ctx: Ctx) -> bool:
        """Checks an Authorization header if there is one; False if there is none."""
        header = ctx.request.header("Authorization")
        if header is None:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._unauthorized(ctx, token_presented=False)
        client = self.tokens.client(token.strip())
        if client is None:
            raise self._unauthorized(ctx, token_presented=True)
        ctx.auth, ctx.client = "bearer", client
        return True

    def _authenticate(self, ctx: Ctx, api: str) -> None:
        if api == "enrollment":
            if not self._bearer(ctx):
                raise self._unauthorized(ctx, token_presented=False)
            return
        request = ctx.request
        login = request.header("login") or ""
        customer = request.header("customerUri") or ""
        good_login = hmac.compare_digest(login.encode(), self.accounts.login.encode())
        good_customer = hmac.compare_digest(customer.encode(),
                                            self.accounts.customer_uri.encode())
        if ctx.private:
            if not (request.client_cert_der and good_login and good_customer
                    and self._cert_login(request.client_cert_der) == self.accounts.login):
                raise self._unauthorized(ctx, token_presented=False)
            ctx.auth, ctx.client = "cert", login
            return
        if self._bearer(ctx):
            return
        password = request.header("password") or ""
        good_password = hmac.compare_digest(password.encode(), self.accounts.password.encode())
        if not (good_login and good_customer and good_password):
            raise self._unauthorized(ctx, token_presented=False)
        ctx.auth, ctx.client = "password", login

    def _cert_login(self, der: bytes) -> Optional[str]:
        """The CN of a client certificate issued by the lab TLS root, else None. The TLS layer
        has verified it already; this is a second check that does not depend on its CA list."""
        try:
            cert = x509.load_der_x509_certificate(der)
            cert.verify_directly_issued_by(self.tls.root.cert)
            now = pki.utcnow()
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return None
            cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        except Exception:  # any parse or signature failure just means "not authenticated"
            return None
        value = cns[0].value if cns else None
        return value if isinstance(value, str) else None
