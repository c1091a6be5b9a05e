"""The emulated Sectigo Certificate Manager (SCM) of the lab.

Like Let's Encrypt's Pebble, this is a strict, deliberately varied implementation of the documented
behaviour (`reference/sectigo.md` §5 classic REST API, §6 OAuth + Enrollment API), so that a
client that works here works against the real service, and a client that leans on an accident of
one implementation fails here first. Everything is kept in memory; keys and certificates are real
(issued by `pki.ScmHierarchy`). Served over HTTPS by `server.Endpoint`.

Routes (prefix = the service's public URL)
-------------------------------------------

OAuth (Keycloak style, §6.1)
  POST /auth/realms/apiclients/protocol/openid-connect/token
       form body client_id, client_secret, grant_type=client_credentials (all required, each once,
       in an `application/x-www-form-urlencoded` body; credentials in the query string or in HTTP
       Basic are not read) -> 200 {access_token (a JWT-looking string), expires_in
       (= settings.token_lifetime), refresh_expires_in: 0, token_type: "Bearer",
       not-before-policy: 0, scope: "profile email"}.
       Errors use Keycloak's shape {"error", "error_description"}: 400 invalid_request (missing or
       repeated parameter), 400 unsupported_grant_type, 401 invalid_client (unknown client or wrong
       secret), 405 invalid_request (not POST).

Enrollment API (base a client configures: <public_url>/api/v1; Bearer token only, §6)
  POST /api/v1/certificates                    enroll -> 200 {"certId": N}               billable
  GET  /api/v1/certificates/{certId}[?format=] download -> 200 PEM leaf, intermediates, root
  POST /api/v1/certificates/{certId}/renew     renew -> 200 {"certId": new}              billable
  POST /api/v1/certificates/{certId}/revoke    {"reasonCode"?, "reason"} -> 204

Classic REST API (base <public_url>/api; `v2` is accepted wherever `v1` is, as in the OpenAPI)
  GET  /api/ssl/v1/types[?organizationId=]     certificate profiles
  GET  /api/ssl/v1/customFields                [{"id", "name", "mandatory"}]
  GET  /api/organization/v1                    the organization with its department
  POST /api/ssl/v1/enroll                      -> 200 {"sslId", "renewId"}               billable
  GET  /api/ssl/v1/collect/{sslId}[?format=]   and the legacy /collect/{sslId}/{format}
  GET  /api/ssl/v1/{sslId}[?dateFormat=]       details (§5.6)
  GET  /api/ssl/v1?commonName=&status=&...     list, with X-Total-Count; HEAD: the header only
  POST /api/ssl/v1/renewById/{sslId}           {"csr"?, "dcvMode"?, "dcvEmail"?}
                                               -> 200 {"sslId": new}                    billable
  POST /api/ssl/v1/renew/{renewId}             {"csr"?} -> 204 (no id returned)          billable
  POST /api/ssl/v1/revoke/{sslId}              {"reasonCode"?, "reason"} -> 204
  POST /api/ssl/v1/replace/{sslId}             {"csr", "reason", "commonName"?,
                                                "subjectAlternativeNames"? (array)}
                                               -> 204                               not billable
  The same classic routes under /private/api/... take a TLS client certificate instead.

Authentication
  * Enrollment API: `Authorization: Bearer <token>` from the token route, nothing else.
  * Classic /api/...: `Authorization: Bearer <token>` (if that header is present it alone
    decides), otherwise the headers `login` + `password` + `customerUri`.
  * Classic /private/api/...: only a TLS client certificate (verified by the TLS context and
    again here against the lab TLS root) whose CN equals the `login` header, plus `login` and
    `customerUri`. Password and bearer are not accepted there, and a client certificate alone
    is not accepted under /api. The "developer login" (`email` header) is not emulated.
  * Failure: 401 {"code": -16, "description": "Unknown user"} with
    `WWW-Authenticate: Bearer authorization_uri="<public_url>/auth/.../token"`, plus
    `, error="invalid_token"` when a bearer token was presented but is unknown or expired.

Errors
  Every error is JSON {"code": <negative int, or 0>, "description": <documented text>} plus, where
  it helps, "details" (the Admin OpenAPI's ErrorResponse). Never HTTP 500; an unexpected fault
  is 503 with -2. Codes used (texts from SCM-REST-25.5 / EvotecIT ApiErrorCode.cs):

  HTTP 400  -1002 Cannot parse message body: empty body, not JSON, not a JSON *object*, or a
                  field of the wrong JSON type (strict: "1001" is not a number, 90.0 is not an int)
  HTTP 415  -1002 a JSON route called without `Content-Type: application/json`
  HTTP 400  -7    {field} is required but missing
            -9    The CSR is not valid Base-64 data!   (Enrollment API: any PEM armour, newline or
                  other non-Base64 character; classic: characters outside the documented set)
            -10   Error while decoding CSR.            (Base64 fine, not a DER PKCS#10)
            -11   The CSR uses an unsupported algorithm! (neither RSA nor NIST-curve EC)
            -13   The CSR uses an unsupported key size!  (size/curve not in the profile's keyTypes)
            -141  The public key size in the CSR should be 2048 bits minimum.
            -138  Invalid CSR. (bad self-signature, or no CN in the subject)
            -36   The validity period (term) is invalid for this certificate profile.
            -39   The certificate profile id is invalid!  (classic certType)
            -111  No certificate profile found by id {0}  (Enrollment API profileId)
            -639  Supplied orgid invalid..
            -62   Missing mandatory custom field! / Invalid IP address {0} (private or reserved IP)
            -135  Custom field cannot be found.
            -732  Invalid domain name.   -306 Domain name {0} exceeds {1} characters limit.
            -737  The domain(s): {0} are not validated! ... (DCV, see settings.validated_domains)
            -1601 Field '{0}' has invalid value. (length limits, enums, reasonCode, paging, dates)
            -124  Wrong SSL certificate id {0}.  (an id that is not a positive 32-bit decimal)
            -126  Unknown SSL certificate file format requested: {0}  (classic collect)
            -1450 Unsupported certificate format specified: {0}        (Enrollment download)
            -110  Certificate has been revoked and cannot be downloaded.
            -1112 Certificate can't be approved cause it has state = Declined
            -102  Only issued certificates could be revoked.   -159 Your certificate already revoked
            -105  Error was occurred while renewing cert. Status = {0}  (classic renew, not issued)
            -130  SSL state is not 'ISSUED': {0}    (Enrollment renew, classic replace)
            -123  SSL Certificate to renew is invalid (null)  (unknown renewId)
  HTTP 404  -5101 Certificate not found. {0}  (unknown id in either API)
            -1    unknown route;  HTTP 405 -1: known route, wrong method (with `Allow`)
  Pending (an order not yet issued; see "Issuance"):
            classic collect, settings.pending_style:
              "code0"  HTTP 400 {"code": 0, "description": "Being processed by Sectigo"}
              "-1400"  HTTP 404 {"code": -1400,
                                 "description": "The request is being processed by Sectigo."}
              "-183"   HTTP 400 {"code": -183, "description": "Certificate is not collectable."}
              "rotate" (default) cycles code0, -1400, -183 over an order's successive polls
            Enrollment download: HTTP 404 with -103 and -109 alternately -- the same HTTP status
            as an unknown id (-5101): clients must read the code.
  Injected faults (server.FaultRule): the given status, {"code": -2, ...}, and Retry-After.

Issuance
  An order needs `settings.pending_polls` (read when the order is created) "pending" answers to
  collect/download before it is issued; with 0 the first collect issues it. Only collect and
  download make time pass (details and list do not); the `issue_now` action skips the wait.
  The leaf is signed by the issuer for (the profile's validation, the CSR key's family): DV
  subject CN only; OV and EV CN + O/L/ST/C from the SCM *organization record* (the CSR's subject
  is ignored, as the real CA uses validated data); EV adds businessCategory,
  jurisdictionCountryName and serialNumber. Validity as Sectigo does it: 00:00:00 UTC of the
  issue day to that + term days - 1 second. The leaf's key is the CSR's key. The names are the
  CSR's CN plus the request's subjAltNames: **the CSR's own SAN extension is ignored**, which is
  why a client must send subjAltNames.

Choices where sectigo.md (§8) leaves things open
  * Chain order per collect format (§8.13). Certificates: L = leaf, I = intermediates from the
    issuer upwards (EV has two), R = root.
      x509     R, I (top down), L   -- root first, like the one documented example
      x509R    L, I, R              pem   L, I, R (same content as x509R)
      x509CO   L                    pemco L
      x509IO   R, I (top down)      x509IOR I (issuer first), R
      pemia    L, I (no root: "issuer after")
      base64   PKCS#7 (PEM, "BEGIN PKCS7") of R, I, L     bin  the same PKCS#7 in DER
    No format -> base64 on classic collect (documented default); the Enrollment download
    defaults to L, I, R and accepts the same names (case-sensitive).
  * -1400 is answered with HTTP 404 (§8.11 says ">400" was observed), code 0 and -183 with 400.
  * The EV profile's keyTypes offer no P-521 (public EV CAs under Mozilla's root policy allow
    P-256 and P-384), so -13 is met in the lab; an EV order with a wildcard name is -732 (the
    EV Guidelines forbid wildcards). DV and OV profiles allow all six key types.
  * Enrollment API enroll: `profileId` is required because the lab account has three profiles;
    `productId` (the name the enroll docs use) is an alias; both present and different -> -1601.
    `term` absent -> the profile's largest term (classic enroll: same). Classic enroll requires
    `orgId` and `certType`; orgId may be the organization or its department.
  * Renew keeps the original CN, names, profile and term; an Enrollment-API renew body may
    override profileId, subjAltNames, term, comments, externalRequester and customFields. With a
    `csr` the new key is used (its CN is ignored), otherwise the old key. Renewing twice is
    allowed and billed twice: not ordering twice is the client's job, and the order log shows
    it. The renewed order stays Issued with renewed=true. Only Issued/Expired/Revoked orders can
    be renewed; Expired ones can still be collected, Revoked ones cannot (-110).
  * Every POST body must be a JSON object ({} where everything is optional) sent as
    `application/json`; this is what makes cert_manager's `renew()` (body `""`) fail with -1002,
    as on the real server (pcm issue #220). Unknown fields are ignored; known ones are typed
    strictly. `numberServers`/`serverType` (sent by cert_manager) are ignored; `dcvMode` must be
    one of the documented values; DCV itself is decided by settings.validated_domains.
  * Declined orders (settings.decline_next) look pending like any other order; the decline
    shows at the collect that would have issued them (or at `issue_now`).
  * Replace re-issues under the same id (status back to Requested, pending polls again), only
    for Issued orders; SANs there are an array (a comma string is -1002: the mirror of enroll).
  * List: `size` defaults to 10 and is capped at 200; sorted by id; filters commonName (exact,
    case-insensitive), subjectAlternativeName, status, sslTypeId, orgId, serialNumber.
  * Details dates: MM/dd/yyyy; dateFormat ISO (yyyy-MM-dd), US (MM/dd/yyyy), EU (dd.MM.yyyy),
    UK (dd/MM/yyyy), JP (yyyy/MM/dd), each with _HMS (" HH:mm:ss"), or a pattern of yyyy MM dd
    HH mm ss and separators; anything else -1601.
  * Route resolution (404/405) comes before authentication (401), which comes before validation.
    HEAD is served on the list route only. Both APIs share one id space, so an Enrollment-API
    certId can be seen and collected through the classic API (as on the real SCM).
  * Ids start at a random 7-digit number and grow by random steps; renewIds are 20 random
    URL-safe characters: clients must not guess ids.

Lab controls (server.Endpoint's /_lab/ routes, which need the X-Lab-Control token)
  POST /_lab/settings {name: value}: any ScmSettings field; bad values are refused (400).
  POST /_lab/action/<name>: expire_tokens (every issued token becomes invalid),
  revoke {"id", "reasonCode"?} (as an administrator in the SCM UI), issue_now {"id"} (ends the
  pending wait now; a to-be-declined order is declined), decline {"id"}, expire {"id"} (status
  Expired), orders (a summary of every order).

Order log: one JSON line per *billable* operation (enroll in either API, renewById,
renew/{renewId}, Enrollment renew) to the `order_log` path and `ScmService.order_log`. No log this
module writes contains a password, secret, token or CSR.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import re
import secrets
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Pattern, Tuple
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from . import pki
from .server import Request, Response, Service

log = logging.getLogger("lab.scm")

TOKEN_PATH = "/auth/realms/apiclients/protocol/openid-connect/token"

PENDING_STYLES = ("rotate", "code0", "-1400", "-183")
BAD_ISSUANCE_MODES = ("wrong_key", "missing_names", "broken_chain", "expired", "not_yet_valid")
CLASSIC_FORMATS = ("x509", "x509R", "x509CO", "x509IO", "x509IOR", "pem", "pemco", "pemia",
                   "base64", "bin")
DCV_MODES = ("EMAIL", "CNAME", "HTTP", "HTTPS", "AUTO", "TXT")
REVOKE_REASONS = (0, 1, 3, 4, 5)
INT32_MAX = 2 ** 31 - 1
MAX_CSR = 32767
MAX_NAMES = 250
MAX_REASON = 512
MAX_COMMENTS = 1024
MAX_REQUESTER = 512
JSON_CONTENT = "application/json;charset=UTF-8"
DOWNLOAD_CONTENT = "application/octet-stream;charset=UTF-8"

# The documented texts (SCM-REST-25.5 "Errors", as copied in EvotecIT's ApiErrorCode.cs), keyed
# by code; `{0}`/`{1}` are filled per error.
MESSAGES: Dict[int, str] = {
    0: "Being processed by Sectigo",
    -1: "Unknown error.",
    -2: "Internal error. Please contact Support for details.",
    -7: "{0} is required but missing.",
    -9: "The CSR is not valid Base-64 data!",
    -10: "Error while decoding CSR.",
    -11: "The CSR uses an unsupported algorithm!",
    -13: "The CSR uses an unsupported key size!",
    -16: "Unknown user",
    -36: "The validity period (term) is invalid for this certificate profile.",
    -39: "The certificate profile id is invalid!",
    -62: "Missing mandatory custom field!",
    -102: "Only issued certificates could be revoked.",
    -103: "Certificate has not been collected yet.",
    -105: "Error was occurred while renewing cert. Status = {0}",
    -109: "Certificate is not available now, please try again later.",
    -110: "Certificate has been revoked and cannot be downloaded.",
    -111: "No certificate profile found by id {0}",
    -123: "SSL Certificate to renew is invalid (null)",
    -124: "Wrong SSL certificate id {0}.",
    -126: "Unknown SSL certificate file format requested: {0}",
    -130: "SSL state is not 'ISSUED': {0}",
    -135: "Custom field cannot be found.",
    -138: "Invalid CSR.",
    -141: "The public key size in the CSR should be {0} bits minimum.",
    -159: "Your certificate already revoked",
    -170: "Based on the customer configuration, ECC CSRs are not allowed.",
    -183: "Certificate is not collectable.",
    -306: "Domain name {0} exceeds {1} characters limit.",
    -639: "Supplied orgid invalid..",
    -732: "Invalid domain name.",
    -737: "The domain(s): {0} are not validated! Please perform the DCV process for them "
          "before proceed.",
    -1002: "Cannot parse message body",
    -1112: "Certificate can't be approved cause it has state = {0}",
    -1400: "The request is being processed by Sectigo.",
    -1450: "Unsupported certificate format specified: {0}",
    -1601: "Field '{0}' has invalid value.",
    -5101: "Certificate not found. {0}",
}


class ApiError(Exception):
    """An SCM error answer: HTTP status plus the JSON {code, description[, details]}."""

    def __init__(self, status: int, code: int, *args: Any, details: Optional[str] = None,
                 headers: Optional[List[Tuple[str, str]]] = None,
                 description: Optional[str] = None) -> None:
        text = description if description is not None else MESSAGES[code].format(*args)
        super().__init__(f"{status} {code} {text}")
        self.status = status
        self.code = code
        self.description = text
        self.details = details
        self.headers = headers or []

    def response(self) -> Response:
        body: Dict[str, Any] = {"code": self.code, "description": self.description}
        if self.details:
            body["details"] = self.details
        return Response(self.status, _dumps(body), JSON_CONTENT, list(self.headers),
                        log={"code": self.code})


class KeycloakError(Exception):
    """An error of the token route, in Keycloak's shape."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.description = description


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def _json(status: int, data: Any, headers: Optional[List[Tuple[str, str]]] = None) -> Response:
    return Response(status, _dumps(data), JSON_CONTENT, headers or [])


