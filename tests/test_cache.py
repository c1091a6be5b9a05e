"""The cache of derived facts (connector/cache.py): found again only by the bytes it was
derived from, so a changed certificate is read afresh; safe to delete or damage; written only
when a run learned something."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connector.cache import CACHE_DIR, KnownFacts, KnownFiles, facts_header
from connector.certs import facts_of
from connector.facts import Facts
from connector.cli import EXIT_CONFIG
from conftest import AGENT_DIR
from test_agent_e2e import seed_certificate

AGENT = os.path.join(AGENT_DIR, "paloaltoagent.py")

NOW = dt.datetime.now(dt.timezone.utc)


def pem(days: int, names: List[str], cn: str = "www.example.com") -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    builder = x509.CertificateBuilder().subject_name(subject).issuer_name(subject) \
        .public_key(key.public_key()).serial_number(x509.random_serial_number()) \
        .not_valid_before(NOW - dt.timedelta(days=max(1, -days + 1))) \
        .not_valid_after(NOW + dt.timedelta(days=days))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in names]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def read_fresh(text: str) -> Facts:
    return facts_of(x509.load_pem_x509_certificate(text.encode("ascii")))


def cache_file(state: str) -> str:
    return os.path.join(state, CACHE_DIR, KnownFacts.FILE)


def test_facts_from_the_cache_are_the_certificates_own(tmp_path: Any) -> None:
    text = pem(60, ["www.example.com", "*.example.net"])
    first = KnownFacts(str(tmp_path))
    assert first.facts(text) == read_fresh(text)
    first.save(complete=True)
    again = KnownFacts(str(tmp_path))
    found = again.facts(text)
    assert found == read_fresh(text) and found is not None and found.covers("a.example.net")
    assert found.not_after.tzinfo is not None


def test_another_certificate_is_read_afresh_never_taken_from_the_cache(tmp_path: Any) -> None:
    # Same name, same names, a new certificate (the administrator re-imported): new facts.
    old, new = pem(60, ["www.example.com"]), pem(-2, ["www.example.com"])
    known = KnownFacts(str(tmp_path))
    assert known.facts(old) is not None
    known.save(complete=True)
    later = KnownFacts(str(tmp_path))
    facts = later.facts(new)
    assert facts == read_fresh(new) and facts is not None and facts.not_after < NOW


def test_a_damaged_or_foreign_cache_is_ignored_and_rebuilt(tmp_path: Any) -> None:
    text = pem(30, ["www.example.com"])
    path = cache_file(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    for damage in ("not json {", json.dumps({"version": 99, "facts": {}}), "[1, 2]"):
        with open(path, "w") as handle:
            handle.write(damage)
        known = KnownFacts(str(tmp_path))
        assert known.facts(text) == read_fresh(text)
        known.save(complete=True)
        with open(path) as handle:
            assert len(json.load(handle)["facts"]) == 1


def one_cached(state: str) -> Tuple[str, str, Dict[str, Any]]:
    """A certificate whose facts a run cached: (its PEM, the cache file, the file's data)."""
    text = pem(30, ["www.example.com"])
    known = KnownFacts(state)
    known.facts(text)
    known.save(complete=True)
    path = cache_file(state)
    with open(path) as handle:
        return text, path, json.load(handle)


def test_a_damaged_entry_is_read_again_from_the_certificate(tmp_path: Any) -> None:
    text, path, data = one_cached(str(tmp_path))
    (entry,) = data["facts"].values()
    entry["not_after"] = "2030-01-01T00:00:00"  # no zone: not an entry this code wrote
    with open(path, "w") as handle:
        json.dump(data, handle)
    assert KnownFacts(str(tmp_path)).facts(text) == read_fresh(text)


def test_written_only_when_learned_and_a_full_run_keeps_only_what_it_used(
        tmp_path: Any) -> None:
    one, two = pem(30, ["a.example.com"]), pem(30, ["b.example.com"])
    path = cache_file(str(tmp_path))
    known = KnownFacts(str(tmp_path))
    known.facts(one)
    known.facts(two)
    known.save(complete=True)
    stamp = os.stat(path).st_mtime_ns
    hits = KnownFacts(str(tmp_path))
    hits.facts(one)
    hits.save(complete=True)  # nothing new: not written, and `two` stays
    assert os.stat(path).st_mtime_ns == stamp
    partial = KnownFacts(str(tmp_path))
    partial.facts(pem(30, ["c.example.com"]))
    partial.save(complete=False)  # `renew NAME`: what others use is kept
    with open(path) as handle:
        assert len(json.load(handle)["facts"]) == 3
    full = KnownFacts(str(tmp_path))
    full.facts(one)
    full.facts(pem(30, ["d.example.com"]))
    full.save(complete=True)
    with open(path) as handle:
        assert len(json.load(handle)["facts"]) == 2


def test_an_unreadable_certificate_is_not_cached(tmp_path: Any) -> None:
    known = KnownFacts(str(tmp_path))
    broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    assert known.facts(broken) is None
    known.save(complete=True)
    assert not os.path.exists(cache_file(str(tmp_path)))


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(tmp_path: Any) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / CACHE_DIR).write_text("a file where the directory should be")
    known = KnownFacts(str(state))
    assert known.facts(pem(30, ["a.example.com"])) is not None
    known.save(complete=True)  # logged, not raised


