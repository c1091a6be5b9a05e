"""requests sessions for the JSON APIs (SCM, webhooks), under http.py's rules: TLS verification
is what the settings say (requests lets `REQUESTS_CA_BUNDLE` and `CURL_CA_BUNDLE` replace a
session's `verify`; `Session` here does not), retries are the given urllib3 `Retry` policy.

Imported only when SCM or a webhook is used: a run with nothing due does not load requests.
"""

from __future__ import annotations

import ssl
import warnings
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning, NewConnectionError
from urllib3.util.retry import Retry

from .http import SAFE, USER_AGENT, causes
from .settings import TlsSettings


class _PinnedAdapter(HTTPAdapter):
    """Accepts exactly the server certificate with the given SHA-256 fingerprint (urllib3's
    `assert_fingerprint`), for servers with self-signed certificates."""

    def __init__(self, fingerprint: str, **kwargs: Any) -> None:
        self._fingerprint = fingerprint
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


class Session(requests.Session):
    """A session whose TLS verification cannot be changed by environment variables."""

    def __init__(self, tls: TlsSettings, retry: Retry = SAFE, pool_size: int = 4) -> None:
        super().__init__()
        self.headers["User-Agent"] = USER_AGENT
        self._pinned = bool(tls.fingerprint)
        if tls.fingerprint:
            adapter: HTTPAdapter = _PinnedAdapter(tls.fingerprint, max_retries=retry,
                                                  pool_maxsize=pool_size)
            self.verify = False  # the pin replaces chain validation
        else:
            adapter = HTTPAdapter(max_retries=retry, pool_maxsize=pool_size)
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
    for cause in causes(exc):
        if isinstance(cause, (NewConnectionError, ssl.SSLCertVerificationError)):
            return True
        # urllib3 checks a fingerprint pin after the handshake, before sending anything.
        if "Fingerprints did not match" in str(cause):
            return True
    return False