# --- the account: credentials, organization, profiles ------------------------------------------

@dataclass
class CertProfile:
    """An SSL certificate profile ("certificate type" in /types)."""

    id: int
    name: str
    validation: str  # "DV" | "OV" | "EV"
    description: str = ""
    terms: List[int] = field(default_factory=lambda: [30, 90, 180, 200])
    key_types: Dict[str, List[str]] = field(default_factory=lambda: {
        "RSA": ["2048", "3072", "4096"], "EC": ["P-256", "P-384", "P-521"]})
    use_secondary_org_name: bool = False

    def as_json(self) -> Dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description,
                "terms": list(self.terms),
                "keyTypes": {k: list(v) for k, v in self.key_types.items()},
                "useSecondaryOrgName": self.use_secondary_org_name}


@dataclass
class Organization:
    """The SCM organization record: what OV/EV subjects are made of (validated data)."""

    id: int = 1001
    name: str = "Lab Example Networks, Inc."
    department_id: int = 1002
    department_name: str = "Network Operations"
    locality: str = "Roseland"
    state: str = "New Jersey"
    country: str = "US"
    business_category: str = "Private Organization"
    jurisdiction_country: str = "US"
    registration_number: str = "5157550"


def _default_profiles() -> List[CertProfile]:
    # The EV profile offers no P-521 key, as public CAs under Mozilla's root store policy
    # (P-256 and P-384 only) do not; a client must handle the -13 refusal of a key type.
    return [CertProfile(11001, "Lab DV SSL (SHA-2)", "DV", "Domain-validated TLS server"),
            CertProfile(11002, "Lab OV SSL (SHA-2)", "OV", "Organization-validated TLS server"),
            CertProfile(11003, "Lab EV SSL (SHA-2)", "EV", "Extended-validation TLS server",
                        key_types={"RSA": ["2048", "3072", "4096"], "EC": ["P-256", "P-384"]})]


