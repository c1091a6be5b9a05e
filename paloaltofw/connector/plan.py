"""The decision: from a certificate profile, its state file and what the device holds, the
steps a run takes for that certificate, in order (PRODUCT.md's workflow, steps 3-5).

`decide` is pure: it reads nothing, writes nothing and sends nothing. A real run executes the
first step, then decides again (a step may learn something: an order's id, what a search at
SCM found, that SCM is still processing); a dry run prints the whole list. There is one
decision tree, so what a dry run shows is what the real run does, step for step, as long as
each step goes as hoped.

The order of the steps: objects left over from earlier renewals are cleaned up first (they
wait for nothing); then the certificate's own way: a stale request is thrown away, a key and
CSR are made, the order is placed (or an interrupted one found again), collected, verified and
imported; consumers are pointed at the new object, the object it replaces is deleted if
nothing else uses it; and the device commits once, for every certificate of the run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

from .bindings import (DEVICE_SCOPE, PEER_SCOPE, GLOBALPROTECT_GATEWAY, GLOBALPROTECT_PORTAL,
                       IKE_GATEWAY, INBOUND_INSPECTION, INBOUND_INSPECTION_LIST,
                       MANAGEMENT_UI, SSL_TLS_SERVICE_PROFILE, Binding, BindingKind)
from .device import CertificateEntry, DeviceView
from .errors import AgentError
from .facts import Facts, names_cover
from .results import Action, Mode, State, Step, StepKind
from .settings import CertificateProfile
from .state import CertState, Pending, Stage


class Condition(NamedTuple):
    """How the certificate on the device stands against its profile."""

    state: State  # ok | due | missing | expired | revoked
    reason: Optional[str]  # why it must be replaced; None: it need not be
    # Something about the profile an administrator should fix, or a replacement the window
    # asked for and the run declined; the caller logs it (with `once`, only the first time).
    warning: Optional[str] = None
    once: bool = False


@dataclass(frozen=True)
class Situation:
    """Everything the decision looks at."""

    profile: CertificateProfile
    state: CertState
    view: DeviceView
    now: dt.datetime
    mode: Mode = Mode.RENEW
    force: bool = False
    adopt: Optional[str] = None  # renew --adopt ID
    lookup: bool = False  # classic credentials to search SCM's orders with
    ids: Optional[str] = None  # the .ids file now (read when an order is pending)
    device: str = ""  # the device's name, for the texts
    commit_text: str = "commit"  # how the device's commit reads
    collected: bool = False  # this run holds the pending order's issued chain
    kept: FrozenSet[str] = frozenset()  # objects this run already found still in use
    made_now: bool = False  # the pending request was made by this run (--force keeps it)
    rejected_now: bool = False  # this run's order was refused: --force does not order again


@dataclass
class Decision:
    condition: Condition
    steps: List[Step] = field(default_factory=list)
    stop: Optional[str] = None  # why the certificate cannot go on this run (a failure)
    action: Action = Action.NONE
    object: Optional[str] = None  # the object the run is about (the new one when replacing)
    message: str = ""  # what a run that leaves the certificate alone says of it


def decide(s: Situation) -> Decision:
    """The steps the run takes for this certificate, in order (module docstring)."""
    profile, state, view = s.profile, s.state, s.view
    current = state.object or profile.object_name
    entry = view.certificates.get(current)
    condition = assess(profile, entry, s.now, installed_at(state, current))
    plan = _Plan(s, Decision(condition, object=current))
    pending = state.pending
    if s.adopt and (pending is None or pending.stage is not Stage.ORDERING):
        now = pending_text(profile, pending) if pending else "nothing pending"
        return plan.stopped(f"--adopt: {profile.name} has no interrupted order to adopt "
                            f"({now})")
    # Objects left over from earlier renewals (and refused orders) wait for nothing.
    plan.clean_up([n for n in state.superseded
                   if n not in (state.object, pending.object if pending else None)])
    # Names this plan deletes before it would make a new object (the real run deletes them
    # first, then decides again: the name is free by then).
    freed = [step.object for step in plan.decision.steps if step.kind is StepKind.DELETE]
    if pending is not None and pending.stage is Stage.GENERATED and not s.made_now:
        why = "--force" if s.force else stale_request(profile, pending)
        if why:
            plan.discard(pending.object, why)
            request = view.certificates.get(pending.object)
            if request is not None and request.is_request and \
                    not view.references(pending.object):
                freed.append(pending.object)  # deleted by the discard
            pending = None
    elif pending is not None and pending.stage is Stage.INSTALLED and s.force and \
            _import_lost(view, pending):
        # The stop below advises --force: the order's key is gone with the import, so the
        # certificate is replaced anew.
        plan.discard(pending.object, "--force after the import was lost")
        pending = None
    if pending is None:
        return _replace_or_leave(plan, entry, freed)
    plan.decision.object = pending.object
    plan.decision.action = {Stage.ORDERED: Action.COLLECT, Stage.INSTALLED: Action.COMMIT
                            }.get(pending.stage, pending.kind)
    if pending.stage is Stage.INSTALLED:
        return _resume_installed(plan, pending)
    if pending.stage is Stage.ORDERING and not plan.interrupted(pending):
        return plan.decision
    if pending.stage is Stage.GENERATED:
        request = view.certificates.get(pending.object)
        if request is not None and not request.is_request:
            return plan.stopped(f"object {pending.object} on {s.device} holds something "
                                "other than the agent's pending request; rename or delete it")
        if request is None:  # the run that saved the request was stopped before making it
            plan.generate(pending.object, "the request the last run began")
        plan.order(pending.object, pending.kind)
    return plan.finish(pending.object, pending.replaces, pending.order_id)


def _replace_or_leave(plan: "_Plan", entry: Optional[CertificateEntry],
                      freed: Sequence[str]) -> Decision:
    s, decision = plan.s, plan.decision
    state = s.state
    if state.rejected and (not s.force or s.rejected_now):
        return plan.stopped(f"the last {rejected_order(state.rejected)} "
                            f"{state.rejected.get('reason')}. Fix the cause, then run: "
                            f"paloaltoagent.py renew {s.profile.name} --force")
    reason = due_reason(decision.condition, s.mode, s.force)
    if reason is None:
        decision.message = "up to date" if decision.condition.state is State.OK else \
            f"{decision.condition.reason}; enroll leaves it, renew replaces it"
        return plan.close()
    old = (state.object or s.profile.object_name) if entry is not None else None
    missing = missing_consumers(s.profile, s.view)
    if missing:
        return plan.stopped(f"{s.device} {'; it '.join(missing)}, which {s.profile.path} "
                            "names; fix the name (nothing was generated)")
    try:
        new = new_object(s.profile, s.view, s.now, freed)
    except AgentError as exc:
        return plan.stopped(str(exc))
    decision.object, decision.action = new, Action.RENEW if state.cert_id else Action.ENROLL
    plan.generate(new, reason)
    plan.order(new, Action.RENEW if state.cert_id else Action.ENROLL)
    return plan.finish(new, old, None)


def _resume_installed(plan: "_Plan", pending: Pending) -> Decision:
    """An earlier run imported the certificate, and its commit did not happen or failed."""
    entry = plan.s.view.certificates.get(pending.object)
    if entry is not None and entry.has_certificate and entry.has_key:
        return plan.finish(pending.object, pending.replaces, pending.order_id, installed=True)
    if not _import_lost(plan.s.view, pending):
        # The candidate lost the import (reverted by hand) but kept the request: the order
        # is issued, so collecting it again costs nothing.
        return plan.finish(pending.object, pending.replaces, pending.order_id)
    return plan.stopped(f"the certificate imported into {pending.object} is no longer in the "
                        f"candidate configuration of {plan.s.device}, and neither is its key; "
                        f"order anew with: paloaltoagent.py renew {plan.s.profile.name} "
                        "--force")


def _import_lost(view: DeviceView, pending: Pending) -> bool:
    """The certificate an earlier run imported is gone from the candidate, key and all."""
    entry = view.certificates.get(pending.object)
    return not (entry is not None and (entry.is_request or
                                       (entry.has_certificate and entry.has_key)))


class _Plan:
    """The steps as they are decided, and whether the device must commit for them."""

    def __init__(self, s: Situation, decision: Decision) -> None:
        self.s = s
        self.decision = decision
        self.needs_commit = False
        self.earlier_deletes: List[str] = []

    def add(self, step: Step) -> None:
        self.decision.steps.append(step)

    def stopped(self, message: str) -> Decision:
        self.decision.stop = message
        return self.close()

    def close(self) -> Decision:
        """The plan so far, with the commit it needs."""
        if self.needs_commit:
            text = self.s.commit_text
            if self.earlier_deletes and not any(
                    step.kind in (StepKind.INSTALL, StepKind.DELETE)
                    for step in self.decision.steps):
                text += f": the earlier delete of {', '.join(self.earlier_deletes)}"
            self.add(Step(StepKind.COMMIT, self.s.device, text))
        return self.decision

    # -- steps ------------------------------------------------------------------------------

    def clean_up(self, names: Sequence[str], repointed: Sequence[str] = ()) -> None:
        """Delete each superseded object nothing else uses; keep (and say) the others.
        `repointed`: consumers this plan points elsewhere before the delete."""
        view = self.s.view
        for name in dict.fromkeys(names):
            if name in self.s.kept:
                continue  # this run found it still in use, and said so
            if name not in view.certificates:
                self.needs_commit = True  # deleted in the candidate, perhaps not committed
                self.earlier_deletes.append(name)
                continue
            users = [b.describe() for b in view.references(name)
                     if b.describe() not in repointed]
            if users:
                self.add(Step(StepKind.KEEP, name,
                              f"keep {name}: still used by {', '.join(users)}",
                              users=tuple(users)))
            else:
                self.add(Step(StepKind.DELETE, name, f"delete {name}"))
                self.needs_commit = True

    def discard(self, name: str, why: str) -> None:
        entry = self.s.view.certificates.get(name)
        text = f"delete the unused request {name} ({why})" if entry is not None and \
            entry.is_request else f"forget the pending request for {name} ({why})"
        self.add(Step(StepKind.DISCARD, name, text, reason=why))
        if entry is not None and entry.is_request and not self.s.view.references(name):
            self.needs_commit = True  # steps.Steps deletes exactly such a request

    def generate(self, name: str, reason: str) -> None:
        profile = self.s.profile
        self.add(Step(StepKind.GENERATE, name,
                      f"generate {profile.key.label} key and CSR on {self.s.device} as {name} "
                      f"({reason})", reason=reason))

    def order(self, name: str, kind: Action) -> None:
        """Renew by the certificate's SCM id when it has one, else enroll."""
        profile, state = self.s.profile, self.s.state
        renew_of = state.cert_id if kind is Action.RENEW else None
        what = f"renew SCM certificate {renew_of}" if renew_of else "enroll at SCM"
        self.add(Step(StepKind.ORDER, name,
                      f"{what} ({profile.validation}, profile {profile.order.profile_id}) "
                      f"with the CSR in {name}", renew_of=renew_of))

    def interrupted(self, pending: Pending) -> bool:
        """A run stopped between sending an order and recording its answer: find out whether
        the order exists before anything else; False when the run must stop here."""
        s, name = self.s, pending.object
        if s.ids and s.ids != pending.ids_before:
            self.add(Step(StepKind.RESUME, name,
                          f"resume order {s.ids}, recorded in .ids by the interrupted run",
                          order_id=s.ids))
        elif s.adopt:
            self.add(Step(StepKind.ADOPT, name, f"adopt order {s.adopt} (--adopt)",
                          order_id=s.adopt))
        elif s.lookup:
            self.add(Step(StepKind.LOOKUP, name,
                          f"search SCM's orders for {s.profile.common_name} to find the "
                          "interrupted order; adopt it, or order if it never reached SCM" +
                          (" (or if several are found: --force)" if s.force else "")))
        elif s.force:
            self.add(Step(StepKind.REORDER, name,
                          f"order again at SCM with the CSR already in {name} (--force after "
                          "an interrupted order)"))
        else:
            self.stopped(
                f"a previous run was interrupted while ordering at SCM (at {pending.since}); "
                f"an order may exist. Look in SCM for an order for {s.profile.common_name} "
                f"placed then: if there is one, run: paloaltoagent.py renew {s.profile.name} "
                f"--adopt ID (the agent collects it); if there is none: paloaltoagent.py "
                f"renew {s.profile.name} --force (or set scm.lookup_label so the agent can "
                "look by itself)")
            return False
        return True

    def finish(self, new: str, old: Optional[str], order_id: Optional[str],
               installed: bool = False) -> Decision:
        """Collect, install, point the consumers at `new`, remove `old`, commit."""
        s = self.s
        if not installed:
            if not s.collected:
                self.add(Step(StepKind.COLLECT, new,
                              f"collect order {order_id}" if order_id else
                              "collect the new order", order_id=order_id))
            self.add(Step(StepKind.INSTALL, new,
                          f"verify the chain; import the CA certificates not yet on "
                          f"{s.device} and the certificate into {new}"))
        repointed = []
        for target in bind_targets(s.profile, s.view, new, old):
            self.add(Step(StepKind.BIND, new, bind_text(s.view, target, new),
                          binding=target.kind, location=target.location, scope=target.scope,
                          value=target.value if target.value != new else "",
                          replaces=target.replaces))
            repointed.append(Binding(target.kind, target.location, "",
                                     target.scope).describe())
        self.needs_commit = True
        if old and old != new:
            self.clean_up([old], repointed)
        return self.close()


