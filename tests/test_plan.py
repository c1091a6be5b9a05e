"""The decision alone (plan.decide): small situations built in memory, no lab, no device. What
a run does in each situation is here in one table; test_plan_matches_run.py shows that the
real run does it."""

from __future__ import annotations

import datetime as dt
from typing import Any, List, Optional, Sequence, Tuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connector.bindings import KINDS, SSL_TLS_SERVICE_PROFILE, Binding
from connector.device import CertificateEntry, DeviceView
from connector.plan import Situation, decide
from connector.results import Action, Mode, State
from connector.settings import CertificateProfile, KeySpec, OrderSettings
from connector.state import CertState, Pending, Stage

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc)
CERT_PROFILE = next(k for k in KINDS if k.name == "certificate-profile")
PROFILE = CertificateProfile(name="www", path="www.yaml", firewall="fw", object_name="www",
                             validation="DV", common_name="www.example.com",
                             key=KeySpec("ECDSA", 256), order=OrderSettings(profile_id=1),
                             ssl_tls_service_profiles=("Web-TLS",))


def certificate(days_left: int, lifetime: int = 90) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")])
    not_after = NOW + dt.timedelta(days=days_left)
    return x509.CertificateBuilder().subject_name(name).issuer_name(name) \
        .public_key(key.public_key()).serial_number(x509.random_serial_number()) \
        .not_valid_before(not_after - dt.timedelta(days=lifetime)).not_valid_after(not_after) \
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.com")]), False) \
        .sign(key, hashes.SHA256())


def view(*entries: CertificateEntry, bindings: Sequence[Tuple[Any, str, str]] = ()
         ) -> DeviceView:
    return DeviceView(certificates={e.name: e for e in entries},
                      bindings=[Binding(kind, location, cert) for kind, location, cert in
                                bindings])


def installed(name: str = "www", days_left: int = 60, status: str = "valid") -> CertificateEntry:
    return CertificateEntry(name, True, certificate(days_left), status=status)


def request(name: str) -> CertificateEntry:
    return CertificateEntry(name, True)


def plan(state: CertState, device: DeviceView, **options: Any) -> Tuple[Any, List[Any]]:
    decision = decide(Situation(profile=options.pop("profile", PROFILE), state=state,
                                view=device, now=NOW, device="fw", commit_text="commit fw",
                                **options))
    return decision, [(s.kind.value, s.object) + ((s.location,) if s.location else ())
                      for s in decision.steps]


def bound(cert: str = "www") -> List[Tuple[Any, str, str]]:
    return [(SSL_TLS_SERVICE_PROFILE, "Web-TLS", cert)]


def pending(stage: Stage, obj: str = "www-20261201", **fields: Any) -> Pending:
    return Pending(stage=stage, object=obj, kind=fields.pop("kind", Action.RENEW),
                   since="2026-12-01T00:00:00+00:00", replaces=fields.pop("replaces", "www"),
                   **fields)


def test_a_missing_certificate_is_enrolled_and_its_profile_created() -> None:
    decision, steps = plan(CertState("www"), view())
    assert decision.condition.state is State.MISSING and decision.action is Action.ENROLL
    assert steps == [("generate", "www"), ("order", "www"), ("collect", "www"),
                     ("install", "www"), ("bind", "www", "Web-TLS"), ("commit", "fw")]
    assert decision.steps[4].text == "create SSL/TLS service profile Web-TLS for www"


def test_an_up_to_date_certificate_is_left_alone() -> None:
    decision, steps = plan(CertState("www", object="www", cert_id="7"),
                           view(installed(), bindings=bound()))
    assert steps == [] and decision.message == "up to date" and decision.stop is None


@pytest.mark.parametrize("entry,state", [(installed(status="revoked"), State.REVOKED),
                                         (installed(days_left=-1), State.EXPIRED),
                                         (installed(days_left=10), State.DUE)])
def test_a_certificate_that_needs_it_is_renewed_under_a_new_name(entry: CertificateEntry,
                                                                 state: State) -> None:
    decision, steps = plan(CertState("www", object="www", cert_id="7"),
                           view(entry, bindings=bound()))
    assert decision.condition.state is state and decision.action is Action.RENEW
    assert steps == [("generate", "www-20261201"), ("order", "www-20261201"),
                     ("collect", "www-20261201"), ("install", "www-20261201"),
                     ("bind", "www-20261201", "Web-TLS"), ("delete", "www"), ("commit", "fw")]
    assert decision.steps[1].renew_of == "7"


def test_enroll_leaves_a_due_certificate_to_renew() -> None:
    decision, steps = plan(CertState("www", object="www", cert_id="7"),
                           view(installed(days_left=10), bindings=bound()), mode=Mode.ENROLL)
    assert steps == [] and "renew replaces it" in decision.message


def test_every_managed_consumer_of_the_old_object_follows_and_other_users_keep_it() -> None:
    device = view(installed(status="revoked"), bindings=bound() + [
        (SSL_TLS_SERVICE_PROFILE, "Other-TLS", "www"), (CERT_PROFILE, "Clients", "www")])
    _, steps = plan(CertState("www", object="www", cert_id="7"), device)
    assert steps[4:] == [("bind", "www-20261201", "Web-TLS"),
                         ("bind", "www-20261201", "Other-TLS"), ("keep", "www"),
                         ("commit", "fw")]