def _default_custom_fields() -> List[Dict[str, Any]]:
    return [{"id": 54, "name": "Cost Center", "mandatory": False},
            {"id": 55, "name": "Change Ticket", "mandatory": False}]


@dataclass
class ScmAccounts:
    """The credentials and account data the emulated SCM accepts. Use `generate()`."""

    client_id: str
    client_secret: str
    login: str
    password: str
    customer_uri: str = "lab"
    org: Organization = field(default_factory=Organization)
    profiles: List[CertProfile] = field(default_factory=_default_profiles)
    custom_fields: List[Dict[str, Any]] = field(default_factory=_default_custom_fields)

    @classmethod
    def generate(cls) -> "ScmAccounts":
        alphabet = string.ascii_letters + string.digits
        # Sectigo's sample secret holds YAML-special characters; so does ours, always, so that
        # clients and credential files that do not quote it break in the lab first.
        core = "".join(secrets.choice(alphabet) for _ in range(26))
        specials = ["]", "!", ",", "."]
        chars = list(core)
        for char in specials:
            chars.insert(secrets.randbelow(len(chars) + 1), char)
        secret = "".join(chars)
        password = "".join(secrets.choice(alphabet) for _ in range(14))
        login = "lab_admin_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4))
        return cls(client_id=str(uuid.uuid4()), client_secret=secret, login=login,
                   password=password)

    # Convenience views used by tests and by the demo's generated credentials file.
    @property
    def org_id(self) -> int:
        return self.org.id

    @property
    def department_id(self) -> int:
        return self.org.department_id

    def profile(self, profile_id: int) -> Optional[CertProfile]:
        for item in self.profiles:
            if item.id == profile_id:
                return item
        return None

    def profile_for(self, validation: str) -> CertProfile:
        for item in self.profiles:
            if item.validation == validation:
                return item
        raise KeyError(validation)

    def secret_values(self) -> List[str]:
        """The values that must never appear in a log."""
        return [self.client_secret, self.password]


# --- settings ------------------------------------------------------------------------------