# --- the decisions the steps are made of -------------------------------------------------------

def assess(profile: CertificateProfile, entry: Optional[CertificateEntry], now: dt.datetime,
           installed: Optional[dt.datetime] = None) -> Condition:
    """The certificate's condition on the device, and why it must be replaced. `installed`
    is when the agent installed it, if it did (a better "issued" time than Sectigo's
    not-before, which is midnight of the issue day)."""
    if entry is None:
        return Condition(State.MISSING, "no certificate on the firewall")
    facts = entry.facts
    if facts is None:
        return Condition(State.MISSING, "the object holds no certificate (only a request)")
    if entry.status == "revoked":
        return Condition(State.REVOKED, "revoked")
    if facts.not_after <= now:
        return Condition(State.EXPIRED, f"expired on {facts.not_after:%Y-%m-%d}")
    if facts.key_label != profile.key.label:
        return Condition(State.DUE, f"key changed in the profile ({facts.key_label} -> "
                                    f"{profile.key.label})")
    missing = [n for n in profile.names if not facts.covers(n)]
    if missing:
        return Condition(State.DUE, f"names added to the profile ({', '.join(missing)})")
    return _window(profile, facts, now, installed)


def _window(profile: CertificateProfile, facts: Facts, now: dt.datetime,
            installed: Optional[dt.datetime]) -> Condition:
    """The renewal window: never a reason to order on every run. A window at least as long
    as the certificate's lifetime (a term the configuration could not check) is replaced by
    a third of the lifetime, with a warning; and the window alone never replaces a
    certificate younger than a tenth of its lifetime, or a day."""
    lifetime = facts.not_after - facts.not_before
    window = profile.renewal.before_expiry(lifetime)
    warning = None
    if window >= lifetime:
        warning = (f"the renewal window ({profile.renewal}, {profile.renewal.source}) is not "
                   f"shorter than this certificate's lifetime ({lifetime.days} days), so it "
                   "would be replaced on every run; until you shorten it (for example "
                   "renew_before: 33%), a third of the lifetime is used")
        window = lifetime / 3
    if facts.not_after - window > now:
        return Condition(State.OK, None, warning)
    issued = max(facts.not_before, installed or facts.not_before)
    youngest = max(dt.timedelta(days=1), lifetime / 10)
    if now - issued < youngest:
        if warning:
            return Condition(State.OK, None, warning)
        return Condition(State.OK, None, f"inside its renewal window ({profile.renewal}) but "
                                         f"issued less than {_days(youngest)} ago "
                                         f"({issued:%Y-%m-%d %H:%M} UTC), so the window alone "
                                         "does not replace it yet; shorten the window",
                         once=True)
    return Condition(State.DUE, f"expires on {facts.not_after:%Y-%m-%d}, within "
                                f"{profile.renewal}", warning)