def status_of(work: Any, profile: str) -> Dict[str, Any]:
    """What status says of the certificate (without its timing)."""
    _, document = work.run_json("status", profile)
    (result,) = [r for r in document["certificates"] if r["profile"] == profile]
    return {k: result.get(k) for k in ("state", "not_after", "key", "issuer", "message")}


def one_site_installed(work: Any) -> dt.datetime:
    """Profile `site` only, its certificate on the firewall since 10 days, 80 days left; now."""
    work.remove_sample_profiles()
    work.profile("site")
    now = dt.datetime.now(dt.timezone.utc)
    seed_certificate(work, "site", now - dt.timedelta(days=10), now + dt.timedelta(days=80),
                     "site.example.com")
    return now


def test_the_run_sees_a_replaced_certificate_and_survives_a_deleted_or_damaged_cache(
        work: Any) -> None:
    now = one_site_installed(work)
    first = status_of(work, "site")
    assert first["state"] == "ok", first
    path = cache_file(work.state)
    assert os.path.isfile(path)
    # The same object now holds an expired certificate: the cache must not answer for it.
    seed_certificate(work, "site", now - dt.timedelta(days=100), now - dt.timedelta(days=1),
                     "site.example.com")
    expired = status_of(work, "site")
    assert expired["state"] == "expired", expired
    assert expired["not_after"] != first["not_after"]
    # Deleted, or damaged: the same answers, and the cache is whole again afterwards.
    os.remove(path)
    assert status_of(work, "site") == expired
    with open(path, "w") as handle:
        handle.write("\x00garbage")
    assert status_of(work, "site") == expired
    with open(path) as handle:
        assert json.load(handle)["facts"]
    # And the renewal the expired certificate calls for happens.
    code, out = work.run("renew")
    assert code == 0, out
    assert status_of(work, "site")["state"] == "ok"
    assert len(work.orders()) == 1


# --- certificate profiles as parsed --------------------------------------------------------

def test_a_parsed_profile_is_found_only_by_its_exact_bytes(tmp_path: Any) -> None:
    known = KnownFiles(str(tmp_path))
    data = b"firewall: fw1\ncommon_name: www.example.com\nscm: {profile_id: 7, term: 90}\n"
    assert known.parsed(data) is None
    known.learn(data, {"firewall": "fw1", "common_name": "www.example.com",
                       "scm": {"profile_id": 7, "term": 90}})
    known.save(complete=True)
    again = KnownFiles(str(tmp_path))
    found = again.parsed(data)
    assert found is not None and found.value == {"firewall": "fw1",
                                                 "common_name": "www.example.com",
                                                 "scm": {"profile_id": 7, "term": 90}}
    assert again.parsed(data.replace(b"www", b"api")) is None
    # Every hit is an object of its own: nothing a reader does to one reaches the next.
    first, second = again.parsed(data), again.parsed(data)
    assert first is not None and second is not None and first.value is not second.value


def test_only_what_json_gives_back_exactly_is_kept(tmp_path: Any) -> None:
    known = KnownFiles(str(tmp_path))
    for number, document in enumerate([{"day": dt.date(2026, 12, 1)}, {1: "a"},
                                       {"term": 90.0, "x": [1.0]}, {"flag": True, "n": 1}]):
        known.learn(f"document {number}".encode(), document)
    assert known.parsed(b"document 0") is None and known.parsed(b"document 1") is None
    for number, document in ((2, {"term": 90.0, "x": [1.0]}), (3, {"flag": True, "n": 1})):
        found = known.parsed(f"document {number}".encode())
        assert found is not None and found.value == document
        assert isinstance(found.value, dict)
        assert [type(v) for v in found.value.values()] == [type(v) for v in document.values()]
    assert type(known.parsed(b"document 2").value["x"][0]) is float  # type: ignore[union-attr,index]


def test_profiles_are_not_cached_before_the_state_directory_exists(tmp_path: Any) -> None:
    known = KnownFiles(str(tmp_path / "state"))
    known.learn(b"a: 1\n", {"a": 1})
    known.save(complete=True)
    assert not (tmp_path / "state").exists()


def test_an_edited_profile_is_read_as_edited_and_no_secret_is_cached(work: Any) -> None:
    import yaml
    work.remove_sample_profiles()
    path = work.profile("site")
    cached = os.path.join(work.state, CACHE_DIR, KnownFiles.FILE)
    for _ in range(2):  # the first run makes the state directory, the second the cache
        assert work.run("status")[0] in (0, 1)
    with open(cached) as handle:
        text = handle.read()
    assert "site.example.com" in text
    with open(os.path.join(work.profiles, "fw_paloalto_config.yaml")) as handle:
        firewalls = yaml.safe_load(handle)
    secrets = [str(v) for entry in firewalls.values() for k, v in entry.items()
               if k in ("api_key", "password")]
    assert secrets and not any(secret in text for secret in secrets)
    with open(path) as handle:
        data = yaml.safe_load(handle)
    data["common_name"] = "edited.example.com"
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle)
    code, document = work.run_json("status", "site")
    (result,) = document["certificates"]
    assert result["common_name"] == "edited.example.com", result
    # A profile made invalid is refused as before, cache or not.
    with open(path, "a") as handle:
        handle.write("no_such_field: 1\n")
    code, document = work.run_json("status")
    assert code == EXIT_CONFIG and "no_such_field" in document["error"], document