@dataclass
class ScmSettings:
    """Switches of the emulated SCM, changed with `apply_setting` or `POST /_lab/settings`.

    latency: seconds added to every request (Endpoint applies it).
    pending_polls: "pending" answers a new order gives before it is issued (read at creation).
    pending_style: the classic collect pending answer ("rotate", "code0", "-1400", "-183").
    token_lifetime: seconds an access token is valid (for tokens issued from now on).
    decline_next: the next N new orders (enroll or renew) end Declined instead of Issued.
    bad_issuance / bad_issuance_count: the next N issued certificates carry this defect
        ("wrong_key", "missing_names", "broken_chain", "expired", "not_yet_valid"); nothing
        happens while the count is 0.
    validated_domains: DCV-validated domains; a name is covered by a listed domain or any of its
        subdomains ("*.d" lists the same as "d"); "*" validates everything; IPs must be listed.
    mandatory_custom_fields: custom field names that must be sent (added to /customFields if new).
    backdate_days: certificates issued from now on start this many days in the past, as if
        issued long ago (their term is unchanged, so they expire sooner): for renewal windows.
    """

    latency: float = 0.0
    pending_polls: int = 0
    pending_style: str = "rotate"
    token_lifetime: int = 300
    decline_next: int = 0
    bad_issuance: str = ""
    bad_issuance_count: int = 0
    validated_domains: List[str] = field(default_factory=lambda: ["*"])
    mandatory_custom_fields: List[str] = field(default_factory=list)
    backdate_days: int = 0

    def __setattr__(self, name: str, value: Any) -> None:
        # Validated on every assignment, so /_lab/settings answers 400 for a bad value instead
        # of the lab misbehaving later.
        if name == "pending_style" and value not in PENDING_STYLES:
            raise ValueError(f"pending_style must be one of {', '.join(PENDING_STYLES)}")
        if name == "bad_issuance" and value not in ("",) + BAD_ISSUANCE_MODES:
            raise ValueError("bad_issuance must be empty or one of "
                             + ", ".join(BAD_ISSUANCE_MODES))
        if name in ("pending_polls", "decline_next", "bad_issuance_count",
                    "backdate_days") and int(value) < 0:
            raise ValueError(f"{name} must not be negative")
        if name == "token_lifetime" and int(value) < 1:
            raise ValueError("token_lifetime must be at least 1 second")
        if name == "latency" and float(value) < 0:
            raise ValueError("latency must not be negative")
        if name in ("validated_domains", "mandatory_custom_fields"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a list of strings")
            value = [v.strip() for v in value if v.strip()]
        object.__setattr__(self, name, value)


# --- orders ----------------------------------------------------------------------------------

@dataclass
class Order:
    """One SSL certificate order (an sslId / certId; both APIs share the id space)."""

    id: int
    api: str  # "enrollment" | "classic"
    profile: CertProfile
    org_id: int
    common_name: str
    names: List[str]  # CN first, then the requested SANs; what the leaf should carry
    term: int
    public_key: pki.PublicKey
    renew_id: str
    client: str
    requested: dt.datetime
    status: str = "Requested"  # Requested | Issued | Declined | Revoked | Expired
    pending_left: int = 0
    polls: int = 0
    decline: bool = False
    comments: str = ""
    external_requester: str = ""
    custom_fields: Dict[str, str] = field(default_factory=dict)
    leaf: Optional[x509.Certificate] = None
    chain: List[x509.Certificate] = field(default_factory=list)  # issuer ... root
    defect: str = ""
    renewed: bool = False
    renewed_date: Optional[dt.datetime] = None
    renew_of: Optional[int] = None
    issued: Optional[dt.datetime] = None
    declined: Optional[dt.datetime] = None
    revoked: Optional[dt.datetime] = None
    replaced: Optional[dt.datetime] = None
    reason_code: Optional[int] = None

    @property
    def validation(self) -> str:
        return self.profile.validation

    @property
    def key_type(self) -> str:
        """'RSA-2048' or 'EC-P384' (the order log's spelling)."""
        if pki.key_family(self.public_key) == "RSA":
            return f"RSA-{pki.key_bits(self.public_key)}"
        return f"EC-P{pki.key_bits(self.public_key)}"

    def summary(self) -> Dict[str, Any]:
        return {"id": self.id, "api": self.api, "status": self.status,
                "validation": self.validation, "profile_id": self.profile.id,
                "common_name": self.common_name, "names": list(self.names), "term": self.term,
                "key": self.key_type, "renewed": self.renewed, "renew_of": self.renew_of,
                "pending_left": self.pending_left, "defect": self.defect}


@dataclass
class _Token:
    client_id: str
    expires_at: float


@dataclass
class _Ctx:
    """What a handler gets: the request, the route's path parameters, the caller."""

    request: Request
    params: Dict[str, str]
    auth: str = "none"  # "bearer" | "password" | "cert" | "none"
    client: str = ""
    private: bool = False


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
        (("POST",), re.escape(TOKEN_PATH), "_token", "token"),
        (("POST",), r"/v1/certificates", "_enroll_enrollment", "enrollment"),
        (("GET",), r"/v1/certificates/(?P<id>[^/]+)", "_download_enrollment", "enrollment"),
        (("POST",), r"/v1/certificates/(?P<id>[^/]+)/renew", "_renew_enrollment",
         "enrollment"),
        (("POST",), r"/v1/certificates/(?P<id>[^/]+)/revoke", "_revoke_enrollment",
         "enrollment"),
        (("GET",), rf"{ssl}/types", "_types", "classic"),
        (("GET",), rf"{ssl}/customFields", "_custom_fields", "classic"),
        (("GET",), r"/organization/v1", "_organizations", "classic"),
        (("POST",), rf"{ssl}/enroll", "_enroll_classic", "classic"),
        (("GET",), rf"{ssl}/collect/(?P<id>[^/]+)", "_collect", "classic"),
        (("GET",), rf"{ssl}/collect/(?P<id>[^/]+)/(?P<format>[^/]+)", "_collect", "classic"),
        (("POST",), rf"{ssl}/renewById/(?P<id>[^/]+)", "_renew_by_id", "classic"),
        (("POST",), rf"{ssl}/renew/(?P<renew_id>[^/]+)", "_renew_by_renew_id", "classic"),
        (("POST",), rf"{ssl}/revoke/(?P<id>[^/]+)", "_revoke_classic", "classic"),
        (("POST",), rf"{ssl}/replace/(?P<id>[^/]+)", "_replace", "classic"),
        (("GET", "HEAD"), ssl, "_list", "classic"),
        (("GET",), rf"{ssl}/{reserved}(?P<id>[^/]+)", "_details", "classic"),
    ]
    return [_Route(methods, re.compile(pattern + "$"), handler, api)
            for methods, pattern, handler, api in table]


