"""HTTP for the device and SCM clients: TLS as configured, retries by urllib3.

Two rules every request follows:

* TLS verification is what the profile says, always: the profile's CA bundle (or certifi's,
  requests' default, when it names none), its fingerprint pin, or off when it says so.
  Environment variables (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`) never replace it. Proxies
  from the environment still apply (management networks often need them).
* Retries are urllib3's `Retry`: backoff, and `Retry-After` honoured on 429/503. Requests that
  place an order (billable) use `BILLABLE`, which retries only when the request demonstrably
  did not reach the server (connection refused) or the server said it did not process it
  (429/503); a timeout or reset after sending is never retried, because it may have ordered.

Devices (firewalls, Panorama) are reached through urllib3 directly (`Server`); SCM and
webhooks, JSON APIs with OAuth, through requests (`rest.Session`). A no-op run sends one
request per firewall, and requests' own work per request (merging session settings, hooks,
cookies, runtime checks of every argument) was about a fifth of such a run's CPU
(bench/fleet.py, issue "Fleet cost"); it is not even imported when nothing is ordered.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import ssl
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote, urlencode, urlsplit

import certifi
import urllib3
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, InsecureRequestWarning,
                                LocationValueError, NewConnectionError, ProxyError,
                                ReadTimeoutError, SSLError)
from urllib3.fields import RequestField
from urllib3.filepost import encode_multipart_formdata
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

from .settings import TlsSettings

log = logging.getLogger(__name__)

USER_AGENT = "paloaltoagent"

# Reads and idempotent writes: retry connection problems and transient statuses.
# A server's Retry-After is honoured up to RETRY_AFTER_MAX seconds (urllib3's own default is
# hours): beyond that the certificate fails this run and the next run tries again.
RETRY_AFTER_MAX = 120
SAFE = Retry(total=5, connect=3, read=2, other=0, status=4, backoff_factor=0.5, backoff_max=30,
             status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
             respect_retry_after_header=True, retry_after_max=RETRY_AFTER_MAX,
             raise_on_status=False)
# Firewall writes (commit, generate, import, set): a repeat is not harmless (a second commit
# or generate), so only connection failures before sending, and "busy" answers, are retried.
WRITE = Retry(total=3, connect=3, read=0, other=0, status=2, backoff_factor=1, backoff_max=30,
              status_forcelist=(429, 503), allowed_methods=None,
              respect_retry_after_header=True, retry_after_max=RETRY_AFTER_MAX,
              raise_on_status=False)
# Orders: only what cannot have been processed.
BILLABLE = Retry(total=4, connect=3, read=0, other=0, status=4, backoff_factor=1,
                 backoff_max=60, status_forcelist=(429, 503), allowed_methods=None,
                 respect_retry_after_header=True, retry_after_max=RETRY_AFTER_MAX,
                 raise_on_status=False)


def default_bundle() -> str:
    """The CA bundle of `verify_tls: true` without a `ca_bundle`: certifi's, as requests
    uses (requests.utils.DEFAULT_CA_BUNDLE_PATH)."""
    return certifi.where()


class Shared:
    """What the device connections of one run share, prepared once instead of per connection.

    * One SSLContext per trust setting. urllib3 builds a context and loads the CA bundle for
      every new connection: about 0.7 ms for a one-certificate bundle and 30 ms for the
      system bundle, which a fleet would pay once or twice per firewall.
    * Whether the environment names proxies at all: usually it does not, and then no
      per-host lookup is needed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: Dict[TlsSettings, Optional[ssl.SSLContext]] = {}
        # The names urllib.request.getproxies() reads (https_proxy, no_proxy, ALL_PROXY...).
        self._environment_has_proxies = any(name.lower().endswith("_proxy")
                                            for name in os.environ)

    def proxy(self, url: str) -> Optional[str]:
        """The proxy the environment names for `url`, by requests' rules (`no_proxy` with
        host names, domain suffixes and CIDR ranges), or None: connect directly."""
        if not self._environment_has_proxies:
            return None
        from requests.utils import get_environ_proxies, prepend_scheme_if_needed, select_proxy
        proxy: Optional[str] = select_proxy(url, get_environ_proxies(url))
        if not proxy:
            return None
        # `proxy.example:3128` means http://, as requests reads it.
        return str(prepend_scheme_if_needed(proxy, "http"))  # type: ignore[no-untyped-call]

    def context(self, tls: TlsSettings) -> Optional[ssl.SSLContext]:
        """The verifying context for `tls` (None: pinned or not verifying, or the bundle
        does not load, in which case urllib3 reports the problem at the first connection)."""
        bundle = tls.ca_bundle or (default_bundle() if tls.verify else None)
        if tls.fingerprint or not bundle:
            return None
        with self._lock:
            if tls not in self._contexts:
                self._contexts[tls] = _verifying_context(bundle)
            return self._contexts[tls]


