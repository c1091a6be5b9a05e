"""Sectigo Certificate Manager clients: the Enrollment API (OAuth) and the classic REST API.

Both sit behind one small interface, `ScmClient`: `enroll`, `renew`, `collect`. The workflow
does not know which API it talks to.

* Enrollment API (sectigo.md §6): OAuth 2.0 client credentials. The token URL is discovered from
  the `authorization_uri` of the `WWW-Authenticate` header of a 401 (it differs per customer),
  unless configured; the token is cached, refreshed shortly before `expires_in` runs out, and
  refreshed once more when a request still gets a 401.
* Classic API (§5): `login`/`password`/`customerUri` headers, a TLS client certificate on the
  `/private` prefix, or a bearer token obtained as above.

"Still pending" is recognised only by the codes sectigo.md documents for it (§5.5, §6.4):
0 with "Being processed by Sectigo", -1400, -183, -103, -109. Anything else is an error.
"""

from __future__ import annotations

import abc
import base64
import dataclasses
import datetime as dt
import logging
import re
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import certs, http, rest
from .settings import CertificateProfile, OrderSettings, ScmCredentials, ScmSettings, Secret
from .errors import ConfigError, OrderRejected, ScmError

log = logging.getLogger(__name__)

PENDING_CODES = {-1400, -183, -103, -109}
REJECTED_CODES = {-110: "revoked", -1112: "declined", -5101: "unknown to SCM",
                  -124: "unknown to SCM", -159: "revoked"}
# Renewal refused outright (no order placed): fall back to a new enrollment.
RENEW_REFUSED_CODES = {-180, -5101, -124, -123, -105, -130}
TOKEN_SKEW = 30.0