def _days(span: dt.timedelta) -> str:
    days = span.total_seconds() / 86400
    return "a day" if days <= 1 else f"{days:.0f} days"


def due_reason(condition: Condition, mode: Mode, force: bool) -> Optional[str]:
    """Why this run must replace the certificate, or None to leave it alone: `enroll` only
    fills in missing certificates, `renew` replaces whatever needs it, --force everything."""
    if force:
        return condition.reason or "renewal forced"
    if mode is Mode.ENROLL and condition.state is not State.MISSING:
        return None
    return condition.reason


@dataclass(frozen=True)
class BindTarget:
    """A consumer to make name something: `value` (the certificate, or for a via_profile
    kind an SSL/TLS profile), in place of `replaces` in a listed consumer."""

    kind: BindingKind
    scope: str
    location: str
    value: str
    replaces: Optional[str] = None


# Consumers reached through an SSL/TLS service profile, and those naming a certificate, by
# their field in the profile's `bindings:` section.
_Fields = Tuple[Tuple[str, Tuple[BindingKind, ...]], ...]
_VIA_PROFILE: _Fields = (("globalprotect_portals", (GLOBALPROTECT_PORTAL,)),
                ("globalprotect_gateways", (GLOBALPROTECT_GATEWAY,)))
_DIRECT: _Fields = (("decryption_rules", (INBOUND_INSPECTION, INBOUND_INSPECTION_LIST)),
           ("ike_gateways", (IKE_GATEWAY,)))


