"""The switches of the emulated SCM (`--set scm.NAME=VALUE`, `POST /_lab/settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

PENDING_STYLES = ("rotate", "code0", "-1400", "-183")
BAD_ISSUANCE_MODES = ("wrong_key", "missing_names", "broken_chain", "expired", "not_yet_valid")


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
