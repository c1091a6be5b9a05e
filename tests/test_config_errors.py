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


def mkdir(name: str) -> Callable[[Any], Tuple[str, None]]:
    """A directory where a YAML file is expected."""
    def apply(work: Any) -> Tuple[str, None]:
        path = os.path.join(work.profiles, name)
        if os.path.isfile(path):
            os.remove(path)
        os.mkdir(path)
        return path, None
    return apply


def der_bundle(work: Any) -> Tuple[str, None]:
    """The lab's CA certificate in DER form given as a firewall's ca_bundle."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(work.lab.paths["ca_bundle"], "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    path = os.path.join(work.profiles, "fw-ca.der")
    with open(path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.DER))
    return fw(ca_bundle=path)(work)


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


def second_peer(one_sided: bool = False) -> Callable[[Any], Tuple[str, None]]:
    """A second firewall entry, lab-fw-02, paired with lab-fw-01 (or naming no peer)."""
    def change(data: Dict[str, Any]) -> None:
        data["lab-fw-02"] = dict(data["lab-fw-01"])
        data["lab-fw-01"]["ha_peer"] = "lab-fw-02"
        if not one_sided:
            data["lab-fw-02"]["ha_peer"] = "lab-fw-01"
    return edit(FW, change)


PANORAMA_FILE = "fw_panorama.yaml"
PANORAMA_ENTRY = ("lab-panorama:\n  type: panorama\n  url: https://127.0.0.1:9\n"
                  "  api_key: not-sent\n  admin: certbot\n")


def panorama(text: str, certificate: str = "") -> Callable[[Any], Tuple[str, None]]:
    """A Panorama entry plus `text` in fw_panorama.yaml (mode 0600: it holds a key), and,
    if given, a certificate profile `branch.yaml` for one of its devices."""
    def apply(work: Any) -> Tuple[str, None]:
        path = os.path.join(work.profiles, PANORAMA_FILE)
        with open(path, "w") as handle:
            handle.write(PANORAMA_ENTRY + text)
        os.chmod(path, 0o600)
        if certificate:
            with open(os.path.join(work.profiles, "branch.yaml"), "w") as handle:
                handle.write(certificate)
        return path, None
    return apply


TEMPLATE_ENTRY = "lab-template:\n  type: panorama-template\n  panorama: lab-panorama\n" \
                 "  template: branch\n"
BRANCH_CERT = "firewall: lab-template\nvalidation: DV\ncommon_name: branch.example.com\n" \
              "scm: {profile_id: 1}\n"


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
    # Issue 11, item 5: files that are not what they should be, addresses with a path.
    ("profile-is-a-directory", mkdir("extra.yaml"), "extra.yaml", ["is a directory"]),
    ("firewall-file-is-a-directory", mkdir("fw_more.yaml"), "fw_more.yaml",
     ["is a directory"]),
    ("credentials-is-a-directory", mkdir(CREDS), CREDS, ["is a directory"]),
    ("two-files-one-profile", raw("portal-dv-rsa2048.yml", "firewall: lab-fw-01\n"), CERT,
     ["portal-dv-rsa2048.yml", "certificate profile 'portal-dv-rsa2048'", "remove or rename"]),
    ("fw-url-with-a-path", fw(url="https://127.0.0.1:8443/php/login.php"), FW,
     ["lab-fw-01.url", "path", "https://host[:port]"]),
    ("fw-url-with-userinfo", fw(url="https://admin:hunter2@127.0.0.1:8443"), FW,
     ["lab-fw-01.url", "user name or password", "***@127.0.0.1:8443"]),
    ("fw-ca-bundle-not-pem", der_bundle, FW, ["lab-fw-01.ca_bundle", "not a PEM CA bundle",
                                               "openssl x509 -inform der"]),
    ("scm-url-with-userinfo", creds("ENROLLMENT_API_1", scm_url="https://u:p@scm.example.com"),
     CREDS, ["ENROLLMENT_API_1.scm_url", "user name or password"]),
    # Item 4: names SCM refuses.
    ("cert-trailing-dot", cert(common_name="portal.example.com."), CERT,
     ["common_name", "ends with a dot", "'portal.example.com'"]),
    ("cert-single-label", cert(subject_alt_names=["intranet44"]), CERT,
     ["subject_alt_names[0]", "single label", "fully qualified"]),
    ("cert-numeric-tld", cert(subject_alt_names=["portal.example.123"]), CERT,
     ["subject_alt_names[0]", "numeric"]),
    ("cert-invalid-ip", cert(subject_alt_names=["300.1.2.3"]), CERT,
     ["subject_alt_names[0]", "not a valid IP address"]),
    ("cert-scoped-ipv6", cert(subject_alt_names=["fe80::1%eth0"]), CERT,
     ["subject_alt_names[0]", "not a valid IP address"]),
    ("cert-ev-wildcard", raw("shop-ev-rsa4096.yaml", yaml.safe_dump({
        "firewall": "lab-fw-01", "validation": "EV", "common_name": "*.shop.example.com",
        "scm": {"profile_id": 1}})), "shop-ev-rsa4096.yaml",
     ["common_name", "EV certificates cannot have wildcard names"]),
    ("cert-wildcard-inside", cert(subject_alt_names=["www.*.example.com"]), CERT,
     ["subject_alt_names[0]", "whole leftmost label"]),
    ("cert-partial-wildcard", cert(common_name="w*.example.com"), CERT,
     ["common_name", "whole leftmost label"]),
    ("cert-non-ascii", cert(subject_alt_names=["bücher.example.com"]), CERT,
     ["subject_alt_names[0]", "punycode", "xn--bcher-kva.example.com"]),
    ("cert-unquoted-wildcard", raw(CERT, "firewall: lab-fw-01\nvalidation: DV\n"
                                         "common_name: *.example.com\n"), CERT,
     ["invalid YAML", "must be quoted", '"*.example.com"']),
    # Item 3: windows that would order on every run, and window syntax.
    ("cert-window-as-long-as-the-term", cert(renew_before_days=90), CERT,
     ["renew_before_days", "too long for the certificate's term", "renew_before: 33%"]),
    ("cert-window-just-under-the-term", cert(renew_before_days=89), CERT,
     ["renew_before_days", "at most 81 days, 90%"]),
    ("config-window-longer-than-a-term", config("renewal", days_before_expiry=120), CERT,
     ["scm.term", "renewal.days_before_expiry", "too long"]),
    ("cert-window-percent-too-big", cert(renew_before="100%"), CERT,
     ["renew_before", "between 1% and 90%"]),
    ("cert-window-words", cert(renew_before="a month"), CERT,
     ["renew_before", "number of days (30) or a share of the lifetime (33%)"]),
    ("cert-two-windows", cert(renew_before="30%", renew_before_days=10), CERT,
     ["renew_before", "not both"]),
    ("config-two-windows", config("renewal", renew_before="30%"), "config.yaml",
     ["renewal.renew_before", "not both"]),
    # Panorama devices (README, Panorama).
    ("panorama-unknown-type", panorama("lab-x:\n  type: panoramma\n"), PANORAMA_FILE,
     ["lab-x.type", "not one of firewall, panorama, panorama-template"]),
    ("panorama-template-with-url", panorama(TEMPLATE_ENTRY + "  url: https://10.0.0.1\n"),
     PANORAMA_FILE, ["lab-template", "url"]),
    ("panorama-template-names-a-firewall", panorama(
        "lab-template:\n  type: panorama-template\n  panorama: lab-fw-01\n"
        "  template: branch\n"), PANORAMA_FILE,
     ["lab-template.panorama", "'lab-fw-01' is not a Panorama", "type: panorama"]),
    ("panorama-template-unknown-panorama", panorama(
        "lab-template:\n  type: panorama-template\n  panorama: lab-panoramma\n"
        "  template: branch\n"), PANORAMA_FILE,
     ["lab-template.panorama", "no Panorama profile 'lab-panoramma'",
      "did you mean 'lab-panorama'"]),
    ("panorama-bad-stack-name", panorama(TEMPLATE_ENTRY + "  template_stacks: [\"-a\"]\n"),
     PANORAMA_FILE, ["template_stacks[0]", "not a valid template name"]),
    ("panorama-via-unquoted-serial", panorama(
        "lab-remote:\n  via: lab-panorama\n  serial: 0017010000123\n"), PANORAMA_FILE,
     ["lab-remote.serial", "in quotes"]),
    ("panorama-via-with-url", panorama(
        "lab-remote:\n  via: lab-panorama\n  serial: \"007951000000002\"\n"
        "  url: https://10.0.0.2\n"), PANORAMA_FILE, ["lab-remote", "url"]),
    ("panorama-template-name-too-long", panorama(
        TEMPLATE_ENTRY, BRANCH_CERT + "object_name: branch-portal-tls-01\n"), "branch.yaml",
     ["object_name", "at most 18", "Panorama allows 31"]),
    # HA pairs and bindings (README, "HA pairs", "Bindings").
    ("ha-peer-unknown", fw(ha_peer="lab-fw-09"), FW,
     ["lab-fw-01.ha_peer", "no firewall profile 'lab-fw-09'"]),
    ("ha-peer-itself", fw(ha_peer="lab-fw-01"), FW,
     ["lab-fw-01.ha_peer", "must be the other firewall of the HA pair"]),
    ("ha-peer-is-panorama", both(panorama(""), fw(ha_peer="lab-panorama")), FW,
     ["lab-fw-01.ha_peer", "must be the other firewall"]),
    ("ha-peer-one-sided", second_peer(one_sided=True), FW,
     ["lab-fw-01.ha_peer", "'lab-fw-02' must name 'lab-fw-01' as its ha_peer too"]),
    ("ha-pair-object-twice", both(second_peer(), raw(
        "other.yaml", "firewall: lab-fw-02\nobject_name: portal-example-com\nvalidation: DV\n"
                      "common_name: other.example.com\nscm: {profile_id: 1}\n")), CERT,
     ["object 'portal-example-com' on firewall 'lab-fw-01/lab-fw-02' is already managed "
      "by certificate profile 'other'"]),
    ("bindings-unknown-field", cert(bindings={"globalprotect_portal": ["GP"]}), CERT,
     ["bindings.globalprotect_portal", "did you mean 'globalprotect_portals'"]),
    ("bindings-bad-name", cert(bindings={"decryption_rules": ["-x"]}), CERT,
     ["bindings.decryption_rules[0]", "not a valid name"]),
    ("bindings-management-ui-in-vsys", both(fw(vsys="vsys1"), cert(bindings={
        "management_ui": True})), CERT,
     ["bindings.management_ui", "uses shared certificates", "in vsys1"]),
    ("bindings-on-panoramas-own", panorama("", "firewall: lab-panorama\nvalidation: DV\n"
                                               "common_name: p.example.com\n"
                                               "scm: {profile_id: 1}\nbindings:\n"
                                               "  ike_gateways: [VPN]\n"), "branch.yaml",
     ["bindings.ike_gateways", "Panorama's own certificate feeds its SSL/TLS service "
                               "profiles only"]),
    ("config-window-percent-zero", edit("config.yaml", lambda d: d.update(
        renewal={"renew_before": "0%"})), "config.yaml",
     ["renewal.renew_before", "between 1% and 90%"]),
]


@pytest.mark.parametrize("name,breaks,filename,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_anything_is_sent(shared_work: Any, capsys: Any, name: str,
                                                      breaks: Callable[[Any], Any],
                                                      filename: str, words: List[str]) -> None:
    # One lab serves every case (each with its own work directory): nothing may reach it.
    work = shared_work
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


@pytest.mark.parametrize("password", ["hunter2", "s3cr/et", "pa#ss", "pa?ss", "a@b"])
def test_a_password_in_a_url_is_never_repeated(shared_work: Any, capsys: Any,
                                                password: str) -> None:
    work = shared_work
    fw(url=f"https://admin:{password}@127.0.0.1:8443/api/")(work)
    code, out = work.run("enroll")
    said = out + capsys.readouterr().err
    assert code == 2 and "lab-fw-01.url" in said and "user name or password" in said, said
    assert password not in said and f"admin:{password.split('@')[0]}" not in said
    assert work.panos_requests() == [] and work.scm_requests() == []


def test_a_configuration_path_that_is_a_directory_is_a_clear_error(work: Any) -> None:
    # From the environment variable, as cron would give it; no traceback, exit 2.
    import subprocess
    import sys
    from conftest import AGENT_DIR
    env = dict(os.environ, sectigo_pycert_config=work.profiles)
    result = subprocess.run([sys.executable, os.path.join(AGENT_DIR, "paloaltoagent.py"),
                             "renew", "--accept-eula"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "is a directory" in result.stderr
    assert work.profiles in result.stderr
    assert work.panos_requests() == [] and work.scm_requests() == []


def test_profiles_with_an_upper_case_extension_and_the_documented_api_url_work(
        work: Any) -> None:
    # `A.YAML` is a profile like any other; `https://fw/api/` is how PAN-OS writes the
    # address, and means the firewall.
    os.rename(os.path.join(work.profiles, CERT), os.path.join(work.profiles, "Portal.YAML"))
    data = load(os.path.join(work.profiles, FW))
    data["lab-fw-01"]["url"] = data["lab-fw-01"]["url"] + "/api/"
    dump(os.path.join(work.profiles, FW), data)
    code, out = work.run("enroll", "Portal")
    assert code == 0, out
    assert [o["common_name"] for o in work.orders()] == ["portal.example.com"]


def test_an_unknown_profile_on_the_command_line_is_named_and_nothing_is_sent(
        work: Any, capsys: Any) -> None:
    code, _ = work.run("renew", "portl-dv-rsa2048")
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert code == 2 and len(errors) == 1
    assert "portl-dv-rsa2048" in errors[0] and "did you mean 'portal-dv-rsa2048'" in errors[0]
    assert work.panos_requests() == [] and work.scm_requests() == []