def test_facts_written_under_another_agent_or_library_version_are_not_used(
        tmp_path: Any) -> None:
    text, path, data = one_cached(str(tmp_path))
    assert data["cryptography"] and data["agent"]
    (key,) = data["facts"]
    data["facts"][key]["not_after"] = "2099-01-01T00:00:00+00:00"  # what another code said
    for field in ("agent", "cryptography"):
        with open(path, "w") as handle:
            json.dump(dict(data, **{field: "0.0.0-other"}), handle)
        assert KnownFacts(str(tmp_path)).facts(text) == read_fresh(text)


def test_the_header_names_the_cryptography_the_facts_were_read_with(monkeypatch: Any) -> None:
    # Asked of the installed metadata, so that a no-op run need not import the library: it
    # must be the version that is imported when a certificate is read, and without metadata
    # (a vendored copy) the library itself says it.
    import importlib.metadata

    import cryptography
    assert facts_header()["cryptography"] == cryptography.__version__

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert facts_header()["cryptography"] == cryptography.__version__


def imported_by_a_run(work: Any, *args: str, options_first: bool = False) -> List[str]:
    """The modules a real agent process imports for `args` (python -X importtime), with -q
    and --config after the command or, as --help also shows them, before it."""
    options = ["-q", "--config", work.config]
    argv = [*options, *args] if options_first else [*args, *options]
    process = subprocess.run([sys.executable, "-X", "importtime", AGENT, *argv],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-3000:]
    return [line.rsplit("|", 1)[-1].strip() for line in process.stderr.splitlines()
            if line.startswith("import time:") and "|" in line]


def test_a_quiet_night_never_loads_cryptography_until_a_certificate_must_be_read(
        work: Any) -> None:
    # A no-op run finds every installed certificate's facts in the cache (facts.py): loading
    # cryptography, a tenth of such a run's fixed cost, would buy it nothing. A certificate
    # the cache does not know is still read, with cryptography, and judged.
    one_site_installed(work)
    assert work.run("renew")[0] == 0  # learns the certificate's facts
    for command, first in ((["renew", "--accept-eula"], False), (["status"], True)):
        modules = imported_by_a_run(work, *command, options_first=first)
        assert "connector.facts" in modules and "connector.lifecycle" in modules, command
        assert not [m for m in modules if m.split(".")[0] == "cryptography"], command
    os.remove(cache_file(work.state))
    modules = imported_by_a_run(work, "status")
    assert "cryptography.x509" in modules
    assert status_of(work, "site")["state"] == "ok"
    assert not work.orders()


def test_entries_of_the_wrong_types_are_damage_not_facts(tmp_path: Any) -> None:
    # A null key label or a names string must not turn into "None" or single letters
    # (either would make a sound certificate look due).
    text, path, data = one_cached(str(tmp_path))
    (key,) = data["facts"]
    for damage in ({"key": None}, {"names": "www.example.com"}, {"names": [1]},
                   {"subject_cn": 7}):
        damaged = dict(data, facts={key: dict(data["facts"][key], **damage)})
        with open(path, "w") as handle:
            json.dump(damaged, handle)
        assert KnownFacts(str(tmp_path)).facts(text) == read_fresh(text), damage


def test_a_certificate_whose_names_cannot_be_read_is_still_judged(tmp_path: Any) -> None:
    # An x400Address in the subjectAltName: cryptography refuses the names with
    # UnsupportedGeneralNameType (not a ValueError). The certificate is still there, and its
    # dates still count: it is expired, so it is replaced, not a crash of its firewall's run.
    from cryptography.x509.oid import ExtensionOID

    from connector.device import CertificateEntry
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "www.example.com")])
    san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
                                     b"\x30\x04\xa3\x02\x30\x00")
    cert = x509.CertificateBuilder().subject_name(subject).issuer_name(subject) \
        .public_key(key.public_key()).serial_number(x509.random_serial_number()) \
        .not_valid_before(NOW - dt.timedelta(days=100)) \
        .not_valid_after(NOW - dt.timedelta(days=1)) \
        .add_extension(san, critical=False).sign(key, hashes.SHA256())
    text = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    for entry in (CertificateEntry("www", True, pem=text, known=KnownFacts(str(tmp_path))),
                  CertificateEntry("www", True, cert=cert)):
        assert entry.has_certificate and not entry.is_request
        assert entry.facts is not None and entry.facts.names is None
        assert entry.facts.not_after < NOW