def missing_consumers(profile: CertificateProfile, view: DeviceView) -> List[str]:
    """What keeps the consumers `bindings:` names from being fed: one the device does not
    have, one with no SSL/TLS profile when the certificate profile names none to give it,
    one whose profile cannot name a certificate of this store."""
    problems = []
    own = profile.ssl_tls_service_profiles
    for key, kinds in _VIA_PROFILE + _DIRECT:
        for name in getattr(profile.bindings, key):
            found = view.find(kinds, name)
            if not found:
                problems.append(f"has no {kinds[0].title} '{name}' (bindings.{key})")
            for consumer in found if kinds[0].via_profile else []:
                problems += _profile_problems(view, consumer, own, f"bindings.{key}")
    if profile.bindings.management_ui:
        for consumer in view.find((MANAGEMENT_UI,), "") or [
                Binding(MANAGEMENT_UI, "", "", DEVICE_SCOPE)]:
            if consumer.scope != PEER_SCOPE:
                problems += _profile_problems(view, consumer, own, "bindings.management_ui")
    return problems


def _profile_problems(view: DeviceView, consumer: Binding, own: Sequence[str],
                      key: str) -> List[str]:
    label = consumer.consumer()
    if not consumer.certificate:
        return [] if own else [f"has {label} with no SSL/TLS service profile to point at the "
                               f"certificate ({key}; name one in ssl_tls_service_profiles)"]
    home = "shared" if consumer.scope == DEVICE_SCOPE else consumer.scope
    where = view.profile_scope(home, consumer.certificate)
    if view.store_scope.startswith("vsys") and where == "shared":
        return [f"has {label} using SSL/TLS service profile {consumer.certificate} of shared, "
                f"which cannot name a certificate of {view.store_scope} ({key}; give it a "
                f"{view.store_scope} profile, or keep this certificate in shared)"]
    return []


