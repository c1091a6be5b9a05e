"""The account the emulated SCM serves: its credentials, organization record, certificate
profiles ("certificate types") and custom fields."""

from __future__ import annotations

import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


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
