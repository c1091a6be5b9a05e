"""HTTP sessions for the firewall and SCM clients: TLS as configured, retries by urllib3.

Two rules every request follows:

* TLS verification is what the profile says, always. requests lets the environment
  (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`) replace a session's `verify`, which would silently
  swap a firewall's pinned CA bundle for the system one; `Session` here does not allow that.
  Proxies from the environment still apply (management networks often need them).
* Retries are urllib3's `Retry`: backoff, and `Retry-After` honoured on 429/503. Requests that
  place an order (billable) use `BILLABLE`, which retries only when the request demonstrably
  did not reach the server (connection refused) or the server said it did not process it
  (429/503); a timeout or reset after sending is never retried, because it may have ordered.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import urllib.request
import warnings
from typing import Any, Dict, Iterator, Optional, Union

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning, NewConnectionError
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


class _PinnedAdapter(HTTPAdapter):
    """Accepts exactly the server certificate with the given SHA-256 fingerprint (urllib3's
    `assert_fingerprint`), for management interfaces with self-signed certificates."""

    def __init__(self, fingerprint: str, **kwargs: Any) -> None:
        self._fingerprint = fingerprint
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


class _SharedContextAdapter(HTTPAdapter):
    """Verifies with a ready SSLContext that already holds the trusted CAs, instead of the
    bundle path that requests hands urllib3, which loads it again for every new connection.
    requests documents this override (`build_connection_pool_key_attributes`)."""

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                             cert: Any = None) -> Any:
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        if verify:
            pool.pop("ca_certs", None)
            pool.pop("ca_cert_dir", None)
            pool["ssl_context"] = self._context
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        if verify:  # the context holds the CAs; a path here would be loaded again
            conn.ca_certs = conn.ca_cert_dir = None


class Shared:
    """What the sessions of one run share, prepared once instead of per connection.

    * One SSLContext per trust setting. urllib3 builds a context and loads the CA bundle for
      every new connection: about 0.7 ms for a one-certificate bundle and 30 ms for the
      system bundle, which a fleet would pay once or twice per firewall.
    * The environment's proxy settings: when it sets none, which is usual, no per-host
      lookup is needed (requests scans the whole environment twice per lookup)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contexts: Dict[TlsSettings, Optional[ssl.SSLContext]] = {}
        self._environment_has_proxies = bool(urllib.request.getproxies())

    def proxies(self, url: str) -> Dict[str, str]:
        if not self._environment_has_proxies:
            return {}
        return requests.utils.get_environ_proxies(url)

    def context(self, tls: TlsSettings) -> Optional[ssl.SSLContext]:
        """The verifying context for `tls` (None: pinned or not verifying, or the bundle
        does not load, in which case requests reports the problem at the first request, as
        it always did)."""
        bundle = tls.ca_bundle or (requests.utils.DEFAULT_CA_BUNDLE_PATH if tls.verify
                                   else None)
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


class Session(requests.Session):
    """A session whose TLS verification cannot be changed by environment variables.

    With `host` (a session that talks to one server, like a firewall's), the proxy settings
    of the environment (`https_proxy`, `no_proxy`) are looked up once, by requests' own
    helper, instead of at every request; ~/.netrc is not consulted then. With `shared`, the
    TLS context and the proxy settings come from what the run shares."""

    def __init__(self, tls: TlsSettings, retry: Retry = SAFE, pool_size: int = 4,
                 host: Optional[str] = None, shared: Optional[Shared] = None) -> None:
        super().__init__()
        self.headers["User-Agent"] = USER_AGENT
        if host:
            self.proxies = shared.proxies(host) if shared else \
                requests.utils.get_environ_proxies(host)
            self.trust_env = False
        self._pinned = bool(tls.fingerprint)
        # Through a proxy, urllib3 verifies the proxy's own TLS with the pool's CA path, which
        # the shared-context adapter clears: proxied sessions keep requests' usual path. So do
        # requests releases without the documented hook (before 2.32), where clearing it
        # would fall back to the system store.
        direct = host is not None and not requests.utils.select_proxy(host, self.proxies)
        context = shared.context(tls) if shared and direct and hasattr(
            HTTPAdapter, "build_connection_pool_key_attributes") else None
        if tls.fingerprint:
            adapter: HTTPAdapter = _PinnedAdapter(tls.fingerprint, max_retries=retry,
                                                  pool_maxsize=pool_size)
            self.verify = False  # the pin replaces chain validation
        else:
            adapter = _SharedContextAdapter(context, max_retries=retry,
                                            pool_maxsize=pool_size) if context else \
                HTTPAdapter(max_retries=retry, pool_maxsize=pool_size)
            self.verify = tls.ca_bundle if tls.ca_bundle else tls.verify
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify
        return settings

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        if self._pinned or self.verify is False:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                return super().request(*args, **kwargs)
        return super().request(*args, **kwargs)


def never_sent(exc: BaseException) -> bool:
    """True when a transport error proves the request never reached the server: the TCP
    connection failed, or the server's certificate was refused (a TLS error while reading
    the answer, a timeout or a reset after connecting may come after it was processed)."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.InvalidURL,
                        requests.exceptions.MissingSchema)):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):  # SSLError is one too
        return False
    for cause in _causes(exc):
        if isinstance(cause, (NewConnectionError, ssl.SSLCertVerificationError)):
            return True
        # urllib3 checks a fingerprint pin after the handshake, before sending anything.
        if "Fingerprints did not match" in str(cause):
            return True
    return False


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (__cause__, __context__, urllib3's reason)."""
    seen = set()
    cause: Optional[BaseException] = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        reason = getattr(cause, "reason", None)
        cause = cause.__cause__ or cause.__context__ or (
            reason if isinstance(reason, BaseException) else None)


def describe(exc: Union[requests.RequestException, Exception], url: Optional[str] = None) -> str:
    """A short, secret-free description of a transport error."""
    target = f" to {url}" if url else ""
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS verification failed{target}: check ca_bundle / fingerprint ({_root(exc)})"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connection timed out{target}"
    if isinstance(exc, requests.exceptions.ReadTimeout) or "timed out" in _root(exc):
        return f"no answer in time{target}"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"connection failed{target}: {_root(exc)}"
    return f"request failed{target}: {type(exc).__name__}"


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc)
    return text.split("] ", 1)[-1][:160] if text else type(exc).__name__