def _verifying_context(bundle: str) -> Optional[ssl.SSLContext]:
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    try:
        if os.path.isdir(bundle):
            context.load_verify_locations(capath=bundle)
        else:
            context.load_verify_locations(cafile=bundle)
    except (OSError, ssl.SSLError):
        return None
    return context


@dataclass(frozen=True)
class Answer:
    """A server's answer, read in full."""

    status: int
    content_type: str
    body: bytes


class Unanswered(Exception):
    """A request that got no HTTP answer; the text is `describe`'s (secret-free)."""


class Server:
    """One device's HTTPS endpoint, through urllib3 directly: connections kept for the run,
    TLS as its profile says, a proxy from the environment as requests would choose it
    (`Shared.proxy`), the retry policy given per request, and redirects never followed (the
    XML API does not redirect, and a redirect would carry the API key elsewhere). Writes have
    their own connections, as they had with requests: the first write of a run does not go
    out on a connection left idle since the reads (while SCM issued), which a firewall or a
    NAT may have dropped without a word, failing a commit that must not be sent again."""

    def __init__(self, url: str, tls: TlsSettings, shared: Shared, pool_size: int = 4) -> None:
        self.url = url
        self._tls, self._shared, self._pool_size = tls, shared, pool_size
        self._verified = bool(tls.fingerprint or tls.ca_bundle or tls.verify)
        self._pools: Dict[bool, urllib3.HTTPConnectionPool] = {}  # by "for writes"

    def _pool(self, write: bool) -> urllib3.HTTPConnectionPool:
        """Made at first use, so that a proxy setting urllib3 cannot use fails this device's
        request (with `describe`'s text), not the run."""
        if write not in self._pools:
            self._pools[write] = self._make_pool()
        return self._pools[write]

    def _make_pool(self) -> urllib3.HTTPConnectionPool:
        tls, url = self._tls, self.url
        proxy = self._shared.proxy(url)
        options: Dict[str, Any] = {"maxsize": self._pool_size}
        if tls.fingerprint:
            # The pin replaces chain validation: urllib3 compares the server certificate's
            # SHA-256 right after the handshake, before anything is sent (also through a
            # proxy, where requests' pinned adapter did not apply it).
            options.update(cert_reqs="CERT_NONE", assert_fingerprint=tls.fingerprint)
        elif not self._verified:
            options.update(cert_reqs="CERT_NONE", assert_hostname=False)
        else:
            options["cert_reqs"] = "CERT_REQUIRED"
            # Through an HTTPS proxy urllib3 also checks the proxy's own certificate, with
            # the pool's CA path (so the profile's trust, as with requests): proxied
            # connections keep the path rather than the shared context.
            context = None if proxy else self._shared.context(tls)
            bundle = tls.ca_bundle or default_bundle()
            if context is not None:
                options["ssl_context"] = context
            elif os.path.isdir(bundle):
                options["ca_cert_dir"] = bundle
            else:
                options["ca_certs"] = bundle
        return _connection_pool(url, proxy, options)

    def post(self, path: str, retry: Retry, timeout: float, headers: Dict[str, str],
             form: Optional[Dict[str, str]] = None, query: Optional[Dict[str, str]] = None,
             files: Optional[Dict[str, Tuple[str, bytes]]] = None,
             write: bool = False) -> Answer:
        """POST `form` urlencoded, or `files` as multipart/form-data (each part without a
        Content-Type, as requests and pan-python send it), with `query` in the URL; `write`
        on the connections for writes."""
        target = path + ("?" + urlencode(query) if query else "")
        # requests' default headers, which the agent sent before.
        sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate", "Accept": "*/*",
                **headers}
        body: bytes
        if files:
            parts: List[RequestField] = []
            for name, (filename, content) in files.items():
                part = RequestField(name=name, data=content, filename=filename)
                part.make_multipart()
                parts.append(part)
            body, sent["Content-Type"] = encode_multipart_formdata(parts)
        else:
            body = urlencode(form or {}).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            with contextlib.ExitStack() as quiet:
                # urllib3 warns at every unverified request; the run warns once per firewall
                # (verify_tls: false). catch_warnings is not thread-safe: only those use it.
                if not self._verified:
                    quiet.enter_context(warnings.catch_warnings())
                    warnings.simplefilter("ignore", InsecureRequestWarning)
                response = self._pool(write).urlopen(
                    "POST", target, body=body, headers=sent, retries=retry, redirect=False,
                    timeout=urllib3.Timeout(connect=timeout, read=timeout))
        except ImportError:  # urllib3.contrib.socks without PySocks
            raise Unanswered(f"the SOCKS proxy for {self.url} needs PySocks "
                             "(pip install pysocks), as requests does") from None
        except (HTTPError, OSError, ValueError) as exc:
            raise Unanswered(describe(exc, self.url)) from None
        return Answer(response.status, response.headers.get("Content-Type", ""),
                      response.data)


def _connection_pool(url: str, proxy: Optional[str],
                     options: Dict[str, Any]) -> urllib3.HTTPConnectionPool:
    if proxy is None:
        return urllib3.connection_from_url(url, **options)
    manager: urllib3.PoolManager
    if proxy.lower().startswith("socks"):
        # SOCKS needs PySocks, as it does for requests; the credentials come from the URL.
        if importlib.util.find_spec("socks") is None:  # urllib3 would warn on stderr first
            raise ImportError("PySocks is not installed")
        from urllib3.contrib.socks import SOCKSProxyManager
        manager = SOCKSProxyManager(proxy, num_pools=1, **options)
    else:
        parts = urlsplit(proxy)
        credentials = urllib3.make_headers(
            proxy_basic_auth=f"{unquote(parts.username)}:{unquote(parts.password or '')}") \
            if parts.username else None
        manager = urllib3.ProxyManager(proxy, num_pools=1, proxy_headers=credentials,
                                       **options)
    return manager.connection_from_url(url)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (__cause__, __context__, urllib3's reason)."""
    seen = set()
    cause: Optional[BaseException] = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        reason = getattr(cause, "reason", None)
        cause = cause.__cause__ or cause.__context__ or (
            reason if isinstance(reason, BaseException) else None)


def describe(exc: BaseException, url: Optional[str] = None) -> str:
    """A short, secret-free description of a transport error, from urllib3 or from requests
    (whose errors wrap urllib3's)."""
    target = f" to {url}" if url else ""
    chain = list(causes(exc))

    def found(*types: type) -> bool:
        return any(isinstance(cause, types) for cause in chain)

    if found(LocationValueError) or (isinstance(exc, ValueError) and not found(HTTPError)):
        # A URL or header value refused before sending (a proxy URL urllib3 cannot read, a
        # line break in an API key): its text would repeat the value, perhaps a secret.
        return (f"request not sent{target}: {type(exc).__name__} (a URL or header value "
                "that HTTP does not allow)")
    if _handshake_failed(chain):
        return (f"TLS handshake failed{target} ({_root(exc)}): not a trust problem; check "
                "that the URL names the server's HTTPS port; a one-off failure is tried again "
                "by the next run")
    if found(SSLError, ssl.SSLError):
        return f"TLS verification failed{target}: check ca_bundle / fingerprint ({_root(exc)})"
    if found(ProxyError):
        return f"connection through the proxy failed{target}: {_root(exc)}"
    if found(NewConnectionError):  # urllib3 makes it a ConnectTimeoutError too: first
        return f"connection failed{target}: {_root(exc)}"
    if found(ConnectTimeoutError):
        return f"connection timed out{target}"
    if found(ReadTimeoutError) or "timed out" in _root(exc):
        return f"no answer in time{target}"
    # requests' own errors are OSErrors too (an InvalidURL is no connection failure); its
    # connection errors wrap urllib3's.
    if found(HTTPError) or (isinstance(exc, OSError) and
                            not type(exc).__module__.startswith("requests.")):
        return f"connection failed{target}: {_root(exc)}"
    return f"request failed{target}: {type(exc).__name__}"


def _handshake_failed(chain: List[BaseException]) -> bool:
    """Whether the TLS handshake itself failed (the server sent an alert, closed the
    connection mid-handshake, or answered in something other than TLS), as opposed to the
    server's certificate being refused (SSLCertVerificationError, urllib3's fingerprint
    mismatch, which is no ssl.SSLError) or a CA bundle failing to load (OpenSSL's X509 and PEM
    libraries). Those keep "TLS verification failed"; a handshake failure named so would send
    an administrator to change a trust setting that is fine (seen: 'wrong version number'
    from a plain-HTTP port, a one-off 'tlsv1 alert decode error' in a fleet run)."""
    tls = [cause for cause in chain if isinstance(cause, ssl.SSLError)]
    if not tls or any(isinstance(cause, ssl.SSLCertVerificationError) for cause in tls):
        return False
    return all(isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or
               getattr(cause, "library", None) == "SSL" for cause in tls)


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    return text.split("] ", 1)[-1][:160] if text else type(exc).__name__
