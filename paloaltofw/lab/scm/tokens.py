"""OAuth 2.0 client credentials for the emulated SCM (sectigo.md §6.1), Keycloak style: the
token route, its JWT-looking tokens, and the check of a bearer token on the API routes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional
from urllib.parse import parse_qs

from ..server import Request, Response
from .wire import Ctx, KeycloakError, dumps

if TYPE_CHECKING:  # pragma: no cover
    from .service import ScmService

TOKEN_PATH = "/auth/realms/apiclients/protocol/openid-connect/token"


@dataclass
class _Token:
    client_id: str
    expires_at: float


class Tokens:
    """Issues access tokens and recognises them."""

    def __init__(self, scm: "ScmService") -> None:
        self.scm = scm
        self._lock = threading.Lock()
        self._tokens: Dict[str, _Token] = {}
        self._jwt_key = secrets.token_bytes(32)
        self._kid = secrets.token_urlsafe(12)

    def client(self, token: str) -> Optional[str]:
        """The client id a valid (unexpired) token was issued to; None otherwise."""
        with self._lock:
            entry = self._tokens.get(token)
            if entry is not None and entry.expires_at <= time.time():
                del self._tokens[token]
                entry = None
        return entry.client_id if entry is not None else None

    def expire_all(self) -> int:
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
        return count

    @staticmethod
    def error(exc: KeycloakError) -> Response:
        return Response(exc.status, dumps({"error": exc.error,
                                           "error_description": exc.description}),
                        "application/json", log={"error": exc.error, "auth": "none"})

    def route(self, ctx: Ctx) -> Response:
        request = ctx.request
        ctype = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        params: Dict[str, List[str]] = {}
        if request.body and ctype == "application/x-www-form-urlencoded":
            try:
                params = parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
            except (UnicodeDecodeError, ValueError):
                raise KeycloakError(400, "invalid_request", "Invalid form body") from None

        def one(name: str) -> str:
            values = params.get(name, [])
            if len(values) > 1:
                raise KeycloakError(400, "invalid_request", f"duplicated parameter: {name}")
            if not values or values[0] == "":
                raise KeycloakError(400, "invalid_request", f"Missing form parameter: {name}")
            return values[0]

        grant = one("grant_type")
        if grant != "client_credentials":
            raise KeycloakError(400, "unsupported_grant_type", "Unsupported grant_type")
        client_id = one("client_id")
        client_secret = one("client_secret")
        good_id = hmac.compare_digest(client_id.encode(), self.scm.accounts.client_id.encode())
        good_secret = hmac.compare_digest(client_secret.encode(),
                                          self.scm.accounts.client_secret.encode())
        if not (good_id and good_secret):
            raise KeycloakError(401, "invalid_client",
                                "Invalid client or Invalid client credentials")
        lifetime = int(self.scm.settings.token_lifetime)
        now = time.time()
        token = self._make_jwt(client_id, now, lifetime, request)
        with self._lock:
            for key in [k for k, v in self._tokens.items() if v.expires_at <= now]:
                del self._tokens[key]
            self._tokens[token] = _Token(client_id, now + lifetime)
        body = {"access_token": token, "expires_in": lifetime, "refresh_expires_in": 0,
                "token_type": "Bearer", "not-before-policy": 0, "scope": "profile email"}
        return Response(200, dumps(body), "application/json",
                        [("Cache-Control", "no-store"), ("Pragma", "no-cache")],
                        log={"auth": "client_credentials"})

    def _make_jwt(self, client_id: str, now: float, lifetime: int, request: Request) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

        header = {"alg": "HS256", "typ": "JWT", "kid": self._kid}
        claims = {"exp": int(now) + lifetime, "iat": int(now), "jti": str(uuid.uuid4()),
                  "iss": self.scm.base_url(request) + "/auth/realms/apiclients",
                  "aud": "account", "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
                  "typ": "Bearer", "azp": client_id, "scope": "profile email",
                  "clientId": client_id}
        signing_input = b64(dumps(header)) + "." + b64(dumps(claims))
        signature = hmac.new(self._jwt_key, signing_input.encode("ascii"), hashlib.sha256)
        return signing_input + "." + b64(signature.digest())