class OAuth:
    """Client-credentials tokens: discovered token URL, cached token, refresh before expiry."""

    def __init__(self, client_id: str, secret: Secret, token_url: Optional[str],
                 session: requests.Session, timeout: float) -> None:
        self._lock = threading.Lock()  # firewalls are worked on in parallel threads
        self.client_id = client_id
        self._secret = secret
        self.token_url = token_url
        self._session = session
        self._timeout = timeout
        self._token: Optional[str] = None
        self._expires = 0.0

    def header(self) -> Dict[str, str]:
        """The Authorization header; fetches a token first when the URL is known and the
        cached token is missing or about to expire. With no URL yet, the request goes out
        without one and its 401 tells where tokens come from."""
        with self._lock:
            if self.token_url and (not self._token or time.monotonic() >= self._expires):
                self.fetch()
            return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def discover(self, response: requests.Response) -> None:
        """Take the token URL from a 401's `WWW-Authenticate: Bearer authorization_uri="…"`."""
        with self._lock:
            self._discover(response)

    def _discover(self, response: requests.Response) -> None:
        challenge = response.headers.get("WWW-Authenticate", "")
        found = re.search(r'authorization_uri="([^"]+)"', challenge)
        if found and found.group(1).startswith("https://"):
            if self.token_url != found.group(1):
                log.debug("SCM token URL discovered: %s", found.group(1))
            self.token_url = found.group(1)
        elif not self.token_url:
            raise ScmError("SCM answered HTTP 401 without naming its token endpoint "
                           "(WWW-Authenticate: Bearer authorization_uri=...), so no token could "
                           "be obtained and nothing was done; if SCM keeps answering so, set "
                           "token_url in the credentials block", 401)

    def fetch(self) -> None:
        assert self.token_url
        try:
            response = self._session.post(self.token_url, data={
                "client_id": self.client_id, "client_secret": self._secret.reveal(),
                "grant_type": "client_credentials"}, timeout=self._timeout,
                headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise ScmError(f"SCM token request failed: {http.describe(exc, self.token_url)}") \
                from None
        if response.status_code != 200:
            detail = _json(response).get("error_description") or _json(response).get("error")
            raise ScmError(f"SCM refused the client credentials (HTTP {response.status_code}"
                           f"{': ' + str(detail) if detail else ''}); check client_id and "
                           "client_secret", response.status_code)
        body = _json(response)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token:
            raise ScmError("SCM token response has no access_token")
        seconds = float(lifetime) if isinstance(lifetime, (int, float)) and lifetime > 0 \
            else 300.0
        self._token = token
        # Renew TOKEN_SKEW early, or a quarter of the lifetime early for very short tokens.
        self._expires = time.monotonic() + seconds - min(TOKEN_SKEW, seconds / 4)

    def invalidate(self, token: Optional[str] = None) -> None:
        """Forget the token (only if it is still `token`: another thread may have renewed
        it meanwhile)."""
        with self._lock:
            if token is None or self._token == token:
                self._token = None


class ScmClient(abc.ABC):
    """The interface the lifecycle uses. Ids are strings; chains are the raw bytes SCM sent."""

    api = ""

    def __init__(self, settings: ScmSettings, pool_size: int = 4) -> None:
        self.settings = settings
        self.credentials: ScmCredentials = settings.credentials
        # One connection pool shared by the firewall threads: connections are reused.
        self.safe = rest.Session(settings.tls, http.SAFE, pool_size)
        self.billable = rest.Session(settings.tls, http.BILLABLE, pool_size)
        self.oauth: Optional[OAuth] = None
        if self.credentials.client_id and self.credentials.client_secret:
            self.oauth = OAuth(self.credentials.client_id, self.credentials.client_secret,
                               self.credentials.token_url, self.safe, settings.timeout)

    @abc.abstractmethod
    def enroll(self, csr_pem: str, profile: CertificateProfile) -> str:
        """Place a new order; returns its id."""

    @abc.abstractmethod
    def renew(self, cert_id: str, csr_pem: str, profile: CertificateProfile) -> str:
        """Renew certificate `cert_id` with a new CSR; returns the new order's id."""

    @abc.abstractmethod
    def collect(self, order_id: str) -> Optional[bytes]:
        """The issued chain, or None while SCM is still processing the order."""

    def preflight(self, profile: CertificateProfile) -> None:
        """Raise ConfigError when SCM would refuse an order for `profile`, before the firewall
        makes a key for it. The Enrollment API cannot tell (it has no profile listing)."""

    # -- transport ------------------------------------------------------------------------

    def _headers(self) -> Dict[str, str]:
        return {"Accept": "application/json"}

    def request(self, method: str, url: str, what: str, billable: bool = False,
                **kwargs: Any) -> requests.Response:
        """Send with auth; on 401, (re)discover and fetch a token and try once more."""
        session = self.billable if billable else self.safe
        for attempt in (1, 2):
            headers = self._headers()
            if self.oauth:
                try:
                    headers.update(self.oauth.header())
                except ScmError as exc:
                    exc.sent = False  # no token, so the request itself never went out
                    raise
            used = headers.get("Authorization", "")[len("Bearer "):] or None
            try:
                response = session.request(method, url, headers=headers,
                                           timeout=self.settings.timeout, **kwargs)
            except requests.RequestException as exc:
                raise ScmError(f"SCM {what}: {http.describe(exc, _origin(url))}",
                               sent=False if rest.never_sent(exc) else None) from None
            if response.status_code == 401 and self.oauth and attempt == 1:
                # No token yet, or it expired early: learn the token URL, get a fresh one.
                self.oauth.invalidate(used)
                try:
                    self.oauth.discover(response)
                except ScmError as exc:
                    exc.sent = True  # SCM answered: the 401 proves nothing was done
                    raise
                continue
            if response.status_code == 401 and self.oauth and used:
                # A token SCM issued moments ago was refused: not a credentials problem.
                response.fresh_token_refused = True  # type: ignore[attr-defined]
            return response
        raise AssertionError("unreachable: the second attempt always returns")

    def error(self, what: str, response: requests.Response) -> ScmError:
        body = _json(response)
        code, description = body.get("code"), body.get("description")
        if response.status_code == 401:
            if getattr(response, "fresh_token_refused", False):
                detail = description or "no detail"
                return ScmError(f"SCM {what}: refused with HTTP 401 ({detail}) although SCM "
                                "had just issued a token for client_id "
                                f"{self.credentials.client_id}; the credentials work, but SCM "
                                "does not let this account do this: check the account's "
                                "permissions and certificate profiles in SCM. Nothing was "
                                "done", 401, code)
            return ScmError(f"SCM {what}: authentication failed ({description or 'HTTP 401'});"
                            f" check the credentials block '{self.credentials.label}' in "
                            f"{self.credentials.path}. Nothing was done", 401, code)
        text = f"{code} {description}" if code is not None else \
            f"HTTP {response.status_code}"
        cls = OrderRejected if code in REJECTED_CODES else ScmError
        return cls(f"SCM {what}: {text} (HTTP {response.status_code})", response.status_code,
                   code if isinstance(code, int) else None)

    def order_id(self, response: requests.Response, what: str, key: str) -> str:
        """The id of the order SCM just accepted, from `key` of its JSON answer."""
        if not 200 <= response.status_code < 300:
            raise self.error(what, response)
        value = _json(response).get(key)
        if not isinstance(value, (int, str)) or not str(value).strip():
            # Classic renewById is documented as 200 {"sslId"}, but a client's tests expect
            # 204 (sectigo.md §5.7, §8.12): an order may exist whose id we do not know.
            raise ScmError(f"SCM {what}: accepted (HTTP {response.status_code}) but the answer "
                           f"has no {key}, so the order cannot be followed",
                           response.status_code)
        return str(value)

    def download(self, url: str, what: str, **kwargs: Any) -> Optional[bytes]:
        """The issued certificate and chain, or None while SCM is still processing."""
        response = self.request("GET", url, what, **kwargs)
        if response.status_code == 200:
            return response.content
        if self.pending(response):
            return None
        raise self.error(what, response)

    def pending(self, response: requests.Response) -> bool:
        """Exactly the documented "not issued yet" answers (sectigo.md §5.5, §6.4)."""
        body = _json(response)
        code = body.get("code")
        if code in PENDING_CODES:
            return True
        description = str(body.get("description") or "")
        return code == 0 and "being processed" in description.lower()


class EnrollmentClient(ScmClient):
    """The Enrollment API with OAuth (sectigo.md §6), Sectigo connector's default."""

    api = "enrollment"

    def __init__(self, settings: ScmSettings, pool_size: int = 4) -> None:
        super().__init__(settings, pool_size)
        url = self.credentials.url.rstrip("/")
        # The SDK's scm_url may be the host or the host + /api/v1 (sectigo.md §6.2).
        self.base = url if url.endswith("/api/v1") else f"{url}/api/v1"

    def _body(self, csr_pem: str, profile: CertificateProfile,
              renewal: bool = False) -> Dict[str, Any]:
        order = profile.order
        body: Dict[str, Any] = {"csr": csr_base64(csr_pem), "profileId": order.profile_id,
                                "subjAltNames": list(profile.names)}
        if not renewal:
            # The enroll reference names the profile `productId`, renew `profileId`
            # (sectigo.md §6.3): send both names on enroll.
            body["productId"] = order.profile_id
        body.update(order_options(order))
        if order.custom_fields:
            body["customFields"] = dict(order.custom_fields)
        return body

    def enroll(self, csr_pem: str, profile: CertificateProfile) -> str:
        response = self.request("POST", f"{self.base}/certificates", "enroll", billable=True,
                                json=self._body(csr_pem, profile))
        return self.order_id(response, "enroll", "certId")

    def renew(self, cert_id: str, csr_pem: str, profile: CertificateProfile) -> str:
        response = self.request("POST", f"{self.base}/certificates/{cert_id}/renew",
                                f"renew of {cert_id}", billable=True,
                                json=self._body(csr_pem, profile, renewal=True))
        return self.order_id(response, f"renew of {cert_id}", "certId")

    def collect(self, order_id: str) -> Optional[bytes]:
        return self.download(f"{self.base}/certificates/{order_id}", f"download of {order_id}")

class ClassicClient(ScmClient):
    """The classic REST API under /api/ssl/v1 (sectigo.md §5)."""

    api = "classic"
    COLLECT_FORMAT = "x509"  # certificate with its chain, PEM

    def __init__(self, settings: ScmSettings, pool_size: int = 4) -> None:
        super().__init__(settings, pool_size)
        creds = self.credentials
        url = creds.url.rstrip("/")
        if not url.endswith("/api"):
            url = f"{url}/api"
        if creds.client_cert and "/private/" not in f"{url}/":
            # Certificate authentication only works under the /private prefix (§5.1).
            url = url[:-len("/api")] + "/private/api"
        self.base = f"{url}/ssl/v1"
        self._listings: Dict[str, List[Any]] = {}
        self._listings_lock = threading.Lock()
        if creds.client_cert:
            for session in (self.safe, self.billable):
                session.cert = (creds.client_cert, creds.client_key)  # type: ignore[assignment]

    def _headers(self) -> Dict[str, str]:
        headers = {"Accept": "application/json"}
        creds = self.credentials
        if creds.login:
            headers["login"] = creds.login
            headers["customerUri"] = creds.customer_uri or ""
            if creds.password and not creds.client_cert:
                headers["password"] = creds.password.reveal()
        return headers

    def enroll(self, csr_pem: str, profile: CertificateProfile) -> str:
        order = profile.order
        body: Dict[str, Any] = {"orgId": order.org_id, "csr": csr_pem.strip(),
                                "certType": order.profile_id,
                                "subjAltNames": ",".join(profile.names)}
        body.update(order_options(order))
        if order.custom_fields:
            body["customFields"] = [{"name": k, "value": v} for k, v in order.custom_fields]
        response = self.request("POST", f"{self.base}/enroll", "enroll", billable=True,
                                json=body)
        return self.order_id(response, "enroll", "sslId")

    def renew(self, cert_id: str, csr_pem: str, profile: CertificateProfile) -> str:
        # Always a JSON object: an empty or non-object body is -1002 (python-cert_manager #220).
        response = self.request("POST", f"{self.base}/renewById/{cert_id}",
                                f"renew of {cert_id}", billable=True,
                                json={"csr": csr_pem.strip()})
        return self.order_id(response, f"renew of {cert_id}", "sslId")

    def collect(self, order_id: str) -> Optional[bytes]:
        return self.download(f"{self.base}/collect/{order_id}", f"collect of {order_id}",
                             params={"format": self.COLLECT_FORMAT})

    # -- what SCM would refuse, asked once per run (sectigo.md §5.3) ---------------------

    def preflight(self, profile: CertificateProfile) -> None:
        """The certificate profile exists for the organization, has the validation level,
        key type and term the profile asks for, and every mandatory custom field is given."""
        order = profile.order
        try:
            types = self._listing(f"types:{order.org_id}", f"{self.base}/types",
                                  "certificate profiles",
                                  {"organizationId": order.org_id} if order.org_id else None)
            fields = [f for f in self._listing("customFields", f"{self.base}/customFields",
                                               "custom fields") if isinstance(f, dict)]
        except ScmError as exc:
            if exc.status not in (401, 403, 404):
                raise
            # An account allowed to order but not to list: the order itself will tell.
            with self._listings_lock:
                if not self._listings.get("skipped"):
                    self._listings["skipped"] = [True]
                    log.warning("SCM: cannot check certificate profiles before ordering (%s); "
                                "ordering without the check", exc)
            return
        found = next((t for t in types if isinstance(t, dict) and
                      str(t.get("id")) == str(order.profile_id)), None)
        if found is None:
            known = ", ".join(f"{t.get('id')} ({t.get('name')})" for t in types
                              if isinstance(t, dict))
            raise ConfigError(f"SCM certificate profile {order.profile_id} not found for "
                              f"organization {order.org_id} (SCM offers: {known or 'none'})",
                              profile.path, "scm.profile_id")
        name = str(found.get("name") or order.profile_id)
        level = scm_validation_level(f"{found.get('name', '')} {found.get('description', '')}")
        if level and level != profile.validation:
            raise ConfigError(f"SCM certificate profile {order.profile_id} ('{name}') is {level}"
                              f", but validation is {profile.validation}; change validation "
                              "or scm.profile_id", profile.path, "validation")
        allowed = key_types(found.get("keyTypes"))
        if allowed and profile.key.label not in allowed:
            raise ConfigError(f"SCM certificate profile '{name}' does not allow "
                              f"{profile.key.label} keys (it allows "
                              f"{format_key_types(found.get('keyTypes'))})", profile.path, "key")
        terms = [t for t in found.get("terms") or [] if isinstance(t, int)]
        if order.term is not None and terms and order.term not in terms:
            raise ConfigError(f"SCM certificate profile '{name}' allows terms of "
                              f"{', '.join(map(str, terms))} days, not {order.term}",
                              profile.path, "scm.term")
        given = {k for k, _ in order.custom_fields}
        missing = [str(f.get("name")) for f in fields if f.get("mandatory") and
                   f.get("name") not in given]
        if missing:
            raise ConfigError(f"SCM requires the custom field{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(repr(m) for m in missing)}; add "
                              f"{'them' if len(missing) > 1 else 'it'} under "
                              "scm.custom_fields", profile.path, "scm.custom_fields")
        unknown = sorted(given - {str(f.get("name")) for f in fields})
        if fields and unknown:
            raise ConfigError(f"SCM has no custom field {unknown[0]!r} (it has: "
                              f"{', '.join(str(f.get('name')) for f in fields)})",
                              profile.path, "scm.custom_fields")

    def _listing(self, key: str, url: str, what: str,
                 params: Optional[Dict[str, Any]] = None) -> List[Any]:
        """A JSON list from SCM, fetched once per run (firewall threads share the client)."""
        with self._listings_lock:
            if key not in self._listings:
                response = self.request("GET", url, what, params=params)
                if response.status_code != 200:
                    raise self.error(what, response)
                try:
                    data = response.json()
                except ValueError:
                    raise ScmError(f"SCM {what}: the answer is not JSON") from None
                self._listings[key] = data if isinstance(data, list) else []
            return self._listings[key]

    def find_orders(self, common_name: str, since: dt.date, exclude: Set[str],
                    csr_key: Optional[bytes]) -> List[str]:
        """Orders for `common_name` requested on or after `since` (SCM dates are days) that
        are not in `exclude` and, once issued, carry `csr_key`: how an interrupted run's
        order is found again. Pages through the list (size 200, sectigo.md §5.6)."""
        found: List[str] = []
        position = 0
        while True:
            response = self.request("GET", self.base, "order search", params={
                "commonName": common_name, "size": 200, "position": position})
            if response.status_code != 200:
                raise self.error("order search", response)
            try:
                page = response.json()
            except ValueError:
                raise ScmError("SCM order search: the answer is not JSON") from None
            if not isinstance(page, list):
                raise ScmError("SCM order search: the answer is not a list")
            for item in page:
                if not isinstance(item, dict):
                    continue
                order_id = str(item.get("sslId") or item.get("id") or "")
                if not order_id or order_id in exclude:
                    continue
                details = self.request("GET", f"{self.base}/{order_id}", "order details",
                                       params={"dateFormat": "ISO"})
                if details.status_code != 200:
                    raise self.error(f"details of {order_id}", details)
                info = _json(details)
                try:
                    requested: Optional[dt.date] = dt.date.fromisoformat(
                        str(info.get("requested"))[:10])
                except ValueError:
                    requested = None  # cannot tell: keep it as a candidate, as _carries does
                if requested is not None and requested < since:
                    continue
                if csr_key and info.get("status") == "Issued" and \
                        not self._carries(order_id, csr_key):
                    continue
                found.append(order_id)
            if len(page) < 200:
                return found
            position += 200

    def _carries(self, order_id: str, csr_key: bytes) -> bool:
        response = self.request("GET", f"{self.base}/collect/{order_id}",
                                f"collect of {order_id}", params={"format": "x509CO"})
        if response.status_code != 200:
            return True  # cannot tell: keep it as a candidate
        try:
            leaf = x509.load_pem_x509_certificates(response.content)[0]
        except (ValueError, IndexError):
            return True
        return certs.spki(leaf.public_key()) == csr_key


def scm_validation_level(text: str) -> Optional[str]:
    """DV, OV or EV when an SCM profile's name or description says so unambiguously
    ('Sectigo OV SSL', 'Extended Validation ...'); None when it does not tell."""
    found = set(re.findall(r"\b(DV|OV|EV)\b", text))
    lowered = text.lower().replace("-", " ")
    for words, level in (("domain valid", "DV"), ("organization valid", "OV"),
                         ("organisation valid", "OV"), ("extended valid", "EV")):
        if words in lowered:
            found.add(level)
    return found.pop() if len(found) == 1 else None


def key_types(listing: Any) -> Set[str]:
    """The key types an SCM profile's `keyTypes` ({"RSA": ["2048"], "EC": ["P-256"]}) allows,
    as profiles name them (RSA-2048, ECDSA-P256)."""
    allowed: Set[str] = set()
    if not isinstance(listing, dict):
        return allowed
    for family, sizes in listing.items():
        if not isinstance(sizes, list):
            continue
        for size in sizes:
            # "2048"; "P-256", "secp384r1", "prime256v1": the bits are what identify it.
            bits = re.search(r"(\d{3,4})", str(size))
            if bits is None:
                continue
            if str(family).upper() == "RSA":
                allowed.add(f"RSA-{bits.group(1)}")
            elif str(family).upper() in ("EC", "ECDSA", "ECC"):
                allowed.add(f"ECDSA-P{bits.group(1)}")
    return allowed


def format_key_types(listing: Any) -> str:
    if not isinstance(listing, dict):
        return "none listed"
    return "; ".join(f"{family} {', '.join(map(str, sizes))}" for family, sizes in listing.items()
                     if isinstance(sizes, list)) or "none listed"


def make_client(settings: ScmSettings, pool_size: int = 4) -> ScmClient:
    if settings.credentials.api == "classic":
        return ClassicClient(settings, pool_size)
    return EnrollmentClient(settings, pool_size)


def make_lookup(settings: ScmSettings) -> Optional["ClassicClient"]:
    """The client that can search orders, if the configuration has classic credentials."""
    if settings.lookup is None:
        return None
    return ClassicClient(dataclasses.replace(settings, credentials=settings.lookup))


def order_options(order: OrderSettings) -> Dict[str, Any]:
    """The optional order fields both APIs name alike (sectigo.md §5.4, §6.3)."""
    options: Dict[str, Any] = {}
    if order.term:
        options["term"] = order.term
    if order.comments:
        options["comments"] = order.comments
    if order.external_requester:
        options["externalRequester"] = order.external_requester
    return options


def csr_base64(csr_pem: str) -> str:
    """The Enrollment API's CSR form: single-line Base64 of the DER, no BEGIN/END lines."""
    csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _json(response: requests.Response) -> Dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _origin(url: str) -> str:
    match = re.match(r"https?://[^/]+", url)
    return match.group(0) if match else url


__all__: Tuple[str, ...] = ("ScmClient", "EnrollmentClient", "ClassicClient", "make_client",
                            "make_lookup")