def bind_targets(profile: CertificateProfile, view: DeviceView, new: str,
                 old: Optional[str]) -> List[BindTarget]:
    """The consumers to point at `new`: the SSL/TLS profiles the profile names; the SSL/TLS
    profile of each GlobalProtect portal and gateway and of the management interface it
    names (or, where one has none, the first of its own profiles); the decryption rules
    and IKE gateways it names; and with `follow`, every managed consumer that named the
    object `new` replaces."""
    store = view.store_scope
    own = profile.ssl_tls_service_profiles
    wanted = [BindTarget(SSL_TLS_SERVICE_PROFILE, store, name, new) for name in own]
    users: List[Binding] = []
    for key, kinds in _VIA_PROFILE:
        for name in getattr(profile.bindings, key):
            users += view.find(kinds, name)
    if profile.bindings.management_ui:
        interfaces = view.find((MANAGEMENT_UI,), "")
        mine = [b for b in interfaces if b.scope != PEER_SCOPE] or \
            [Binding(MANAGEMENT_UI, "", "", DEVICE_SCOPE)]
        users += mine
        # An HA peer's choice does not sync (§3.3): one it has not made is made like ours.
        chosen = mine[0].certificate or (own[0] if own else "")
        wanted += [BindTarget(MANAGEMENT_UI, PEER_SCOPE, "", chosen) for b in interfaces
                   if b.scope == PEER_SCOPE and not b.certificate and chosen]
    for user in users:
        if user.certificate:  # it has a profile: that profile gets the certificate
            home = "shared" if user.scope == DEVICE_SCOPE else user.scope
            wanted.append(BindTarget(SSL_TLS_SERVICE_PROFILE,
                                     view.profile_scope(home, user.certificate),
                                     user.certificate, new))
        elif own:
            wanted.append(BindTarget(user.kind, user.scope, user.location, own[0]))
    for key, kinds in _DIRECT:
        for name in getattr(profile.bindings, key):
            wanted += [BindTarget(b.kind, b.scope, b.location, new, old)
                       for b in dict.fromkeys(view.find(kinds, name))]
    if old and old != new and profile.bindings.follow:
        wanted += [BindTarget(b.kind, b.scope, b.location, new, old)
                   for b in view.references(old) if b.kind.managed and not b.where]
    out: List[BindTarget] = []
    seen = set()
    for target in wanted:
        slot = (target.kind.name, target.scope, target.location)
        if slot in seen:
            continue
        seen.add(slot)
        if target.kind.listed:
            members = view.members(target.kind, target.location, target.scope)
            if target.value in members and target.replaces not in members:
                continue
        else:
            current = view.binding(target.kind, target.location, target.scope)
            if current is not None and current.certificate == target.value:
                continue
        out.append(target)
    return out