# --- request parsing helpers -----------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _json_object(request: Request) -> Dict[str, Any]:
    """The body as a JSON object, or -1002 (415 when the content type is not JSON)."""
    if not request.body:
        raise ApiError(400, -1002, details="the request has no body; send a JSON object")
    ctype = (request.header("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, -1002, details="Content-Type must be application/json")
    try:
        data = json.loads(request.body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, -1002, details="the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, -1002, details="the body must be a JSON object")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _opt_int(data: Dict[str, Any], name: str) -> Optional[int]:
    value = data.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise ApiError(400, -1002, details=f"'{name}' must be a JSON integer")
    return value


def _opt_str(data: Dict[str, Any], name: str, limit: Optional[int] = None) -> Optional[str]:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, -1002, details=f"'{name}' must be a JSON string")
    if limit is not None and len(value) > limit:
        raise ApiError(400, -1601, name, details=f"at most {limit} characters")
    return value


def _reason(data: Dict[str, Any]) -> Tuple[str, int]:
    reason = _opt_str(data, "reason")
    if not reason:
        raise ApiError(400, -7, "reason")
    if len(reason) > MAX_REASON:
        raise ApiError(400, -1601, "reason", details=f"1 to {MAX_REASON} characters")
    code = _opt_int(data, "reasonCode")
    if code is None:
        code = 0
    elif code not in REVOKE_REASONS:
        raise ApiError(400, -1601, "reasonCode", details="one of 0, 1, 3, 4, 5")
    return reason, code


def _dcv_fields(data: Dict[str, Any]) -> None:
    """dcvMode/dcvEmail are accepted (the lab's domains are pre-validated) but must be sane."""
    mode = _opt_str(data, "dcvMode")
    if mode is not None and mode not in DCV_MODES:
        raise ApiError(400, -1601, "dcvMode", details=f"one of {', '.join(DCV_MODES)}")
    _opt_str(data, "dcvEmail", 256)


def _path_id(text: str) -> int:
    """A certificate id from the path: a positive 32-bit decimal, else -124."""
    if not re.fullmatch(r"[0-9]{1,10}", text) or not 0 < int(text) <= INT32_MAX:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ApiError(400, -124, shown)
    return int(text)


def _query_one(request: Request, name: str) -> Optional[str]:
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, -1601, name, details="given more than once")
    return values[0]


def _query_int(request: Request, name: str, default: int, minimum: int) -> int:
    text = _query_one(request, name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"[0-9]{1,10}", text) or not minimum <= int(text) <= INT32_MAX:
        raise ApiError(400, -1601, name)
    return int(text)


_B64_STRICT = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CLASSIC_CSR_CHARS = re.compile(r"[A-Za-z0-9+/=\s-]+")
_PEM_CSR = re.compile(r"-----BEGIN (NEW )?CERTIFICATE REQUEST-----(?P<b64>[A-Za-z0-9+/=\s]*)"
                      r"-----END (NEW )?CERTIFICATE REQUEST-----")


def _csr_der(text: str, classic: bool) -> bytes:
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
class _ParsedCsr:
    common_name: str
    public_key: pki.PublicKey


def _parse_csr(der: bytes, profile: CertProfile) -> _ParsedCsr:
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
    return _ParsedCsr(cns[0].value, key)


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _check_name(name: str) -> None:
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


def _merge_names(common_name: str, sans: List[str]) -> List[str]:
    out: List[str] = []
    seen = set()
    for name in [common_name] + sans:
        key = name.lower()
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


def _serial_text(cert: x509.Certificate) -> str:
    text = f"{cert.serial_number:x}"
    text = ("0" + text) if len(text) % 2 else text
    return ":".join(text[i:i + 2] for i in range(0, len(text), 2))


# --- date formats of the details route -------------------------------------------------------

_NAMED_DATE_FORMATS = {"US": "%m/%d/%Y", "ISO": "%Y-%m-%d", "EU": "%d.%m.%Y", "UK": "%d/%m/%Y",
                       "JP": "%Y/%m/%d"}
_DATE_TOKENS = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S",
                "'T'": "T"}
_DATE_TOKEN_RE = re.compile(r"yyyy|MM|dd|HH|mm|ss|'T'|[-/.: ,]")


def _strftime_pattern(date_format: Optional[str]) -> str:
    if date_format is None or date_format == "":
        return _NAMED_DATE_FORMATS["US"]
    if date_format in _NAMED_DATE_FORMATS:
        return _NAMED_DATE_FORMATS[date_format]
    if date_format.endswith("_HMS") and date_format[:-4] in _NAMED_DATE_FORMATS:
        return _NAMED_DATE_FORMATS[date_format[:-4]] + " %H:%M:%S"
    if len(date_format) <= 40:
        tokens = _DATE_TOKEN_RE.findall(date_format)
        if tokens and "".join(tokens) == date_format and any(len(t) > 1 for t in tokens):
            return "".join(_DATE_TOKENS.get(t, t) for t in tokens)
    raise ApiError(400, -1601, "dateFormat")


