"""The wire of the emulated SCM: its error answers (SCM-REST-25.5 texts), JSON bodies and the
checks every route makes of a request's body, path and query (strict: a wrong JSON type is
-1002, as on the real service)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from cryptography import x509

from ..server import Request, Response

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
        return Response(self.status, dumps(body), JSON_CONTENT, list(self.headers),
                        log={"code": self.code})


class KeycloakError(Exception):
    """An error of the token route, in Keycloak's shape."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.description = description


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def json_response(status: int, data: Any,
                  headers: Optional[List[Tuple[str, str]]] = None) -> Response:
    return Response(status, dumps(data), JSON_CONTENT, headers or [])


@dataclass
class Ctx:
    """What a handler gets: the request, the route's path parameters, the caller."""

    request: Request
    params: Dict[str, str]
    auth: str = "none"  # "bearer" | "password" | "cert" | "none"
    client: str = ""
    private: bool = False


# --- request parsing helpers -----------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def json_object(request: Request) -> Dict[str, Any]:
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


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def opt_int(data: Dict[str, Any], name: str) -> Optional[int]:
    value = data.get(name)
    if value is None:
        return None
    if not is_int(value):
        raise ApiError(400, -1002, details=f"'{name}' must be a JSON integer")
    return int(value)


def opt_str(data: Dict[str, Any], name: str, limit: Optional[int] = None) -> Optional[str]:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, -1002, details=f"'{name}' must be a JSON string")
    if limit is not None and len(value) > limit:
        raise ApiError(400, -1601, name, details=f"at most {limit} characters")
    return value


def revoke_reason(data: Dict[str, Any]) -> Tuple[str, int]:
    reason = opt_str(data, "reason")
    if not reason:
        raise ApiError(400, -7, "reason")
    if len(reason) > MAX_REASON:
        raise ApiError(400, -1601, "reason", details=f"1 to {MAX_REASON} characters")
    code = opt_int(data, "reasonCode")
    if code is None:
        code = 0
    elif code not in REVOKE_REASONS:
        raise ApiError(400, -1601, "reasonCode", details="one of 0, 1, 3, 4, 5")
    return reason, code


def dcv_fields(data: Dict[str, Any]) -> None:
    """dcvMode/dcvEmail are accepted (the lab's domains are pre-validated) but must be sane."""
    mode = opt_str(data, "dcvMode")
    if mode is not None and mode not in DCV_MODES:
        raise ApiError(400, -1601, "dcvMode", details=f"one of {', '.join(DCV_MODES)}")
    opt_str(data, "dcvEmail", 256)


def path_id(text: str) -> int:
    """A certificate id from the path: a positive 32-bit decimal, else -124."""
    if not re.fullmatch(r"[0-9]{1,10}", text) or not 0 < int(text) <= INT32_MAX:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ApiError(400, -124, shown)
    return int(text)


def query_one(request: Request, name: str) -> Optional[str]:
    values = request.query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, -1601, name, details="given more than once")
    return values[0]


def query_int(request: Request, name: str, default: int, minimum: int) -> int:
    text = query_one(request, name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"[0-9]{1,10}", text) or not minimum <= int(text) <= INT32_MAX:
        raise ApiError(400, -1601, name)
    return int(text)


def serial_text(cert: x509.Certificate) -> str:
    text = f"{cert.serial_number:x}"
    text = ("0" + text) if len(text) % 2 else text
    return ":".join(text[i:i + 2] for i in range(0, len(text), 2))


# --- date formats of the details route -------------------------------------------------------

_NAMED_DATE_FORMATS = {"US": "%m/%d/%Y", "ISO": "%Y-%m-%d", "EU": "%d.%m.%Y", "UK": "%d/%m/%Y",
                       "JP": "%Y/%m/%d"}
_DATE_TOKENS = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S",
                "'T'": "T"}
_DATE_TOKEN_RE = re.compile(r"yyyy|MM|dd|HH|mm|ss|'T'|[-/.: ,]")


def strftime_pattern(date_format: Optional[str]) -> str:
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