def bind_text(view: DeviceView, target: BindTarget, new: str) -> str:
    """How a plan says a bind: which consumer, where, and what it feeds."""
    kind, where = target.kind, f" in {target.scope}" if target.scope.startswith("vsys") \
        else ""
    exists = view.binding(kind, target.location, target.scope) is not None
    if kind.via_profile:
        name = f" {target.location}" if target.location else ""
        peer = " of the HA peer (it does not sync)" if target.scope == PEER_SCOPE else ""
        return f"point {kind.title}{name}{where}{peer} at SSL/TLS service profile " \
               f"{target.value}"
    if kind.listed:
        members = view.members(kind, target.location, target.scope)
        how = f"in place of {target.replaces}" if target.replaces in members else \
            "added to its certificates"
        return f"point {kind.title} {target.location}{where} at {new} ({how})"
    if not exists and kind.template is not None:
        return f"create {kind.title} {target.location}{where} for {new}"
    text = f"point {kind.title} {target.location}{where} at {new}"
    fed = [u.consumer() for u in view.profile_users(target.scope, target.location)] \
        if kind == SSL_TLS_SERVICE_PROFILE else []
    return text + (f" (used by {', '.join(fed)})" if fed else "")


def new_object(profile: CertificateProfile, view: DeviceView, now: dt.datetime,
               freed: Collection[str] = ()) -> str:
    """The profile's object name when it is free, else `<name>-YYYYMMDD`, then `-2`, `-3`…
    on the same day: predictable and within 63 characters (config.py keeps the base short
    enough). `freed`: names the run will have deleted by then."""
    # A vsys's own certificate of the same name would shadow a shared one for its consumers.
    taken = {n.lower() for n in view.certificates if n not in freed} | \
        {n.lower() for n in view.taken} | \
        {n.lower() for names in view.vsys_names.values() for n in names}
    if profile.object_name.lower() not in taken:
        return profile.object_name
    stem = f"{profile.object_name}-{now:%Y%m%d}"
    if stem.lower() not in taken:
        return stem
    for n in range(2, 100):
        if f"{stem}-{n}".lower() not in taken:
            return f"{stem}-{n}"
    raise AgentError(f"no free object name for {profile.object_name} today")


