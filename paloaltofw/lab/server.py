"""HTTPS plumbing shared by the emulated firewall and the emulated SCM.

Each emulated system is a *service*: an object with `handle(Request) -> Response`. An `Endpoint`
serves one service over real TLS on a loopback port, applies the fault rules and the per-request
latency before the service sees a request, writes one JSON line per request to the request log,
and answers the lab's control routes under `/_lab/` (see `Endpoint._control`).

Robustness rule: a service never lets an exception reach the client. Anything unexpected is
logged, counted in `Endpoint.internal_errors` (the tests require it to stay 0), and answered with
the service's own error envelope.
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
import json
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("lab")

MAX_BODY = 4 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Any  # email.message.Message: case-insensitive header access
    body: bytes
    client_cert_der: Optional[bytes] = None
    meta: Dict[str, Any] = field(default_factory=dict)  # copied into the request log entry
    _form: Optional[Tuple[Dict[str, List[str]], Dict[str, Tuple[str, bytes]]]] = None

    def header(self, name: str) -> Optional[str]:
        value = self.headers.get(name)
        return None if value is None else str(value)

    def form(self) -> Tuple[Dict[str, List[str]], Dict[str, Tuple[str, bytes]]]:
        """All parameters: the query string, then an urlencoded or multipart body.

        Returns (fields, files); files maps a part name to (filename, content). Multipart is
        parsed by the standard library's e-mail parser, which copes with the variations real
        clients send (pan-python ends the body without CRLF; pango and acme.sh quote nothing).
        Raises ValueError for a body that cannot be parsed.
        """
        if self._form is not None:
            return self._form
        params: Dict[str, List[str]] = {k: list(v) for k, v in self.query.items()}
        files: Dict[str, Tuple[str, bytes]] = {}
        ctype = (self.header("Content-Type") or "").lower()
        if self.body and ctype.startswith("application/x-www-form-urlencoded"):
            try:
                text = self.body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError("form body is not UTF-8") from exc
            for key, values in parse_qs(text, keep_blank_values=True).items():
                params.setdefault(key, []).extend(values)
        elif self.body and ctype.startswith("multipart/form-data"):
            # Real clients send boundaries that are not RFC 2045 tokens (pan-python's contain
            # '/', '+' and '='), unquoted; re-quote it so the parser sees the whole boundary.
            found = re.search(r'boundary=("?)([^";]+)\1', self.header("Content-Type") or "")
            if not found:
                raise ValueError("multipart body without boundary")
            head = (f'Content-Type: multipart/form-data; boundary="{found.group(2)}"'
                    "\r\n\r\n").encode("latin-1")
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                head + self.body)
            if not message.is_multipart():
                raise ValueError("multipart body without parts")
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if not isinstance(name, str) or not name:
                    continue
                payload = part.get_payload(decode=True)
                if not isinstance(payload, bytes):
                    payload = b""
                filename = part.get_filename()
                if filename is not None or name == "file":
                    files[name] = (filename or "", payload)
                else:
                    params.setdefault(name, []).append(payload.decode("utf-8", "replace"))
        self._form = (params, files)
        return self._form


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/xml; charset=utf-8"
    headers: List[Tuple[str, str]] = field(default_factory=list)
    drop: bool = False  # close the connection without answering
    log: Dict[str, Any] = field(default_factory=dict)  # extra fields for the request log
    entry: Optional[Dict[str, Any]] = None  # the request log entry, once written


# --- fault rules ------------------------------------------------------------------------------

@dataclass
class FaultRule:
    """One injected fault, applied to matching requests before the service sees them.

    kind: "status" (answer with `status`, e.g. 429 or 503, optionally with Retry-After),
          "drop" (close the connection without a response; the service never sees it),
          "lose" (the service handles the request, then the answer is lost: the connection
          closes without it, as when a link fails after a server has acted), or
          "delay" (sleep `seconds`, then serve normally: a slow link or a timeout).
    match: a substring of the request's summary line, e.g. "POST /api/v1/certificates" or
           "type=commit"; empty matches everything.
    count: how many matching requests it affects; None means until removed.
    skip: how many matching requests to let through first (e.g. skip=1: the second commit).
    """

    kind: str = "status"
    status: int = 503
    retry_after: Optional[float] = None
    seconds: float = 0.0
    match: str = ""
    count: Optional[int] = 1
    skip: int = 0

    @classmethod
    def parse(cls, text: str) -> "FaultRule":
        """`kind=status,status=429,retry_after=1,count=2,match=/enroll` (the CLI form)."""
        rule = cls()
        types = {f.name: f.type for f in fields(cls)}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in types:
                raise ValueError(f"fault rule: expected key=value with key in "
                                 f"{sorted(types)}, got {item!r}")
            setattr(rule, key, _coerce(key, value.strip(), getattr(cls, key, None)))
        if rule.kind not in ("status", "drop", "lose", "delay"):
            raise ValueError(f"fault rule: kind must be status, drop, lose or delay, not "
                             f"{rule.kind!r}")
        return rule

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "FaultRule":
        return cls.parse(",".join(f"{k}={'' if v is None else v}" for k, v in data.items()))


def _coerce(key: str, value: str, default: Any) -> Any:
    if key in ("status",):
        return int(value)
    if key == "count":
        return None if value in ("", "none", "None", "forever") else int(value)
    if key in ("retry_after",):
        return None if value in ("", "none", "None") else float(value)
    if key == "seconds":
        return float(value)
    if key == "skip":
        return int(value)
    return value


class Faults:
    """The fault rules of one service; thread-safe."""

    def __init__(self) -> None:
        self._rules: List[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, summary: str) -> List[FaultRule]:
        """The rules that fire for this request, consuming one use of each."""
        fired = []
        with self._lock:
            for rule in list(self._rules):
                if rule.match and rule.match not in summary:
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                fired.append(rule)
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
        return fired

    def snapshot(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [dict(vars(r)) for r in self._rules]


# --- settings -------------------------------------------------------------------------------

def apply_setting(settings: Any, name: str, value: Any) -> None:
    """Set one field of a settings dataclass from text or JSON, with its declared type."""
    known = {f.name: f for f in fields(settings)}
    if name not in known:
        raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(known))}")
    current = getattr(settings, name)
    if isinstance(current, bool):
        value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    elif isinstance(current, int):
        value = int(value)
    elif isinstance(current, float):
        value = float(value)
    elif isinstance(current, list):
        value = value if isinstance(value, list) else [v for v in str(value).split(",") if v]
    else:
        value = str(value)
    setattr(settings, name, value)


# --- the HTTPS endpoint ---------------------------------------------------------------------

class Service:
    """What an emulated system implements."""

    name = "service"
    settings: Any = None

    def handle(self, request: Request) -> Response:  # pragma: no cover - interface
        raise NotImplementedError

    def summary(self, request: Request) -> str:
        """A one-line description of a request, used by fault matching and the request log."""
        return f"{request.method} {request.path}"

    def fault_response(self, status: int, retry_after: Optional[float]) -> Response:
        headers = [("Retry-After", _retry_after_text(retry_after))] if retry_after else []
        return Response(status, f"{status} injected fault\n".encode(), "text/plain", headers)

    def internal_error(self) -> Response:
        return Response(503, b"temporarily unavailable\n", "text/plain")

    def control(self, action: str, body: Dict[str, Any]) -> Any:
        raise ValueError(f"unknown action {action!r}")


def _retry_after_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class RequestLog:
    """JSON lines, one per request, in a file and in memory."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self.entries: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        if path:
            open(path, "a", encoding="utf-8").close()

    def write(self, entry: Dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self.entries.append(entry)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], endpoint: "Endpoint") -> None:
        self.endpoint = endpoint
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so one slow or broken
        # client cannot stall the accept loop.
        request.settimeout(30)
        # Headers and body go out in one write, and small writes are not held back: without
        # this, delayed ACKs cap a keep-alive client at ~25 requests per second.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.endpoint.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("%s: TLS handshake failed: %s", self.endpoint.service.name, exc)
            return
        super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: connection error from %s", self.endpoint.service.name, client_address,
                  exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PaloAltoFW-Lab"
    sys_version = ""
    timeout = 120
    server: _Server
    _headers_buffer: List[bytes]  # BaseHTTPRequestHandler's own, written to directly below

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _serve(self) -> None:
        endpoint = self.server.endpoint
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._send(Response(411, b"length required\n", "text/plain"), close=True)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(Response(413, b"bad or too large Content-Length\n", "text/plain"),
                       close=True)
            return
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        der = None
        if isinstance(self.connection, ssl.SSLSocket):
            der = self.connection.getpeercert(binary_form=True)
        request = Request(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                          self.headers, body, der)
        response = endpoint.dispatch(request)
        if response.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            self._send(response, head=self.command == "HEAD")
        if response.entry is not None:
            for observer in list(endpoint.observers):
                observer(response.entry)

    def _send(self, response: Response, close: bool = False, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self._headers_buffer.append(b"\r\n")  # end of headers, as end_headers() would
        if not head:
            self._headers_buffer.append(response.body)
        self.flush_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve


class Endpoint:
    """One service on one TLS port."""

    def __init__(self, service: Service, ssl_context: ssl.SSLContext, host: str = "127.0.0.1",
                 port: int = 0, request_log: "Union[str, RequestLog, None]" = None,
                 control_token: str = "", public_host: Optional[str] = None) -> None:
        self.service = service
        self.ssl_context = ssl_context
        self.faults = Faults()
        # Several endpoints may share one log (a fleet of firewalls writes one file).
        self.log = request_log if isinstance(request_log, RequestLog) else \
            RequestLog(request_log)
        self.control_token = control_token
        self.internal_errors = 0
        # Called with each request as it arrives, and with its log entry once the answer
        # has been sent (or dropped): the crash tests count calls and kill the agent there.
        self.arrival_observers: List[Any] = []
        self.observers: List[Any] = []
        self._server = _Server((host, port), self)
        self.host = public_host or host
        self.port = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def start(self) -> "Endpoint":
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name=f"lab-{self.service.name}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request path --------------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        started = time.monotonic()
        for observer in list(self.arrival_observers):
            observer(request)
        if request.path.startswith("/_lab/"):
            response = self._control(request)
            summary = f"{request.method} {request.path}"
        else:
            try:
                summary = self.service.summary(request)
            except Exception:  # a summary must never break serving
                summary = f"{request.method} {request.path}"
            response = self._faulted(request, summary)
        entry: Dict[str, Any] = {"ts": round(time.time(), 4), "service": self.service.name,
                                 "port": self.port, "method": request.method,
                                 "path": request.path, "summary": summary,
                                 "status": response.status,
                                 "ms": round((time.monotonic() - started) * 1000, 1)}
        if response.drop:
            entry["dropped"] = True
        entry.update(response.log)
        entry.update(request.meta)
        if not request.path.startswith("/_lab/"):
            self.log.write(entry)
            response.entry = entry
        return response

    def _faulted(self, request: Request, summary: str) -> Response:
        latency = float(getattr(self.service.settings, "latency", 0.0) or 0.0)
        if latency:
            time.sleep(latency)
        lose = False
        for rule in self.faults.take(summary):
            if rule.kind == "delay":
                time.sleep(rule.seconds)
            elif rule.kind == "drop":
                return Response(drop=True, log={"fault": "drop"})
            elif rule.kind == "lose":
                lose = True
            else:
                response = self.service.fault_response(rule.status, rule.retry_after)
                response.log["fault"] = f"status {rule.status}"
                return response
        try:
            response = self.service.handle(request)
        except Exception:
            self.internal_errors += 1
            log.exception("%s: internal error on %s", self.service.name, summary)
            response = self.service.internal_error()
        if lose:
            response.drop = True
            response.log["fault"] = "lose"
        return response

    def _control(self, request: Request) -> Response:
        """The lab's own API: `GET /_lab/state`, `POST /_lab/faults` (a FaultRule as JSON),
        `DELETE /_lab/faults`, `POST /_lab/settings` ({name: value}), and
        `POST /_lab/action/<name>` for service actions. Requires the control token in the
        `X-Lab-Control` header, so that nothing reaches it by accident."""
        token = request.header("X-Lab-Control") or ""
        if not self.control_token or not hmac.compare_digest(token, self.control_token):
            return _json(403, {"error": "missing or wrong X-Lab-Control token"})
        try:
            data = json.loads(request.body or b"{}")
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            route = request.path[len("/_lab/"):]
            if route == "state" and request.method == "GET":
                return _json(200, {"faults": self.faults.snapshot(),
                                   "settings": vars(self.service.settings),
                                   "internal_errors": self.internal_errors})
            if route == "faults" and request.method == "POST":
                self.faults.add(FaultRule.from_dict(data))
                return _json(200, {"faults": self.faults.snapshot()})
            if route == "faults" and request.method == "DELETE":
                self.faults.clear()
                return _json(200, {"faults": []})
            if route == "settings" and request.method == "POST":
                for name, value in data.items():
                    apply_setting(self.service.settings, name, value)
                return _json(200, {"settings": vars(self.service.settings)})
            if route.startswith("action/") and request.method == "POST":
                return _json(200, {"result": self.service.control(route[len("action/"):], data)})
            return _json(404, {"error": f"no control route {request.method} {request.path}"})
        except (ValueError, TypeError, KeyError) as exc:
            return _json(400, {"error": str(exc)})


def _json(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, default=str).encode(), "application/json")


def server_ssl_context(cert_path: str, key_path: str,
                       client_ca_pem: Optional[str] = None) -> ssl.SSLContext:
    """TLS 1.2+ server context; with `client_ca_pem`, client certificates are requested (and
    verified against it) but optional, as on SCM where only `/private` routes need one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    if client_ca_pem:
        context.load_verify_locations(cadata=client_ca_pem)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


