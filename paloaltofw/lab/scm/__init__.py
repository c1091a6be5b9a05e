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

Layout, by role (as Let's Encrypt's Pebble splits its server): `service` (the front end:
routes, authentication, lab controls), `enrollment` and `classic` (each API's handlers),
`checks` (what an order must satisfy), `db` (orders and the order log), `ca` (issuance and
download formats), `tokens` (OAuth), `accounts`, `settings` and `wire` (errors and JSON).
"""

from .accounts import CertProfile, Organization, ScmAccounts
from .db import Order
from .service import ScmService
from .settings import BAD_ISSUANCE_MODES, PENDING_STYLES, ScmSettings
from .tokens import TOKEN_PATH
from .wire import CLASSIC_FORMATS, MESSAGES, ApiError

__all__ = ["BAD_ISSUANCE_MODES", "CLASSIC_FORMATS", "MESSAGES", "PENDING_STYLES", "TOKEN_PATH",
           "ApiError", "CertProfile", "Order", "Organization", "ScmAccounts", "ScmService",
           "ScmSettings"]
