"""A ready-to-run agent configuration wired to a running lab.

`write_workdir(lab, directory)` writes `config.yaml`, the firewall profile file, the SCM
credentials and three certificate profiles (DV/RSA-2048 bound to an SSL/TLS service profile,
OV/ECDSA-P384, EV/RSA-4096) into `directory`, in exactly the format an administrator writes by
hand (see the README's configuration reference). Secrets are written with mode 0600.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import yaml

from .lab import AGENT_ADMIN, PANORAMA_PROFILE, SEED_PROFILE, TEMPLATE_PROFILE, Lab

# The device profiles `lab --panorama N` writes (fw_panorama.yaml).
PANORAMA_DEVICE = "lab-panorama"
TEMPLATE_DEVICE = "lab-template"
PANORAMA_CERTIFICATE_PROFILES = ("branch-portal", "panorama-ui", "remote-portal")

HEADER = ("# Written by `paloaltoagent.py lab`: wired to the running lab, with the lab's\n"
          "# (throw-away) credentials. Edit freely; see the README for every field.\n")

CERTIFICATE_PROFILES: Dict[str, Dict[str, Any]] = {
    "portal-dv-rsa2048": {
        "firewall": "lab-fw-01",
        "object_name": "portal-example-com",
        "validation": "DV",
        "common_name": "portal.example.com",
        "subject_alt_names": ["vpn.example.com"],
        "key": "RSA-2048",
        "scm": {"term": 90},
        "ssl_tls_service_profiles": [SEED_PROFILE],
    },
    "intranet-ov-p384": {
        "firewall": "lab-fw-01",
        "object_name": "intranet-example-com",
        "validation": "OV",
        "common_name": "intranet.example.com",
        "subject_alt_names": ["wiki.example.com", "tickets.example.com"],
        "subject": {"organization": "Example Corp", "locality": "Springfield",
                    "state": "Oregon", "country": "US"},
        "key": "ECDSA-P384",
        "digest": "sha384",
        "scm": {"term": 180, "comments": "Intranet portal"},
    },
    "shop-ev-rsa4096": {
        "firewall": "lab-fw-01",
        "object_name": "shop-example-com",
        "validation": "EV",
        "common_name": "shop.example.com",
        "subject_alt_names": ["www.shop.example.com"],
        "subject": {"organization": "Example Corp", "locality": "Springfield",
                    "state": "Oregon", "country": "US"},
        "key": "RSA-4096",
        "scm": {"term": 200},
    },
}


class Quoted(str):
    """A value written in double quotes, as the README asks for serial numbers (a bare
    `serial: 0017010...` is read by YAML as a number)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Quoted, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", str(value), style='"'))


def _write(path: str, data: Dict[str, Any], secret: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(HEADER)
        yaml.dump(data, handle, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    os.chmod(path, 0o600 if secret else 0o644)


def write_workdir(lab: Lab, directory: str, api: str = "enrollment") -> str:
    """Write the configuration; return the path of config.yaml."""
    directory = os.path.abspath(directory)
    profiles = os.path.join(directory, "profiles")
    os.makedirs(profiles, exist_ok=True)
    info = lab.info()
    scm = info["scm"]
    label = "ENROLLMENT_API_1" if api == "enrollment" else "ADMIN_API_1"
    config = {
        "profiles_dir": "profiles",
        "state_dir": "state",
        "scm": {"credentials_file": "profiles/sectigo_credentials.yaml",
                "credentials_label": label,
                "lookup_label": "ADMIN_API_1",
                "ca_bundle": info["ca_bundle"],
                "poll_interval": 1,
                "poll_timeout": 30},
        "logging": {"level": "INFO", "file": "logs/paloaltoagent.log"},
        "renewal": {"days_before_expiry": 30},
    }
    _write(os.path.join(directory, "config.yaml"), config)
    _write(os.path.join(profiles, "sectigo_credentials.yaml"), {
        "ENROLLMENT_API_1": {"client_id": scm["client_id"],
                             "client_secret": scm["client_secret"],
                             "scm_url": scm["enrollment_url"]},
        "ADMIN_API_1": {"scm_url": scm["classic_url"], "scm_user": scm["login"],
                        "scm_password": scm["password"], "scm_uri": scm["customer_uri"],
                        "scm_org_id": scm["org_id"]},
    }, secret=True)
    entries = {firewall["hostname"]: {"url": firewall["url"],
                                      "username": AGENT_ADMIN,
                                      "password": info["panos"]["password"],
                                      "admin": AGENT_ADMIN,
                                      "commit_description": "Certificates by paloaltoagent "
                                                            "(lab)",
                                      "ca_bundle": info["ca_bundle"]}
               for firewall in info["firewalls"]}
    if info["ha_pair"] is not None:  # each names the other: either may be the active one
        first, second = info["ha_pair"]["peers"]
        entries[first]["ha_peer"], entries[second]["ha_peer"] = second, first
    _write(os.path.join(profiles, "fw_paloalto_config.yaml"), entries, secret=True)
    types = scm["cert_types"]
    samples = dict(CERTIFICATE_PROFILES)
    if info["panorama"] is not None:
        samples.update(_write_panorama(lab, info, profiles))
    for name, profile in samples.items():
        data = dict(profile)
        data["scm"] = dict(profile["scm"], profile_id=types[profile["validation"]])
        _write(os.path.join(profiles, f"{name}.yaml"), data)
    return os.path.join(directory, "config.yaml")


def _write_panorama(lab: Lab, info: Dict[str, Any], profiles: str) -> Dict[str, Any]:
    """The three Panorama targets (README, Panorama): Panorama itself, its template, and the
    last managed firewall outside an HA pair, reached through it. Returns their certificate
    profiles."""
    panorama = info["panorama"]
    paired = set(info["ha_pair"]["peers"]) if info["ha_pair"] else set()
    remote = next(f for f in reversed(info["firewalls"]) if f["serial"] in panorama["managed"]
                  and f["hostname"] not in paired)
    remote_device = f"{remote['hostname']}-via-panorama"
    _write(os.path.join(profiles, "fw_panorama.yaml"), {
        PANORAMA_DEVICE: {"type": "panorama", "url": panorama["url"],
                          "username": AGENT_ADMIN, "password": info["panos"]["password"],
                          "admin": AGENT_ADMIN,
                          "commit_description": "Certificates by paloaltoagent (lab)",
                          "ca_bundle": info["ca_bundle"]},
        TEMPLATE_DEVICE: {"type": "panorama-template", "panorama": PANORAMA_DEVICE,
                          "template": panorama["template"]},
        remote_device: {"via": PANORAMA_DEVICE, "serial": Quoted(remote["serial"])},
    }, secret=True)
    dv = {"validation": "DV", "key": "RSA-2048", "scm": {"term": 90}}
    return {
        "branch-portal": dict(dv, firewall=TEMPLATE_DEVICE, object_name="branch-portal",
                              common_name="branch.example.com",
                              ssl_tls_service_profiles=[TEMPLATE_PROFILE]),
        "panorama-ui": dict(dv, firewall=PANORAMA_DEVICE, object_name="panorama-ui",
                            common_name="panorama.example.com",
                            ssl_tls_service_profiles=[PANORAMA_PROFILE]),
        "remote-portal": dict(dv, firewall=remote_device, object_name="remote-portal",
                              common_name="remote.example.com",
                              ssl_tls_service_profiles=[SEED_PROFILE]),
    }
