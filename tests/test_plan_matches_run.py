"""The dry run prints the steps the real run takes (issue 12): one decision function, so in
every situation below the steps a dry run printed equal, kind by kind and object by object,
the steps the real run took right after it against the lab.

Each situation is brought about the way it arises in real life (a fault while ordering, a
crash, a refused order, a reference from elsewhere), then `renew --dry-run --json` and
`renew --json` are compared through their `steps`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import pytest

from connector.state import StateStore
from lab.server import FaultRule


class Crash(BaseException):
    """Stands for the process being killed: no `except Exception` catches it."""


def keys(report: Dict[str, Any], profile: str = "site") -> List[Tuple[str, str, str]]:
    certificate = next(c for c in report["certificates"] if c["profile"] == profile)
    return [(s["step"], s["object"], s["consumer"] or "") for s in certificate["steps"]]


def compare(work: Any, *args: str) -> List[Tuple[str, str, str]]:
    """Dry run, then the real run: their steps and exit codes, which must be the same."""
    orders = len(work.orders())
    planned_code, planned = work.run_json("renew", *args, "--dry-run")
    assert len(work.orders()) == orders, "the dry run ordered"
    code, report = work.run_json("renew", *args)
    assert keys(planned) == keys(report), (keys(planned), keys(report))
    assert planned_code == code, (planned["certificates"], report["certificates"])
    return keys(report)


@pytest.fixture()
def site(work: Any) -> Any:
    """One DV certificate bound to an SSL/TLS service profile the lab does not have yet."""
    work.remove_sample_profiles()
    work.profile("site", ssl_tls_service_profiles=["Site-TLS"])
    return work


def kinds(steps: List[Tuple[str, str, str]]) -> List[str]:
    return [kind for kind, _, _ in steps]


def missing(work: Any) -> None:
    pass


def enrolled(work: Any) -> None:
    assert work.run("enroll")[0] == 0


def revoked(work: Any) -> None:
    assert work.run("enroll")[0] == 0
    work.lab.panos.set_certificate_status("site", "revoked")


def followed(work: Any) -> None:
    # Another SSL/TLS service profile uses the certificate: renewal repoints it too.
    assert work.run("enroll")[0] == 0
    work.lab.panos.seed("/config/shared/ssl-tls-service-profile",
                        "<entry name='Other-TLS'><certificate>site</certificate></entry>")
    work.lab.panos.set_certificate_status("site", "revoked")


def not_placed(work: Any) -> None:
    work.lab.scm_endpoint.faults.add(FaultRule(kind="status", status=403, count=2,
                                               match="POST /api/v1/certificates"))
    assert work.run("enroll")[0] == 1


def stale(work: Any) -> None:
    not_placed(work)
    work.profile("site", ssl_tls_service_profiles=["Site-TLS"], key="ECDSA-P256")


def after_ids(work: Any) -> None:
    real_save = StateStore.save

    def save(self: StateStore, state: Any) -> None:
        if state.pending is not None and state.pending.stage == "ordered":
            raise Crash()  # killed after .ids was written, before the state file
        real_save(self, state)

    StateStore.save = save  # type: ignore[method-assign]
    try:
        with pytest.raises(Crash):
            work.run("enroll")
    finally:
        StateStore.save = real_save  # type: ignore[method-assign]


def lost_then_found(work: Any) -> None:
    work.lab.scm_endpoint.faults.add(FaultRule(kind="lose", skip=1,
                                               match="POST /api/v1/certificates"))
    assert work.run("enroll")[0] == 1


def lost_never_placed(work: Any) -> None:
    work.lab.scm_endpoint.faults.add(FaultRule(kind="drop", skip=1,
                                               match="POST /api/v1/certificates"))
    assert work.run("enroll")[0] == 1


def ordered(work: Any) -> None:
    work.lab.scm.settings.pending_polls = 1
    work.edit_config("scm", poll_timeout=0)
    assert work.run("enroll")[0] == 0
    assert work.state_of("site")["pending"]["stage"] == "ordered"


def installed(work: Any) -> None:
    work.lab.panos.settings.commit_fail = 1
    assert work.run("enroll")[0] == 1
    assert work.state_of("site")["pending"]["stage"] == "installed"


def rejected(work: Any) -> None:
    work.lab.scm.settings.decline_next = 1
    assert work.run("enroll")[0] == 1


def kept(work: Any) -> None:
    assert work.run("enroll")[0] == 0
    work.lab.panos.seed("/config/shared/certificate-profile",
                        "<entry name='Clients'><CA><entry name='site'/></CA></entry>")
    work.lab.panos.set_certificate_status("site", "revoked")


def released(work: Any) -> None:
    kept(work)
    assert work.run("renew")[0] == 0
    for tree in work.lab.panos.store.direct():
        parent = tree.find("shared/certificate-profile")
        parent.remove(parent.find("entry"))


def rejected_with_one_kept(work: Any) -> None:
    # The old object stays (a certificate profile uses it); the renewal after it is declined.
    kept(work)
    assert work.run("renew")[0] == 0
    work.lab.panos.set_certificate_status(work.state_of("site")["object"], "revoked")
    work.lab.scm.settings.decline_next = 1
    assert work.run("renew")[0] == 1


def released_then_due(work: Any) -> None:
    # The kept old object is released, and the certificate is due again: the run deletes
    # the old object first, so its name (the profile's own) is free for the new one.
    released(work)
    assert work.run("renew")[0] == 0 and work.state_of("site")["superseded"] == []
    # ... made superseded again: keep it once more, then release it while a renewal is due.
    kept_again = work.state_of("site")["object"]
    work.lab.panos.seed("/config/shared/certificate-profile",
                        f"<entry name='Clients'><CA><entry name='{kept_again}'/></CA></entry>")
    work.lab.panos.set_certificate_status(kept_again, "revoked")
    assert work.run("renew")[0] == 0
    assert work.state_of("site")["superseded"] == [kept_again]
    for tree in work.lab.panos.store.direct():
        parent = tree.find("shared/certificate-profile")
        parent.remove(parent.find("entry"))
    work.lab.panos.set_certificate_status(work.state_of("site")["object"], "revoked")


# (situation, how to bring it about, extra arguments, the steps the run takes)
SITUATIONS: List[Tuple[str, Callable[[Any], None], Tuple[str, ...], List[str]]] = [
    ("missing", missing, (),
     ["generate", "order", "collect", "install", "bind", "commit"]),
    ("revoked, bound", revoked, (),
     ["generate", "order", "collect", "install", "bind", "delete", "commit"]),
    ("revoked, used by another profile too", followed, (),
     ["generate", "order", "collect", "install", "bind", "bind", "delete", "commit"]),
    ("up to date", enrolled, (), []),
    ("forced", enrolled, ("--force",),
     ["generate", "order", "collect", "install", "bind", "delete", "commit"]),
    ("request not ordered yet", not_placed, (),
     ["order", "collect", "install", "bind", "commit"]),
    ("request stale: the key changed", stale, (),
     ["discard", "generate", "order", "collect", "install", "bind", "commit"]),
    ("request not ordered yet, --force", not_placed, ("--force",),
     ["discard", "generate", "order", "collect", "install", "bind", "commit"]),
    ("interrupted ordering, id in .ids", after_ids, (),
     ["resume", "collect", "install", "bind", "commit"]),
    ("interrupted ordering, found by lookup", lost_then_found, (),
     ["lookup", "collect", "install", "bind", "commit"]),
    ("interrupted ordering, lookup finds none", lost_never_placed, (),
     ["lookup", "collect", "install", "bind", "commit"]),
    ("ordered, waiting at SCM", ordered, (),
     ["collect", "install", "bind", "commit"]),
    ("installed, commit failed", installed, (), ["commit"]),
    ("rejected, --force", rejected, ("--force",),
     ["generate", "order", "collect", "install", "bind", "commit"]),
    ("superseded kept", kept, (),
     ["generate", "order", "collect", "install", "bind", "keep", "commit"]),
    ("superseded released", released, (), ["delete", "commit"]),
    ("rejected, one superseded kept", rejected_with_one_kept, (), ["keep"]),
    ("superseded released while due", released_then_due, (),
     ["delete", "generate", "order", "collect", "install", "bind", "delete", "commit"]),
]


@pytest.mark.parametrize("name,arrange,extra,expected", SITUATIONS,
                         ids=[s[0] for s in SITUATIONS])
def test_the_dry_run_shows_the_steps_the_real_run_takes(site: Any, name: str,
                                                       arrange: Callable[[Any], None],
                                                       extra: Tuple[str, ...],
                                                       expected: List[str]) -> None:
    arrange(site)
    site.lab.scm_endpoint.faults.clear()
    site.lab.panos_endpoint.faults.clear()
    assert kinds(compare(site, *extra)) == expected


def test_interrupted_ordering_without_lookup_stops_in_both(site: Any) -> None:
    site.without_lookup()
    lost_then_found(site)
    site.lab.scm_endpoint.faults.clear()
    code, planned = site.run_json("renew", "--dry-run")
    code_real, report = site.run_json("renew")
    assert code == code_real == 1
    assert planned["certificates"][0]["error"] == report["certificates"][0]["error"]
    assert "--adopt ID" in report["certificates"][0]["error"]
    # ... and with --adopt, both take the same way.
    found = site.lab.scm.control("orders", {})[0]["id"]
    assert kinds(compare(site, "site", "--adopt", str(found))) == \
        ["adopt", "collect", "install", "bind", "commit"]
    assert len(site.orders()) == 1
