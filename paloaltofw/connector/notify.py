"""Alerts after a run: e-mail (SMTP with STARTTLS and login) and a webhook (JSON POST, as
Slack- and Teams-style incoming webhooks take it), when certificates failed, or when the run
left a certificate within `expiry_warning_days` of expiry.

A failing alert is logged and never changes the run's result or exit code.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import Callable, List, Optional

import requests

from . import http, rest
from .settings import EmailSettings, NotificationSettings, TlsSettings, WebhookSettings
from .results import Outcome, Report, State
from .report import days_left

log = logging.getLogger(__name__)


def problems(report: Report, warning_days: int, now: dt.datetime) -> List[str]:
    """One line per certificate that needs a person: failed, or expiring and not renewed."""
    lines = []
    for result in report.results:
        where = f"{result.profile} ({result.firewall}, {result.object or '-'})"
        left = days_left(result, now)
        if result.failed:
            lines.append(f"FAILED {where}: {result.message}")
        elif result.state in (State.REVOKED, State.EXPIRED) and \
                result.outcome is not Outcome.CHANGED:
            lines.append(f"{result.state.upper()} {where}: not replaced by this run"
                         + (f" ({result.message})" if result.message else ""))
        elif left is not None and left <= warning_days and result.outcome is not Outcome.CHANGED:
            lines.append(f"EXPIRES in {left} days {where}: not renewed by this run"
                         + (f" ({result.message})" if result.message else ""))
    return lines


def notify(settings: NotificationSettings, report: Report, command: str,
           redact: Callable[[str], str] = lambda s: s,
           now: Optional[dt.datetime] = None) -> None:
    lines = problems(report, settings.expiry_warning_days,
                     now or dt.datetime.now(dt.timezone.utc))
    if not lines:
        return
    host = socket.gethostname()
    lines = [redact(line) for line in lines]
    subject = f"paloaltoagent on {host}: {len(lines)} certificate(s) need attention"
    body = "\n".join([f"paloaltoagent {command} on {host}, "
                      f"{report.started:%Y-%m-%d %H:%M} UTC:", ""] + lines)
    if settings.email:
        try:
            send_email(settings.email, subject, body)
            log.info("alert e-mailed to %s", ", ".join(settings.email.recipients))
        except Exception as exc:  # an alert must never break the run's own report
            log.error("could not send the alert e-mail via %s: %s: %s", settings.email.host,
                      type(exc).__name__, redact(str(exc)))
    if settings.webhook:
        try:
            post_webhook(settings.webhook, subject, body, lines)
            log.info("alert posted to the webhook")
        except Exception as exc:
            log.error("could not post the alert to the webhook: %s",
                      http.describe(exc) if isinstance(exc, requests.RequestException)
                      else f"{type(exc).__name__}: {redact(str(exc))}")


def send_email(settings: EmailSettings, subject: str, body: str) -> None:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message.set_content(body)
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
        smtp.ehlo()
        if settings.starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=settings.ca_bundle))
            smtp.ehlo()
        if settings.username and settings.password:
            smtp.login(settings.username, settings.password.reveal())
        smtp.send_message(message)


def post_webhook(settings: WebhookSettings, subject: str, body: str, lines: List[str]) -> None:
    """`text` is what Slack and Teams incoming webhooks display; `lines` is for others."""
    # WRITE: a POST that may have arrived is not sent again (no duplicate alerts).
    session = rest.Session(TlsSettings(ca_bundle=settings.ca_bundle), http.WRITE)
    response = session.post(settings.url.reveal(), timeout=settings.timeout,
                            json={"text": f"{subject}\n{body}", "lines": lines})
    if response.status_code >= 300:
        raise ValueError(f"the webhook answered HTTP {response.status_code}")