def test_a_request_not_ordered_yet_is_ordered_with_its_csr() -> None:
    state = CertState("www", pending=pending(Stage.GENERATED, "www", kind=Action.ENROLL,
                                             replaces=None,
                                             request=_spec()))
    _, steps = plan(state, view(request("www")))
    assert steps == [("order", "www"), ("collect", "www"), ("install", "www"),
                     ("bind", "www", "Web-TLS"), ("commit", "fw")]


def test_a_stale_request_is_discarded_and_made_again_under_the_freed_name() -> None:
    state = CertState("www", pending=pending(Stage.GENERATED, "www", kind=Action.ENROLL,
                                             replaces=None,
                                             request=dict(_spec(), key="RSA-2048")))
    decision, steps = plan(state, view(request("www")))
    assert steps[:2] == [("discard", "www"), ("generate", "www")]
    assert "key changed" in decision.steps[0].text


def test_force_discards_an_unordered_request_of_an_earlier_run_but_not_its_own() -> None:
    state = CertState("www", pending=pending(Stage.GENERATED, "www", kind=Action.ENROLL,
                                             replaces=None, request=_spec()))
    _, steps = plan(state, view(request("www")), force=True)
    assert steps[0] == ("discard", "www")
    _, steps = plan(state, view(request("www")), force=True, made_now=True)
    assert steps[0] == ("order", "www")


@pytest.mark.parametrize("options,first", [
    ({"ids": "12345"}, "resume"), ({"lookup": True}, "lookup"), ({"force": True}, "reorder"),
    ({"adopt": "555"}, "adopt"), ({"lookup": True, "ids": "12345"}, "resume")])
def test_an_interrupted_order_is_found_out_before_anything_else(options: Any,
                                                               first: str) -> None:
    state = CertState("www", object="www", cert_id="7",
                      pending=pending(Stage.ORDERING, ids_before="7"))
    _, steps = plan(state, view(installed(status="revoked"), request("www-20261201"),
                                bindings=bound()), **options)
    assert steps[:3] == [(first, "www-20261201"), ("collect", "www-20261201"),
                         ("install", "www-20261201")]


def test_an_interrupted_order_without_a_way_to_find_it_stops() -> None:
    state = CertState("www", object="www", cert_id="7",
                      pending=pending(Stage.ORDERING, ids_before="7"))
    decision, steps = plan(state, view(installed(), request("www-20261201")), ids="7")
    assert steps == [] and "--adopt ID" in (decision.stop or "")


def test_adopt_needs_an_interrupted_order() -> None:
    decision, steps = plan(CertState("www", object="www"), view(installed()), adopt="9")
    assert steps == [] and "no interrupted order" in (decision.stop or "")
    # An order whose id was recorded is not interrupted, even when --adopt names that id.
    state = CertState("www", object="www", cert_id="7",
                      pending=pending(Stage.ORDERED, "www-20261201", order_id="9"))
    decision, steps = plan(state, view(installed(), request("www-20261201")), adopt="9")
    assert steps == [] and "no interrupted order" in (decision.stop or "")


def test_an_installed_certificate_whose_commit_failed_is_committed() -> None:
    state = CertState("www", object="www", cert_id="7",
                      pending=pending(Stage.INSTALLED, order_id="8"))
    device = view(installed(), installed("www-20261201", days_left=89),
                  bindings=bound("www-20261201"))
    decision, steps = plan(state, device)
    assert steps == [("delete", "www"), ("commit", "fw")]
    assert decision.action is Action.COMMIT


def test_an_import_the_candidate_lost_is_collected_and_imported_again() -> None:
    state = CertState("www", object="www", cert_id="7",
                      pending=pending(Stage.INSTALLED, order_id="8"))
    _, steps = plan(state, view(installed(), request("www-20261201"), bindings=bound()))
    assert steps[:2] == [("collect", "www-20261201"), ("install", "www-20261201")]


def test_a_refused_order_waits_for_force_but_its_request_is_cleaned_up() -> None:
    state = CertState("www", superseded=["www"],
                      rejected={"order_id": None, "reason": "was refused by SCM: -13"})
    decision, steps = plan(state, view(request("www")))
    assert steps == [("delete", "www"), ("commit", "fw")]
    assert "renew www --force" in (decision.stop or "")
    decision, steps = plan(state, view(), force=True)
    assert steps[0] == ("generate", "www") and decision.stop is None


def test_leftovers_are_deleted_first_and_an_earlier_delete_is_committed() -> None:
    state = CertState("www", object="www-20261201", cert_id="8",
                      superseded=["www", "www-old"])
    device = view(installed("www-20261201", days_left=89), CertificateEntry("www", True,
                                                                            certificate(5)),
                  bindings=bound("www-20261201"))
    decision, steps = plan(state, device)
    assert steps == [("delete", "www"), ("commit", "fw")]
    assert decision.action is Action.NONE
    state.superseded = ["www-old"]
    decision, steps = plan(state, view(installed("www-20261201", days_left=89)))
    assert steps == [("commit", "fw")]
    assert decision.steps[0].text == "commit fw: the earlier delete of www-old"


def test_what_this_run_already_kept_is_not_kept_again() -> None:
    state = CertState("www", object="www-20261201", cert_id="8", superseded=["www"])
    device = view(installed("www-20261201", days_left=89), installed("www"),
                  bindings=[(CERT_PROFILE, "Clients", "www")])
    _, steps = plan(state, device)
    assert steps == [("keep", "www")]
    _, steps = plan(state, device, kept=frozenset({"www"}))
    assert steps == []


def _spec(profile: Optional[CertificateProfile] = None) -> Any:
    from connector.plan import request_spec
    return request_spec(profile or PROFILE)