# --- the service -----------------------------------------------------------------------------

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
        self.order_log_path = order_log
        self.order_log: List[Dict[str, Any]] = []
        self.orders: Dict[int, Order] = {}
        self.lock = threading.RLock()
        self._tokens: Dict[str, _Token] = {}
        self._jwt_key = secrets.token_bytes(32)
        self._kid = secrets.token_urlsafe(12)
        self._random = random.Random(secrets.randbits(64))
        self._next_id = self._random.randint(1_000_000, 8_999_999)
        self._routes = _routes()
        self._rogue_keys: Dict[str, pki.PrivateKey] = {}
        if order_log:
            open(order_log, "a", encoding="utf-8").close()

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
        return Response(status, _dumps({"code": -2, "description": text}), JSON_CONTENT,
                        headers, log={"code": -2})

    def internal_error(self) -> Response:
        return Response(503, _dumps({"code": -2, "description": MESSAGES[-2]}), JSON_CONTENT,
                        log={"code": -2})

    def control(self, action: str, body: Dict[str, Any]) -> Any:
        """Lab actions: expire_tokens, revoke/issue_now/expire/decline {"id": N}, orders."""
        if action == "expire_tokens":
            with self.lock:
                count = len(self._tokens)
                self._tokens.clear()
            return {"expired": count}
        if action == "orders":
            with self.lock:
                return [order.summary() for order in self.orders.values()]
        if action not in ("revoke", "issue_now", "expire", "decline"):
            raise ValueError(f"unknown action {action!r}; known: expire_tokens, revoke, "
                             f"issue_now, expire, decline, orders")
        order_id = body.get("id")
        if not _is_int(order_id):
            raise ValueError("body must be {\"id\": <order id>}")
        with self.lock:
            order = self.orders.get(order_id)
            if order is None:
                raise ValueError(f"no order {order_id}")
            self._refresh(order)
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
                self._finalise(order)
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
        route = next((r for r in candidates if request.method in r.methods), None)
        if route is None:
            if candidates[0].api == "token":
                return self._keycloak_error(KeycloakError(405, "invalid_request",
                                                          "HTTP method not allowed"))
            allowed = sorted({m for r in candidates for m in r.methods})
            return ApiError(405, -1, description=f"Method {request.method[:16]} is not "
                            f"supported for this resource",
                            headers=[("Allow", ", ".join(allowed))]).response()
        match = route.pattern.match(path if route.api == "token" else sub)
        assert match is not None  # it matched when the candidates were collected
        ctx = _Ctx(request, {k: v for k, v in match.groupdict().items() if v is not None},
                   private=private)
        if route.api == "token":
            try:
                return self._token(ctx)
            except KeycloakError as exc:
                return self._keycloak_error(exc)
        try:
            self._authenticate(ctx, route.api)
            response = getattr(self, route.handler)(ctx)
        except ApiError as exc:
            response = exc.response()
        response.log.setdefault("auth", ctx.auth)
        return response

    # -- OAuth token route (§6.1) -----------------------------------------------------------

    def token_url(self, request: Optional[Request] = None) -> str:
        return self._base_url(request) + TOKEN_PATH

    def _base_url(self, request: Optional[Request]) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = request.header("Host") if request is not None else None
        # Only a plain host[:port] is echoed back into a header; anything else is not trusted.
        if host and re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?",
                                 host):
            return f"https://{host}"
        return "https://localhost"

    def _keycloak_error(self, exc: KeycloakError) -> Response:
        return Response(exc.status, _dumps({"error": exc.error,
                                            "error_description": exc.description}),
                        "application/json", log={"error": exc.error, "auth": "none"})

    def _token(self, ctx: _Ctx) -> Response:
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
        good_id = hmac.compare_digest(client_id.encode(), self.accounts.client_id.encode())
        good_secret = hmac.compare_digest(client_secret.encode(),
                                          self.accounts.client_secret.encode())
        if not (good_id and good_secret):
            raise KeycloakError(401, "invalid_client",
                                "Invalid client or Invalid client credentials")
        lifetime = int(self.settings.token_lifetime)
        now = time.time()
        token = self._make_jwt(client_id, now, lifetime, request)
        with self.lock:
            for key in [k for k, v in self._tokens.items() if v.expires_at <= now]:
                del self._tokens[key]
            self._tokens[token] = _Token(client_id, now + lifetime)
        body = {"access_token": token, "expires_in": lifetime, "refresh_expires_in": 0,
                "token_type": "Bearer", "not-before-policy": 0, "scope": "profile email"}
        return Response(200, _dumps(body), "application/json",
                        [("Cache-Control", "no-store"), ("Pragma", "no-cache")],
                        log={"auth": "client_credentials"})

    def _make_jwt(self, client_id: str, now: float, lifetime: int, request: Request) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

        header = {"alg": "HS256", "typ": "JWT", "kid": self._kid}
        claims = {"exp": int(now) + lifetime, "iat": int(now), "jti": str(uuid.uuid4()),
                  "iss": self._base_url(request) + "/auth/realms/apiclients",
                  "aud": "account", "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
                  "typ": "Bearer", "azp": client_id, "scope": "profile email",
                  "clientId": client_id}
        signing_input = b64(_dumps(header)) + "." + b64(_dumps(claims))
        signature = hmac.new(self._jwt_key, signing_input.encode("ascii"), hashlib.sha256)
        return signing_input + "." + b64(signature.digest())

    # -- authentication ---------------------------------------------------------------------

    def _unauthorized(self, ctx: _Ctx, token_presented: bool) -> ApiError:
        value = f'Bearer authorization_uri="{self.token_url(ctx.request)}"'
        if token_presented:
            value += ', error="invalid_token"'
        return ApiError(401, -16, headers=[("WWW-Authenticate", value)])

    def _bearer(self, ctx: _Ctx) -> bool:
        """Checks an Authorization header if there is one; False if there is none."""
        header = ctx.request.header("Authorization")
        if header is None:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._unauthorized(ctx, token_presented=False)
        with self.lock:
            entry = self._tokens.get(token.strip())
            if entry is not None and entry.expires_at <= time.time():
                del self._tokens[token.strip()]
                entry = None
        if entry is None:
            raise self._unauthorized(ctx, token_presented=True)
        ctx.auth, ctx.client = "bearer", entry.client_id
        return True

    def _authenticate(self, ctx: _Ctx, api: str) -> None:
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

    # -- shared validation ------------------------------------------------------------------

    def _custom_field_defs(self) -> List[Dict[str, Any]]:
        mandatory = set(self.settings.mandatory_custom_fields)
        out = [dict(item, mandatory=bool(item["mandatory"]) or item["name"] in mandatory)
               for item in self.accounts.custom_fields]
        known = {item["name"] for item in out}
        extra_id = 900
        for name in self.settings.mandatory_custom_fields:
            if name not in known:
                out.append({"id": extra_id, "name": name, "mandatory": True})
                known.add(name)
                extra_id += 1
        return out

    def _check_custom_fields(self, values: Dict[str, str]) -> None:
        defs = self._custom_field_defs()
        names = {item["name"] for item in defs}
        for name in values:
            if name not in names:
                raise ApiError(400, -135, details=f"unknown custom field {name[:80]!r}")
        for item in defs:
            if item["mandatory"] and not values.get(item["name"]):
                raise ApiError(400, -62, details=f"missing {item['name']!r}")

    def _check_names(self, names: List[str], profile: CertProfile) -> None:
        if profile.validation == "EV":
            wild = [n for n in names if n.startswith("*")]
            if wild:
                # The EV Guidelines forbid wildcard names.
                raise ApiError(400, -732, details=f"wildcards are not allowed in EV "
                                                  f"certificates: {wild[0][:80]!r}")
        if len(names) > MAX_NAMES:
            raise ApiError(400, -1601, "subjAltNames", details=f"at most {MAX_NAMES} names")
        for name in names:
            _check_name(name)
        if len(names[0]) > 64:
            raise ApiError(400, -306, names[0][:64] + "...", 64)
        missing = [n for n in names if not self._validated(n)]
        if missing:
            shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise ApiError(400, -737, shown)

    def _validated(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        if name.startswith("*."):
            name = name[2:]
        for domain in self.settings.validated_domains:
            domain = domain.lower().rstrip(".")
            if domain == "*":
                return True
            if domain.startswith("*."):
                domain = domain[2:]
            if name == domain or name.endswith("." + domain):
                return True
        return False

    def _term(self, profile: CertProfile, term: Optional[int], default: Optional[int]) -> int:
        if term is None:
            return default if default in profile.terms else max(profile.terms)
        if term not in profile.terms:
            raise ApiError(400, -36, details="allowed: " + ", ".join(map(str, profile.terms)))
        return term

    def _csr(self, data: Dict[str, Any], profile: CertProfile, classic: bool,
             required: bool) -> Optional[_ParsedCsr]:
        value = data.get("csr")
        if value is None or value == "":
            if required:
                raise ApiError(400, -7, "csr")
            return None
        if not isinstance(value, str):
            raise ApiError(400, -1002, details="'csr' must be a JSON string")
        return _parse_csr(_csr_der(value, classic), profile)

    # -- orders and issuance ----------------------------------------------------------------

    def _new_order(self, api: str, profile: CertProfile, org_id: int, common_name: str,
                   names: List[str], term: int, public_key: pki.PublicKey, client: str,
                   comments: str = "", external_requester: str = "",
                   custom_fields: Optional[Dict[str, str]] = None,
                   renew_of: Optional[int] = None) -> Order:
        """Creates and stores an order, and writes the billing line. Caller holds the lock."""
        order_id = self._next_id
        self._next_id += self._random.randint(1, 9)
        renew_id = "".join(self._random.choice(string.ascii_letters + string.digits + "-_")
                           for _ in range(20))
        decline = False
        if self.settings.decline_next > 0:
            self.settings.decline_next = self.settings.decline_next - 1
            decline = True
        order = Order(order_id, api, profile, org_id, common_name, names, term, public_key,
                      renew_id, client, pki.utcnow(), pending_left=int(self.settings.pending_polls),
                      decline=decline, comments=comments, external_requester=external_requester,
                      custom_fields=dict(custom_fields or {}), renew_of=renew_of)
        self.orders[order_id] = order
        self._bill(order, "renew" if renew_of is not None else "enroll")
        return order

    def _bill(self, order: Order, op: str) -> None:
        now = pki.utcnow()
        entry = {"ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
                 "api": order.api, "op": op, "id": order.id, "renew_of": order.renew_of,
                 "validation": order.validation, "profile_id": order.profile.id,
                 "common_name": order.common_name, "names": list(order.names),
                 "key": order.key_type, "client": order.client}
        self.order_log.append(entry)
        if self.order_log_path:
            with open(self.order_log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        log.info("order %s: %s %s %s for %s", order.id, order.api, op, order.validation,
                 ", ".join(order.names))

    def _renew_order(self, old: Order, api: str, client: str, parsed: Optional[_ParsedCsr],
                     profile: Optional[CertProfile] = None, term: Optional[int] = None,
                     sans: Optional[List[str]] = None, comments: Optional[str] = None,
                     external_requester: Optional[str] = None,
                     custom_fields: Optional[Dict[str, str]] = None) -> Order:
        """A renewal of `old` (caller holds the lock and has checked its state)."""
        profile = profile or old.profile
        names = old.names if sans is None else _merge_names(old.common_name, sans)
        self._check_names(names, profile)
        fields = old.custom_fields if custom_fields is None else custom_fields
        self._check_custom_fields(fields)
        order = self._new_order(api, profile, old.org_id, old.common_name, list(names),
                                self._term(profile, term, old.term),
                                parsed.public_key if parsed else old.public_key, client,
                                old.comments if comments is None else comments,
                                old.external_requester if external_requester is None
                                else external_requester, fields, renew_of=old.id)
        old.renewed = True
        old.renewed_date = pki.utcnow()
        return order

    def _refresh(self, order: Order) -> None:
        if order.status == "Issued" and order.leaf is not None \
                and order.leaf.not_valid_after_utc < pki.utcnow():
            order.status = "Expired"

    def _poll(self, order: Order) -> Optional[int]:
        """One collect/download of a Requested order. Returns the index of this pending answer
        (0, 1, ...) while it stays pending, None once it has been finalised."""
        if order.status != "Requested":
            return None
        if order.pending_left > 0:
            order.pending_left -= 1
            index = order.polls
            order.polls += 1
            return index
        self._finalise(order)
        return None

    def _finalise(self, order: Order) -> None:
        order.pending_left = 0
        if order.decline:
            order.status = "Declined"
            order.declined = pki.utcnow()
            log.info("order %s declined", order.id)
            return
        self._issue(order)

    def _issue(self, order: Order) -> None:
        defect = ""
        if self.settings.bad_issuance and self.settings.bad_issuance_count > 0:
            defect = self.settings.bad_issuance
            self.settings.bad_issuance_count = self.settings.bad_issuance_count - 1
        family = pki.key_family(order.public_key)
        issuer = self.hierarchy.issuers[(order.validation, family)]
        today = pki.utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        not_before = today - dt.timedelta(days=self.settings.backdate_days)
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
        self._refresh(order)
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
        org = self.accounts.org
        attrs: List[x509.NameAttribute] = []
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

    def _order(self, order_id: int) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            raise ApiError(404, -5101, f"Id: {order_id}")
        self._refresh(order)
        return order

    def _download(self, order: Order, fmt: str) -> Response:
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

    # -- Enrollment API (§6) ----------------------------------------------------------------

    def _enrollment_profile(self, data: Dict[str, Any]) -> Optional[CertProfile]:
        profile_id = _opt_int(data, "profileId")
        alias = _opt_int(data, "productId")
        if profile_id is not None and alias is not None and profile_id != alias:
            raise ApiError(400, -1601, "productId", details="profileId and productId differ")
        chosen = profile_id if profile_id is not None else alias
        if chosen is None:
            return None
        profile = self.accounts.profile(chosen)
        if profile is None:
            raise ApiError(400, -111, chosen)
        return profile

    def _enrollment_extras(self, data: Dict[str, Any]) -> Tuple[
            Optional[List[str]], Optional[str], Optional[str], Optional[Dict[str, str]]]:
        sans = data.get("subjAltNames")
        if sans is not None and (not isinstance(sans, list)
                                 or not all(isinstance(s, str) for s in sans)):
            raise ApiError(400, -1002, details="'subjAltNames' must be an array of strings")
        comments = _opt_str(data, "comments", MAX_COMMENTS)
        requester = _opt_str(data, "externalRequester", MAX_REQUESTER)
        custom = data.get("customFields")
        if custom is not None and (not isinstance(custom, dict)
                                   or not all(isinstance(v, str) for v in custom.values())):
            raise ApiError(400, -1002, details="'customFields' must be an object of strings")
        _dcv_fields(data)
        return sans, comments, requester, custom

    def _enroll_enrollment(self, ctx: _Ctx) -> Response:
        data = _json_object(ctx.request)
        profile = self._enrollment_profile(data)
        if profile is None:
            raise ApiError(400, -7, "profileId")
        sans, comments, requester, custom = self._enrollment_extras(data)
        term = self._term(profile, _opt_int(data, "term"), None)
        parsed = self._csr(data, profile, classic=False, required=True)
        assert parsed is not None
        names = _merge_names(parsed.common_name, sans or [])
        self._check_names(names, profile)
        self._check_custom_fields(custom or {})
        with self.lock:
            order = self._new_order("enrollment", profile, self.accounts.department_id,
                                    parsed.common_name, names, term, parsed.public_key,
                                    ctx.client, comments or "", requester or "", custom)
        return _json(200, {"certId": order.id})

    def _download_enrollment(self, ctx: _Ctx) -> Response:
        order_id = _path_id(ctx.params["id"])
        fmt = _query_one(ctx.request, "format")
        if fmt is not None and fmt not in CLASSIC_FORMATS:
            raise ApiError(400, -1450, fmt[:40])
        with self.lock:
            order = self._order(order_id)
            index = self._poll(order)
            if index is not None:
                raise ApiError(404, -103 if index % 2 == 0 else -109)
            self._check_collectable(order)
            return self._download(order, fmt or "x509R")

    def _check_collectable(self, order: Order) -> None:
        if order.status == "Revoked":
            raise ApiError(400, -110)
        if order.status == "Declined":
            raise ApiError(400, -1112, "Declined")

    def _renew_enrollment(self, ctx: _Ctx) -> Response:
        order_id = _path_id(ctx.params["id"])
        data = _json_object(ctx.request)
        profile = self._enrollment_profile(data)
        sans, comments, requester, custom = self._enrollment_extras(data)
        term = _opt_int(data, "term")
        with self.lock:
            old = self._order(order_id)
            if old.status not in ("Issued", "Expired", "Revoked"):
                raise ApiError(400, -130, old.status)
            parsed = self._csr(data, profile or old.profile, classic=False, required=False)
            order = self._renew_order(old, "enrollment", ctx.client, parsed, profile, term,
                                      sans, comments, requester, custom)
        return _json(200, {"certId": order.id})

    def _revoke_enrollment(self, ctx: _Ctx) -> Response:
        return self._revoke(ctx)

    def _revoke(self, ctx: _Ctx) -> Response:
        order_id = _path_id(ctx.params["id"])
        data = _json_object(ctx.request)
        _reason_text, code = _reason(data)
        with self.lock:
            order = self._order(order_id)
            if order.status == "Revoked":
                raise ApiError(400, -159)
            if order.status != "Issued":
                raise ApiError(400, -102)
            order.status = "Revoked"
            order.revoked = pki.utcnow()
            order.reason_code = code
        return Response(204, b"", JSON_CONTENT, log={"id": order_id})

    # -- classic API: helpers (§5.3) --------------------------------------------------------

    def _check_org(self, request: Request) -> None:
        text = _query_one(request, "organizationId")
        if text is None or text == "":
            return
        if not re.fullmatch(r"[0-9]{1,10}", text):
            raise ApiError(400, -1601, "organizationId")
        if int(text) not in (self.accounts.org_id, self.accounts.department_id):
            raise ApiError(400, -639)

    def _types(self, ctx: _Ctx) -> Response:
        self._check_org(ctx.request)
        return _json(200, [p.as_json() for p in self.accounts.profiles])

    def _custom_fields(self, ctx: _Ctx) -> Response:
        return _json(200, self._custom_field_defs())

    def _organizations(self, ctx: _Ctx) -> Response:
        org = self.accounts.org
        return _json(200, [{"id": org.id, "name": org.name,
                            "departments": [{"id": org.department_id, "parentName": org.name,
                                             "name": org.department_name}]}])

    # -- classic enroll (§5.4) --------------------------------------------------------------

    def _enroll_classic(self, ctx: _Ctx) -> Response:
        data = _json_object(ctx.request)
        org_id = _opt_int(data, "orgId")
        if org_id is None:
            raise ApiError(400, -7, "orgId")
        if org_id not in (self.accounts.org_id, self.accounts.department_id):
            raise ApiError(400, -639)
        cert_type = _opt_int(data, "certType")
        if cert_type is None:
            raise ApiError(400, -7, "certType")
        profile = self.accounts.profile(cert_type)
        if profile is None:
            raise ApiError(400, -39)
        term = self._term(profile, _opt_int(data, "term"), None)
        sans_text = _opt_str(data, "subjAltNames", 32767)
        sans = [s.strip() for s in sans_text.split(",") if s.strip()] if sans_text else []
        comments = _opt_str(data, "comments", MAX_COMMENTS)
        requester = _opt_str(data, "externalRequester", MAX_REQUESTER)
        _dcv_fields(data)
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
        parsed = self._csr(data, profile, classic=True, required=True)
        assert parsed is not None
        names = _merge_names(parsed.common_name, sans)
        self._check_names(names, profile)
        self._check_custom_fields(custom)
        with self.lock:
            order = self._new_order("classic", profile, org_id, parsed.common_name, names,
                                    term, parsed.public_key, ctx.client, comments or "",
                                    requester or "", custom)
        return _json(200, {"sslId": order.id, "renewId": order.renew_id})

    # -- classic collect (§5.5) -------------------------------------------------------------

    def _collect(self, ctx: _Ctx) -> Response:
        order_id = _path_id(ctx.params["id"])
        fmt = ctx.params.get("format")
        if fmt is not None and _query_one(ctx.request, "format") is not None:
            raise ApiError(400, -1601, "format", details="give the format once: path or query")
        if fmt is None:
            fmt = _query_one(ctx.request, "format") or "base64"
        if fmt not in CLASSIC_FORMATS:
            raise ApiError(400, -126, fmt[:40])
        with self.lock:
            order = self._order(order_id)
            index = self._poll(order)
            if index is not None:
                raise self._pending(index)
            self._check_collectable(order)
            return self._download(order, fmt)

    def _pending(self, index: int) -> ApiError:
        style = self.settings.pending_style
        if style == "rotate":
            style = ("code0", "-1400", "-183")[index % 3]
        if style == "code0":
            return ApiError(400, 0)
        if style == "-1400":
            return ApiError(404, -1400)
        return ApiError(400, -183)

    # -- classic details and list (§5.6) ----------------------------------------------------

    def _details(self, ctx: _Ctx) -> Response:
        order_id = _path_id(ctx.params["id"])
        pattern = _strftime_pattern(_query_one(ctx.request, "dateFormat"))
        with self.lock:
            order = self._order(order_id)
            return _json(200, self._details_json(order, pattern))

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
            out["serialNumber"] = _serial_text(leaf)
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

    def _list(self, ctx: _Ctx) -> Response:
        request = ctx.request
        size = min(_query_int(request, "size", 10, 0), 200)
        position = _query_int(request, "position", 0, 0)
        filters: List[Callable[[Order], bool]] = []
        cn = _query_one(request, "commonName")
        if cn:
            filters.append(lambda o: o.common_name.lower() == cn.lower())
        san = _query_one(request, "subjectAlternativeName")
        if san:
            filters.append(lambda o: san.lower() in (n.lower() for n in o.names))
        status = _query_one(request, "status")
        if status:
            filters.append(lambda o: o.status.lower() == status.lower())
        serial = _query_one(request, "serialNumber")
        if serial:
            wanted = serial.replace(":", "").lower().lstrip("0")
            filters.append(lambda o: o.leaf is not None
                           and f"{o.leaf.serial_number:x}" == wanted)
        for name, attr in (("sslTypeId", "profile"), ("orgId", "org_id")):
            text = _query_one(request, name)
            if text:
                if not re.fullmatch(r"[0-9]{1,10}", text):
                    raise ApiError(400, -1601, name)
                number = int(text)
                if attr == "profile":
                    filters.append(lambda o, n=number: o.profile.id == n)
                else:
                    filters.append(lambda o, n=number: o.org_id == n)
        with self.lock:
            for order in self.orders.values():
                self._refresh(order)
            matching = [o for o in sorted(self.orders.values(), key=lambda o: o.id)
                        if all(f(o) for f in filters)]
            page = matching[position:position + size]
            items = []
            for order in page:
                item: Dict[str, Any] = {"sslId": order.id, "commonName": order.common_name,
                                        "subjectAlternativeNames": list(order.names)}
                if order.leaf is not None:
                    item["serialNumber"] = _serial_text(order.leaf)
                items.append(item)
        return _json(200, items, [("X-Total-Count", str(len(matching)))])

    # -- classic renew (§5.7) ---------------------------------------------------------------

    def _renew_by_id(self, ctx: _Ctx) -> Response:
        order_id = _path_id(ctx.params["id"])
        data = _json_object(ctx.request)
        _dcv_fields(data)
        with self.lock:
            old = self._order(order_id)
            if old.status not in ("Issued", "Expired", "Revoked"):
                raise ApiError(400, -105, old.status)
            parsed = self._csr(data, old.profile, classic=True, required=False)
            order = self._renew_order(old, "classic", ctx.client, parsed)
        return _json(200, {"sslId": order.id})

    def _renew_by_renew_id(self, ctx: _Ctx) -> Response:
        renew_id = ctx.params["renew_id"]
        data = _json_object(ctx.request)
        with self.lock:
            old = next((o for o in self.orders.values() if o.renew_id == renew_id), None)
            if old is None:
                raise ApiError(404, -123)
            self._refresh(old)
            if old.status not in ("Issued", "Expired", "Revoked"):
                raise ApiError(400, -105, old.status)
            parsed = self._csr(data, old.profile, classic=True, required=False)
            order = self._renew_order(old, "classic", ctx.client, parsed)
        return Response(204, b"", JSON_CONTENT, log={"id": order.id})

    # -- classic revoke and replace (§5.8) --------------------------------------------------

    def _revoke_classic(self, ctx: _Ctx) -> Response:
        return self._revoke(ctx)

    def _replace(self, ctx: _Ctx) -> Response:
        order_id = _path_id(ctx.params["id"])
        data = _json_object(ctx.request)
        _reason(data)
        common_name = _opt_str(data, "commonName")
        if common_name is not None and not 1 <= len(common_name) <= 64:
            raise ApiError(400, -1601, "commonName", details="1 to 64 characters")
        sans = data.get("subjectAlternativeNames")
        if sans is not None and (not isinstance(sans, list)
                                 or not all(isinstance(s, str) for s in sans)):
            raise ApiError(400, -1002, details="'subjectAlternativeNames' must be an array")
        _dcv_fields(data)
        with self.lock:
            order = self._order(order_id)
            if order.status != "Issued":
                raise ApiError(400, -130, order.status)
            parsed = self._csr(data, order.profile, classic=True, required=True)
            assert parsed is not None
            cn = common_name or parsed.common_name
            names = _merge_names(cn, [s.strip() for s in sans or [] if s.strip()])
            self._check_names(names, order.profile)
            order.common_name, order.names = cn, names
            order.public_key = parsed.public_key
            order.status = "Requested"
            order.pending_left = int(self.settings.pending_polls)
            order.polls = 0
            order.leaf, order.chain, order.defect = None, [], ""
            order.replaced = pki.utcnow()
        return Response(204, b"", JSON_CONTENT, log={"id": order_id})