def request_spec(profile: CertificateProfile) -> Dict[str, Any]:
    """What a key and CSR made on the device are made for: if any of it changes in the
    profile before the request is ordered, the request is made again."""
    subject = profile.subject
    return {"key": profile.key.label, "digest": profile.digest,
            "names": list(profile.names), "validation": profile.validation,
            "subject": [subject.organization, list(subject.organizational_unit),
                        subject.locality, subject.state, subject.country, subject.email]}


def stale_request(profile: CertificateProfile, pending: Pending) -> Optional[str]:
    """Why a request that has not been ordered yet no longer fits its profile (None: it
    does). State files from before requests were recorded are judged by their CSR."""
    if pending.request is not None:
        spec = request_spec(profile)
        changed = [k for k in spec if pending.request.get(k) != spec[k]]
        if changed:
            return f"the profile's {', '.join(changed)} changed since the request in " \
                   f"{pending.object} was made"
        return None
    if pending.csr:
        from .certs import csr_summary  # X.509: only for a pending request (facts.py)
        key, names = csr_summary(pending.csr)
        if key != profile.key.label:
            return f"the request in {pending.object} has a {key} key, the profile asks for " \
                   f"{profile.key.label}"
        missing = [n for n in profile.names if not names_cover(names, n)]
        if missing:
            return f"the request in {pending.object} does not name {', '.join(missing)}"
    return None


def installed_at(state: CertState, name: str) -> Optional[dt.datetime]:
    """When the agent committed the certificate now under `name` (from the state's history)."""
    for event in reversed(state.history):
        if event.get("event") == "committed" and event.get("object") == name:
            try:
                return dt.datetime.fromisoformat(str(event.get("time")))
            except ValueError:
                return None
    return None


def rejected_order(rejected: Dict[str, Any]) -> str:
    """'order 1234', or 'order' when SCM refused it before giving it an id."""
    return f"order {rejected['order_id']}" if rejected.get("order_id") else "order"


def pending_text(profile: CertificateProfile, pending: Pending,
                 awaits: str = "committed") -> str:
    """What `status` says of a certificate on its way; `awaits` is what an imported one
    still needs on its device (Device.awaits)."""
    if pending.stage is Stage.GENERATED:
        why = stale_request(profile, pending)
        if why:
            return f"{why}; the next run makes a new key and CSR and orders with them"
        return f"key and CSR made on the firewall in {pending.object}; not ordered yet (the " \
               "next run orders)"
    if pending.stage is Stage.ORDERING:
        return f"a run was interrupted while ordering at SCM ({pending.since}); the next run " \
               "finds out whether the order exists before anything else"
    if pending.stage is Stage.INSTALLED:
        return f"order {pending.order_id} imported into {pending.object}, not yet {awaits} " \
               "(the next run does it)"
    return f"order {pending.order_id} placed at SCM, waiting for issuance (the next run " \
           "collects it)"
