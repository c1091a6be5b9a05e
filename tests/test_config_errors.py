"""Bad input: each case gets exit code 2, one error naming the file and the field, and not a
single request to the firewall or SCM (proved by the lab's request logs)."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Tuple

import pytest
import yaml

CERT = "portal-dv-rsa2048.yaml"
FW = "fw_paloalto_config.yaml"
CREDS = "sectigo_credentials.yaml"


def load(path: str) -> Any:
    with open(path) as handle:
        return yaml.safe_load(handle)


def dump(path: str, data: Any) -> None:
    mode = os.stat(path).st_mode & 0o777
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    os.chmod(path, mode)


def edit(name: str, change: Callable[[Any], None]) -> Callable[[Any], Tuple[str, None]]:
    """Edit a YAML file of the workdir ("config.yaml" or a profiles file)."""
    def apply(work: Any) -> Tuple[str, None]:
        path = work.config if name == "config.yaml" else os.path.join(work.profiles, name)
        data = load(path)
        change(data)
        dump(path, data)
        return path, None
    return apply


def raw(name: str, text: str) -> Callable[[Any], Tuple[str, None]]:
    def apply(work: Any) -> Tuple[str, None]:
        path = work.config if name == "config.yaml" else os.path.join(work.profiles, name)
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)
        return path, None
    return apply


def chmod(name: str, mode: int) -> Callable[[Any], Tuple[str, None]]:
    def apply(work: Any) -> Tuple[str, None]:
        path = os.path.join(work.profiles, name)
        os.chmod(path, mode)
        return path, None
    return apply


def fw(**values: Any) -> Callable[[Any], Tuple[str, None]]:
    def change(data: Dict[str, Any]) -> None:
        for key, value in values.items():
            if value is None:
                data["lab-fw-01"].pop(key, None)
            else:
                data["lab-fw-01"][key] = value
    return edit(FW, change)


def cert(**values: Any) -> Callable[[Any], Tuple[str, None]]:
    def change(data: Dict[str, Any]) -> None:
        for key, value in values.items():
            if value is None:
                data.pop(key, None)
            elif isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
    return edit(CERT, change)


def creds(block: str, **values: Any) -> Callable[[Any], Tuple[str, None]]:
    def change(data: Dict[str, Any]) -> None:
        for key, value in values.items():
            if value is None:
                data[block].pop(key, None)
            else:
                data[block][key] = value
    return edit(CREDS, change)


def config(section: str, **values: Any) -> Callable[[Any], Tuple[str, None]]:
    def change(data: Dict[str, Any]) -> None:
        target = data.setdefault(section, {}) if section else data
        target.update(values)
    return edit("config.yaml", change)


def both(*changes: Callable[[Any], Any]) -> Callable[[Any], Tuple[str, None]]:
    def apply(work: Any) -> Tuple[str, None]:
        for change in changes:
            change(work)
        return work.config, None
    return apply


# (case id, how to break the configuration, file whose name the message must show, words)
CASES: List[Tuple[str, Callable[[Any], Any], str, List[str]]] = [
    ("config-malformed-yaml", raw("config.yaml", "scm: [unclosed\n"), "config.yaml",
     ["invalid YAML", "line"]),
    ("config-unknown-field", config("", profile_dir="x"), "config.yaml",
     ["profile_dir", "did you mean 'profiles_dir'"]),
    ("config-log-level", config("logging", level="LOUD"), "config.yaml", ["logging.level"]),
    ("config-timeout-type", config("scm", timeout="fast"), "config.yaml",
     ["scm.timeout", "number"]),
    ("config-negative-window", config("renewal", days_before_expiry=-1), "config.yaml",
     ["renewal.days_before_expiry", "at least 0"]),
    ("config-no-profiles-dir", config("", profiles_dir="nowhere"), "config.yaml",
     ["profiles_dir", "not found"]),
    ("config-unknown-credentials-block", config("scm", credentials_label="ENROLMENT_API_1"),
     CREDS, ["ENROLMENT_API_1", "did you mean 'ENROLLMENT_API_1'"]),
    ("config-public-key-without-recipient", config("encryption", mode="public-key"),
     "config.yaml", ["encryption.recipient", "required"]),
    ("config-unsafe-yaml-tag", raw("config.yaml", "profiles_dir: !!python/object/apply:os.system"
                                                  " ['true']\n"), "config.yaml",
     ["invalid YAML"]),
    ("creds-missing-secret", creds("ENROLLMENT_API_1", client_secret=None), CREDS,
     ["ENROLLMENT_API_1.client_secret", "required"]),
    ("creds-plain-http", creds("ENROLLMENT_API_1", scm_url="http://scm.example.com/api/v1"),
     CREDS, ["ENROLLMENT_API_1.scm_url", "https://"]),
    ("creds-unknown-field", creds("ENROLLMENT_API_1", client_secrt="x"), CREDS,
     ["client_secrt", "did you mean 'client_secret'"]),
    ("creds-readable-by-others", chmod(CREDS, 0o644), CREDS, ["chmod 600"]),
    ("fw-no-address", fw(url=None), FW, ["lab-fw-01.url"]),
    ("fw-no-credentials", fw(username=None, password=None), FW,
     ["lab-fw-01.api_key", "username and password"]),
    ("fw-password-without-user", fw(username=None), FW, ["lab-fw-01.username", "together"]),
    ("fw-bad-vsys", fw(vsys="vsys-one"), FW, ["lab-fw-01.vsys"]),
    ("fw-bad-fingerprint", fw(fingerprint="ab:cd"), FW, ["lab-fw-01.fingerprint", "SHA-256"]),
    ("fw-missing-ca-bundle", fw(ca_bundle="/nonexistent/ca.pem"), FW,
     ["lab-fw-01.ca_bundle", "not found"]),
    ("fw-duplicate-key", raw(FW, "lab-fw-01:\n  url: https://a\n  url: https://b\n"), FW,
     ["duplicate key 'url'"]),
    ("fw-readable-by-others", chmod(FW, 0o640), FW, ["chmod 600"]),
    ("fw-timeout-negative", fw(timeout=-5), FW, ["lab-fw-01.timeout", "at least"]),
    ("cert-malformed-yaml", raw(CERT, "firewall: [lab-fw-01\n"), CERT, ["invalid YAML"]),
    ("cert-unknown-field", cert(comon_name="x"), CERT,
     ["comon_name", "did you mean 'common_name'"]),
    ("cert-missing-common-name", cert(common_name=None), CERT, ["common_name", "required"]),
    ("cert-unknown-firewall", cert(firewall="lab-fw-1"), CERT,
     ["firewall", "did you mean 'lab-fw-01'"]),
    ("cert-rsa-1024", cert(key="RSA-1024"), CERT, ["key", "not supported", "RSA-2048"]),
    ("cert-ecdsa-224", cert(key="ECDSA-P224"), CERT, ["key", "not supported"]),
    ("cert-object-name-too-long", cert(object_name="o" * 51), CERT,
     ["object_name", "51 characters", "at most 50"]),
    ("cert-object-name-bad-characters", cert(object_name="web/portal"), CERT,
     ["object_name", "not a valid PAN-OS object name"]),
    ("cert-wildcard-object-name", cert(object_name="*.example.com"), CERT,
     ["object_name", "not a valid PAN-OS object name", "example-com"]),
    ("cert-leading-underscore", cert(object_name="_portal"), CERT, ["object_name"]),
    ("cert-validation", cert(validation="XV"), CERT, ["validation", "DV, OV, EV"]),
    ("cert-country", cert(subject={"country": "USA"}), CERT, ["subject.country", "ISO 3166"]),
    ("cert-bad-san", cert(subject_alt_names=["ok.example.com", "not a name!"]), CERT,
     ["subject_alt_names[1]", "not a DNS name"]),
    ("cert-empty-san", cert(subject_alt_names=[""]), CERT,
     ["subject_alt_names[0]", "non-empty"]),
    ("cert-common-name-too-long", cert(common_name="a" * 60 + ".example.com"), CERT,
     ["common_name", "64 characters"]),
    ("cert-term-type", cert(scm={"term": "ninety"}), CERT, ["scm.term", "whole number"]),
    ("cert-no-profile-id", edit(CERT, lambda d: d["scm"].pop("profile_id")), CERT,
     ["scm.profile_id", "required"]),
    ("cert-digest", cert(digest="md5"), CERT, ["digest", "sha256"]),
    ("cert-window-too-long", cert(renew_before_days=5000), CERT,
     ["renew_before_days", "at most"]),
    ("cert-comments-too-long", cert(scm={"comments": "c" * 1025}), CERT,
     ["scm.comments", "1024"]),
    ("cert-custom-field-type", cert(scm={"custom_fields": {"Cost Center": [1]}}), CERT,
     ["scm.custom_fields.Cost Center", "text"]),
    ("cert-service-profile-name", cert(ssl_tls_service_profiles=["bad/name"]), CERT,
     ["ssl_tls_service_profiles[0]"]),
    ("two-profiles-one-object", raw("shop-ev-rsa4096.yaml", yaml.safe_dump({
        "firewall": "lab-fw-01", "object_name": "portal-example-com", "validation": "EV",
        "common_name": "shop.example.com", "scm": {"profile_id": 1}})),
     "shop-ev-rsa4096.yaml", ["object_name", "already managed by", "portal-dv-rsa2048"]),
    ("state-dir-unusable", config("", state_dir=f"profiles/{CREDS}/state"), CREDS,
     ["state directory is not writable"]),
    ("config-log-file-unwritable", config("logging", file=f"profiles/{CREDS}/agent.log"),
     "config.yaml", ["logging.file", "cannot write the log file"]),
    ("config-lookup-not-classic", config("scm", lookup_label="ENROLLMENT_API_1"),
     "config.yaml", ["scm.lookup_label", "classic"]),
    ("fw-bad-host", fw(url=None, host="https://fw.example.com/x y"), FW,
     ["lab-fw-01.host", "not a DNS name"]),
    ("classic-without-org-id", both(config("scm", credentials_label="ADMIN_API_1"),
                                    creds("ADMIN_API_1", scm_org_id=None)),
     "intranet-ov-p384.yaml", ["scm.org_id", "classic"]),
    ("notifications-plain-http-webhook", raw("notifications.yaml",
                                             "webhook:\n  url: http://hooks.example.com/x\n"),
     "notifications.yaml", ["webhook.url", "https://"]),
    ("notifications-bad-address", raw("notifications.yaml", "email:\n  host: smtp.example.com\n"
                                      "  from: agent@example.com\n  to: [nobody]\n"),
     "notifications.yaml", ["email.to[0]", "not an e-mail address"]),
]


@pytest.mark.parametrize("name,breaks,filename,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_anything_is_sent(work: Any, capsys: Any, name: str,
                                                      breaks: Callable[[Any], Any],
                                                      filename: str, words: List[str]) -> None:
    breaks(work)
    capsys.readouterr()
    code, out = work.run("enroll")
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert code == 2, (name, out, err)
    assert len(errors) == 1, errors
    assert filename in errors[0], errors[0]
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert work.panos_requests() == [] and work.scm_requests() == [], "something was sent"
    assert not os.path.exists(os.path.join(work.state, "eula-accepted.json")) or \
        name == "state-dir-unusable"


def test_an_unknown_profile_on_the_command_line_is_named_and_nothing_is_sent(
        work: Any, capsys: Any) -> None:
    code, _ = work.run("renew", "portl-dv-rsa2048")
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert code == 2 and len(errors) == 1
    assert "portl-dv-rsa2048" in errors[0] and "did you mean 'portal-dv-rsa2048'" in errors[0]
    assert work.panos_requests() == [] and work.scm_requests() == []
