"""Exceptions with messages an administrator can act on; the CLI maps them to exit codes."""

from __future__ import annotations

from typing import Optional, Sequence


class AgentError(Exception):
    """Base class: something went wrong that the message explains."""


class ConfigError(AgentError):
    """Bad configuration or usage: names the file and field. Exit code 2, nothing sent."""

    def __init__(self, message: str, path: Optional[str] = None,
                 field: Optional[str] = None) -> None:
        where = ": ".join(p for p in (path, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.field = field


class EulaNotAccepted(AgentError):
    """The EULA has not been accepted (exit code 3)."""


class PanosError(AgentError):
    """The firewall refused a request or could not be reached. `refused`: the device
    answered with an error (so it did not do what was asked)."""

    def __init__(self, message: str, code: Optional[str] = None,
                 lines: Sequence[str] = (), refused: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.lines = list(lines)
        self.refused = refused


class ScmError(AgentError):
    """SCM refused a request (code and description from its JSON error) or was unreachable.

    `sent` is False when the request demonstrably never reached SCM (connection refused, name
    resolution, TLS handshake, token refused), None when that cannot be known (a timeout or a
    reset after sending), and True when SCM answered."""

    def __init__(self, message: str, status: Optional[int] = None,
                 code: Optional[int] = None, sent: Optional[bool] = True) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.sent = sent

    @property
    def refused(self) -> bool:
        """SCM answered and refused this request for a reason of its own (an error code with a
        4xx status other than authentication and rate limiting): sending the same request
        again would be refused again, so the request must change first."""
        return self.sent is True and self.status is not None and self.code is not None and \
            400 <= self.status < 500 and self.status not in (401, 403, 408, 429)

    @property
    def placed_nothing(self) -> bool:
        """True when this failure proves that an order request placed no order: it never
        left, or SCM answered with a refusal (a 4xx with its error code, or 429/503)."""
        if self.sent is False:
            return True
        if self.status is None:
            return False
        return (400 <= self.status < 500 and self.code is not None) or \
            self.status in (401, 403, 429, 503)


class OrderRejected(ScmError):
    """The order can no longer produce a certificate (declined, revoked, unknown)."""


class VerificationError(AgentError):
    """The issued certificate failed the checks before import; nothing was imported. `retry`
    marks a failure that may heal by itself (a clock difference)."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class Interrupted(AgentError):
    """SIGINT or SIGTERM asked the run to stop: the step that raises this did not start (or
    stopped waiting for something the device finishes by itself); the state is saved."""
