"""The certificate lifecycle: PRODUCT.md's workflow, carried out per device.

For each device (a firewall, in parallel with the others):

  3. Read what it holds (one configuration read). For each certificate profile, `plan.decide`
     says what the certificate needs; the run executes the first step and decides again,
     until the certificate waits for SCM, for the device's commit, or is done:
     a key pair and CSR are made *on the device* (never under a name in use), the order is
     placed at SCM, or an interrupted order is found again.
  4. Collect every order of the device together, so that their waits for SCM overlap; as
     each is issued, verify it, import the CA certificates (once each) and the certificate,
     read it back, point the consumers at it and delete the object it replaces if nothing
     else uses it.
  5. Commit the device once (partial: the agent's admin only), for every certificate of the
     run; then record what the commit took in.
  6. Log every main event.

Every step is resumable: the state file says how far a certificate got (the `ordering` stage
is saved before an order goes out, SCM's answer in `.ids` before the state file), so a run
interrupted anywhere, followed by another run, ends with exactly one order per certificate.
A consumer is pointed at a new object only after its certificate and key were read back from
the device, so whatever a commit takes in, no service points at an incomplete object.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Set

from . import certs, http
from .device import CertificateEntry, Device, Firewall
from .errors import (AgentError, Interrupted, OrderRejected, PanosError, ScmError,
                     VerificationError)
from .plan import (Decision, Situation, Step, StepKind, decide, pending_text, rejected_order,
                   request_spec)
from .results import Action, Outcome, Report, Result, State
from .scm import RENEW_REFUSED_CODES, ClassicClient, ScmClient, make_client, make_lookup
from .settings import CertificateProfile, Config, ScmSettings
from .state import CertState, Pending, Stage, StateStore, now_iso

log = logging.getLogger(__name__)

# Steps that change the device's candidate configuration: a certificate that took one takes
# part in the device's commit, even if its order still waits at SCM.
CHANGES_CANDIDATE = (StepKind.DISCARD, StepKind.INSTALL, StepKind.BIND, StepKind.DELETE)
# No certificate takes more steps in one run (a guard against a decision that loops).
MAX_STEPS = 100


@dataclass
class RunOptions:
    # "enroll": only missing certificates; "renew": everything due; "status": only look.
    mode: str = "renew"
    force: bool = False
    dry_run: bool = False  # read only: plan, send no write and no order
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))
    sleep: Callable[[float], None] = time.sleep
    # Called with each certificate's final result, from the device's worker thread.
    progress: Optional[Callable[[Result], None]] = None
    # Set (by a SIGINT/SIGTERM handler) to stop: no new step starts, waits end early.
    stop: Optional[threading.Event] = None
    # An SCM order id the administrator found for an interrupted order (renew --adopt).
    adopt: Optional[str] = None

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def pause(self, seconds: float) -> None:
        """Sleep, but wake up when a stop is asked."""
        if self.stop is not None and self.sleep is time.sleep:
            self.stop.wait(seconds)
        else:
            self.sleep(seconds)


class Rejected(AgentError):
    """The order can never give a usable certificate; its state is recorded (`rejected`, the
    request object among the superseded), so the run goes on to clean up."""


@dataclass
class Certificate:
    """One certificate profile during a device's run."""

    profile: CertificateProfile
    result: Result
    state: CertState
    chain: Optional[certs.Chain] = None  # the pending order's issued chain, collected now
    kept: Set[str] = field(default_factory=set)  # superseded objects found still in use
    waiting: bool = False  # its next step is collecting an order SCM is processing
    committing: bool = False  # it takes part in the device's commit
    stop: Optional[str] = None  # a failure to report once the run is over
    made_now: bool = False  # this run made the pending request


class DeviceRun:
    """All certificates of one device: decide, act, decide again; collect together; one
    commit."""

    def __init__(self, device: Device, profiles: Sequence[CertificateProfile],
                 store: StateStore, scm_settings: Optional[ScmSettings],
                 scm: Callable[[], ScmClient], lookup: Callable[[], Optional[ClassicClient]],
                 options: RunOptions) -> None:
        self.device = device
        self.profiles = profiles
        self.store = store
        self.scm_settings = scm_settings
        self.scm = scm
        self.lookup = lookup
        self.options = options
        self.commits = 0  # commit jobs that succeeded
        self.started = time.monotonic()
        self.results: Dict[str, Result] = {}
        self.certificates: List[Certificate] = []

    def run(self) -> List[Result]:
        self.results = {p.name: Result(p.name, self.device.name, common_name=p.common_name,
                                       key=p.key.label) for p in self.profiles}
        if self.options.stopping():
            for result in self.results.values():
                result.interrupt("not started")
            return self._done()
        # Step 3: one read tells what the device holds.
        try:
            self.device.read()
        except PanosError as exc:
            for result in self.results.values():
                result.fail(str(exc))
            return self._done()
        for profile in self.profiles:
            result = self.results[profile.name]
            try:
                state = self.store.load(profile.name)
            except AgentError as exc:
                result.fail(str(exc))
                continue
            self.certificates.append(Certificate(profile, result, state))
        if self.options.mode == "status":
            for cert in self.certificates:
                self._look(cert)
        elif self.options.dry_run:
            for cert in self.certificates:
                self._plan(cert)
        else:
            self._execute()
        return self._done()

    def _execute(self) -> None:
        # Steps 3-4 for every certificate, as far as each can go without waiting.
        for cert in self.certificates:
            if self.options.stopping():
                cert.result.interrupt("not started")
                continue
            self._advance(cert, first=True)
        # Step 4: collect all orders together, so that their waits for SCM overlap.
        self._collect_all()
        if self.options.stopping():
            for cert in self.certificates:
                if cert.committing and cert.result.outcome is not Outcome.INTERRUPTED:
                    cert.result.interrupt(self._uncommitted(cert))
            return
        # Step 5: one commit for the device.
        self._commit()

    def _done(self) -> List[Result]:
        if self.device.stale_api_key:
            self._stale_key_notice()
        elapsed = time.monotonic() - self.started
        for result in self.results.values():
            result.seconds = elapsed
            if self.options.progress:
                self.options.progress(result)
        return list(self.results.values())

    # -- deciding ---------------------------------------------------------------------------

    def _situation(self, cert: Certificate) -> Situation:
        settings = self.scm_settings
        return Situation(
            profile=cert.profile, state=cert.state, view=self.device.view,
            now=self.options.now(), mode=self.options.mode, force=self.options.force,
            adopt=self.options.adopt,
            lookup=settings is not None and settings.lookup is not None,
            ids=self.store.read_ids(cert.profile.name), device=self.device.name,
            commit_text=self.device.commit_text(), collected=cert.chain is not None,
            kept=frozenset(cert.kept), made_now=cert.made_now)

    def _decide(self, cert: Certificate, first: bool = False) -> Decision:
        """Decide, and keep the result's description in step (on the first decision of the
        run also: the state the certificate was found in, and any warning about it)."""
        decision = decide(self._situation(cert))
        result, state = cert.result, cert.state
        if first:
            current = state.object or cert.profile.object_name
            self._describe(result, self.device.view.certificates.get(current))
            result.cert_id = state.cert_id
            result.state = State.PENDING if state.pending else decision.condition.state
            if decision.condition.warning and state.pending is None:
                self._warn(cert.profile, decision.condition.warning,
                           once=decision.condition.once)
        result.object = decision.object
        if result.action is Action.NONE:  # what the run does: as first decided
            result.action = decision.action
        if decision.message and not result.message:
            result.message = decision.message
        return decision

    def _look(self, cert: Certificate) -> None:
        """`status`: the certificate's condition, from the one read and the state file."""
        decision = self._decide(cert, first=True)
        state = cert.state
        cert.result.object = state.object or cert.profile.object_name
        if state.pending:
            cert.result.message = pending_text(cert.profile, state.pending)
        elif state.rejected:
            cert.result.state = State.ERROR
            cert.result.message = f"the last {rejected_order(state.rejected)} " \
                                  f"{state.rejected.get('reason')}; fix the cause, then: " \
                                  f"paloaltoagent.py renew {cert.profile.name} --force"
        elif decision.condition.state is State.OK:
            cert.result.message = "up to date"

    def _plan(self, cert: Certificate) -> None:
        """`--dry-run`: the decision's steps, printed instead of taken."""
        decision = self._decide(cert, first=True)
        cert.result.planned = list(decision.steps)
        if decision.stop and not decision.steps:
            cert.result.fail(decision.stop)
        elif decision.action is not Action.NONE:
            cert.result.outcome = Outcome.PLANNED

    # -- acting -----------------------------------------------------------------------------

    def _advance(self, cert: Certificate, first: bool = False) -> None:
        """Execute the decided steps one by one, deciding again after each, until the
        certificate waits (for SCM or the commit), is done, or fails."""
        previous: Optional[Step] = None
        for _ in range(MAX_STEPS):
            decision = self._decide(cert, first)
            first = False
            step = decision.steps[0] if decision.steps else None
            if step is None or step.kind is StepKind.COMMIT:
                cert.committing = cert.committing or step is not None
                self._settle(cert, decision.stop)
                return
            if step.kind is StepKind.COLLECT and cert.chain is None:
                cert.waiting = True
                return
            if self.options.stopping():
                cert.result.interrupt(self._uncommitted(cert) if cert.committing else
                                      f"before: {step.text}")
                return
            if step == previous:  # a step that changed nothing would repeat for ever
                raise AssertionError(f"{cert.profile.name}: no progress at {step.text}")
            previous = step
            try:
                self._step(cert, step)
            except Interrupted as exc:
                cert.result.interrupt(str(exc))
                return
            except Rejected as exc:
                self._failed(cert, str(exc))
                continue  # decide again: the refused request is cleaned up
            except AgentError as exc:
                self._failed(cert, str(exc))
                return
            cert.result.done.append(step)
            cert.committing = cert.committing or step.kind in CHANGES_CANDIDATE
        raise AssertionError(f"{cert.profile.name}: more than {MAX_STEPS} steps: "
                             f"{[s.kind.value for s in cert.result.done]}")

    def _settle(self, cert: Certificate, stop: Optional[str]) -> None:
        """The certificate waits for the commit or is done: a stop is reported as a failure
        (after the commit, for one that takes part in it)."""
        if stop and not cert.result.failed:
            if cert.committing:
                cert.stop = stop
            else:
                self._failed(cert, stop)

    def _failed(self, cert: Certificate, message: str) -> None:
        if not cert.result.failed:
            cert.result.fail(message)
            log.error("%s: %s", cert.profile.name, message)

    def _step(self, cert: Certificate, step: Step) -> None:
        kind = step.kind
        if kind is StepKind.DISCARD:
            self._discard(cert, step)
        elif kind is StepKind.GENERATE:
            self._generate(cert, step)
        elif kind is StepKind.ORDER:
            self._order(cert, self.device.export_csr(step.object))
        elif kind in (StepKind.RESUME, StepKind.ADOPT):
            assert step.order_id
            self._adopt(cert, step.order_id, "recorded in .ids by the interrupted run"
                        if kind is StepKind.RESUME else "given with --adopt")
        elif kind is StepKind.LOOKUP:
            self._lookup(cert)
        elif kind is StepKind.REORDER:
            log.warning("%s: ordering again after an interrupted attempt (--force)",
                        cert.profile.name)
            self._order(cert, self.device.export_csr(step.object))
        elif kind is StepKind.INSTALL:
            self._install(cert, step.object)
        elif kind is StepKind.BIND:
            assert step.binding is not None
            log.info("%s: %s", cert.profile.name, step.text)
            self.device.bind(step.binding, step.location, step.object)
        elif kind is StepKind.DELETE:
            self._delete(cert, step.object)
        elif kind is StepKind.KEEP:
            log.warning("%s: keeping old %s, still used by %s (repoint it, and the next run "
                        "deletes it)", cert.profile.name, step.object, ", ".join(step.users))
            cert.kept.add(step.object)
        else:  # COLLECT and COMMIT are the run's, not a single certificate's
            raise AssertionError(f"not a certificate's step: {step}")

    def _discard(self, cert: Certificate, step: Step) -> None:
        """Delete an unordered request object (a key and CSR only; nothing can use it) and
        forget it. Its deletion is committed with the rest of the run."""
        state, name, view = cert.state, step.object, self.device.view
        log.info("%s: making a new key and CSR instead of the unused request in %s (%s)",
                 cert.profile.name, name, step.reason)
        entry = view.certificates.get(name)
        users = view.references(name) if entry is not None else []
        if entry is not None and entry.is_request and not users:
            self.device.delete(name)
            if name not in state.superseded:
                state.superseded.append(name)  # so that the delete is committed
        elif entry is not None:
            # Not a bare request any more (a certificate was imported into it, or something
            # names it): not the agent's to delete.
            log.warning("%s: leaving %s on %s as it is (%s)", cert.profile.name, name,
                        self.device.name, f"used by {', '.join(b.describe() for b in users)}"
                        if users else "it holds a certificate")
        state.note("discarded", object=name, reason=step.reason)
        state.pending = None
        self.store.save(state)

    def _generate(self, cert: Certificate, step: Step) -> None:
        """Save the request as `generated`, then have the device make the key and CSR."""
        profile, state = cert.profile, cert.state
        if state.pending is None:
            log.info("%s: replacing the certificate on %s: %s", profile.name, self.device.name,
                     step.reason)
            # What SCM would refuse is found out before the device makes a key for it.
            self.scm().preflight(profile)
            current = state.object or profile.object_name
            state.rejected = None
            state.pending = Pending(
                stage=Stage.GENERATED, object=step.object,
                kind="renew" if state.cert_id else "enroll", since=now_iso(),
                replaces=current if current in self.device.view.certificates else None,
                request=request_spec(profile))
            if step.object in state.superseded:  # a name freed earlier in this run
                state.superseded.remove(step.object)
            state.note("replace", reason=step.reason, object=step.object)
            self.store.save(state)
        log.info("%s: generating %s key and CSR on %s as %s", profile.name, profile.key.label,
                 self.device.name, step.object)
        self.device.generate(step.object, profile)
        cert.made_now = True

    def _order(self, cert: Certificate, csr_pem: str) -> None:
        """Place the order. The `ordering` stage is saved before it goes out, SCM's answer in
        `.ids` before the state file: a run stopped in between is found out by the next."""
        if self.options.stopping():  # the request is saved: the next run orders with it
            raise Interrupted("key and CSR made, not ordered; the next run orders")
        profile, state = cert.profile, cert.state
        pending = state.pending
        assert pending is not None
        certs.csr_key(csr_pem)  # a CSR that does not parse fails here, before ordering
        pending.csr = csr_pem.strip()
        client = self.scm()
        pending.api = client.api
        pending.ids_before = self.store.read_ids(profile.name)
        # Written before the order goes out: a crash from here until SCM's answer is recorded
        # is noticed by the next run, which will not order again on its own.
        pending.stage = Stage.ORDERING
        self.store.save(state)
        try:
            order_id = self._send_order(client, cert)
        except ScmError as exc:
            if exc.refused:
                # SCM refused this very request (a key type, a name, a custom field...): it
                # would refuse it again, so the request is discarded, not re-sent every night.
                raise self._reject(cert, f"was refused by SCM: {exc}") from None
            if exc.placed_nothing:
                pending.stage = Stage.GENERATED
                state.note("order not placed", reason=str(exc))
                self.store.save(state)
                raise
            # The answer was lost: SCM may have placed the order. The `ordering` stage stays,
            # so no run orders again before finding out.
            if self.scm_settings is not None and self.scm_settings.lookup is not None:
                then = "the next run searches SCM's orders for it and collects it, or orders " \
                       "only if it never reached SCM"
            else:
                then = (f"no run orders again on its own. Look in SCM for an order for "
                        f"{profile.common_name} placed now: if there is one, run: "
                        f"paloaltoagent.py renew {profile.name} --adopt ID (the agent collects "
                        f"it); if there is none: paloaltoagent.py renew {profile.name} --force "
                        "(scm.lookup_label lets the agent look by itself)")
            raise AgentError(f"{exc}; SCM may have placed the order without its answer "
                             f"arriving: {then}") from None
        cert.result.ordered = True
        self.store.write_ids(profile.name, order_id)
        pending.order_id, pending.stage = order_id, Stage.ORDERED
        state.note("ordered", order_id=order_id, kind=pending.kind, api=client.api)
        self.store.save(state)

    def _send_order(self, client: ScmClient, cert: Certificate) -> str:
        profile, state = cert.profile, cert.state
        pending = state.pending
        assert pending is not None and pending.csr
        if pending.kind == "renew" and state.cert_id:
            try:
                order_id = client.renew(state.cert_id, pending.csr, profile)
                log.info("%s: SCM renewal of %s ordered: id %s", profile.name, state.cert_id,
                         order_id)
                return order_id
            except ScmError as exc:
                if exc.code not in RENEW_REFUSED_CODES:
                    raise
                log.warning("%s: SCM will not renew %s (%s); enrolling instead", profile.name,
                            state.cert_id, exc)
                pending.kind = "enroll"
        order_id = client.enroll(pending.csr, profile)
        log.info("%s: SCM enrollment ordered: id %s", profile.name, order_id)
        return order_id

    def _lookup(self, cert: Certificate) -> None:
        """A run stopped between sending an order and recording its id: a classic-API search
        (scm.lookup_label) tells whether the order exists, with or without --force (the
        everyday "renew now" must not skip it). It is adopted when it is found; the order is
        placed now when it never reached SCM; several candidates need --adopt or --force."""
        profile, state = cert.profile, cert.state
        pending = state.pending
        assert pending is not None
        lookup = self.lookup()
        assert lookup is not None
        csr_key = certs.csr_key(pending.csr) if pending.csr else None
        # A day early: SCM's dates are days, perhaps in another time zone.
        since = dt.date.fromisoformat(pending.since[:10]) - dt.timedelta(days=1)
        found = lookup.find_orders(profile.common_name, since, self.store.known_order_ids(),
                                   csr_key)
        if len(found) == 1:
            self._adopt(cert, found[0], "found at SCM")
            return
        if found and not self.options.force:
            raise AgentError(f"a previous run was interrupted while ordering and SCM has "
                             f"several new orders for {profile.common_name} "
                             f"({', '.join(found)}); check in SCM which was placed at "
                             f"{pending.since}, then run: paloaltoagent.py renew "
                             f"{profile.name} --adopt ID (or --force to order anew)")
        if found:
            log.warning("%s: ordering again after an interrupted attempt (--force)",
                        profile.name)
        else:
            log.info("%s: the interrupted order never reached SCM; ordering now", profile.name)
        self._order(cert, self.device.export_csr(pending.object))

    def _adopt(self, cert: Certificate, order_id: str, how: str) -> None:
        state = cert.state
        pending = state.pending
        assert pending is not None
        log.info("%s: resuming order %s (%s)", cert.profile.name, order_id, how)
        self.store.write_ids(cert.profile.name, order_id)
        pending.order_id, pending.stage = order_id, Stage.ORDERED
        state.note("ordered", order_id=order_id, kind=pending.kind, api=pending.api,
                   recovered=how)
        self.store.save(state)

    def _collect_all(self) -> None:
        """Collect every waiting order, polling them in turn until each is issued or
        poll_timeout has passed; each one issued goes on at once (verify, import, bind)."""
        waiting = [c for c in self.certificates if c.waiting]
        if not waiting:
            return
        assert self.scm_settings is not None
        deadline = time.monotonic() + self.scm_settings.poll_timeout
        while waiting:
            still: List[Certificate] = []
            for index, cert in enumerate(waiting):
                if self.options.stopping():
                    for left in still + waiting[index:]:
                        assert left.state.pending is not None
                        left.result.interrupt(f"order {left.state.pending.order_id} waits at "
                                              "SCM; the next run collects it")
                    return
                try:
                    cert.chain = self._collect(cert)
                except Rejected as exc:
                    self._failed(cert, str(exc))
                    cert.waiting = False
                    self._advance(cert)  # the refused request is cleaned up
                    continue
                except AgentError as exc:
                    self._failed(cert, str(exc))
                    continue
                if cert.chain is None:
                    still.append(cert)
                    continue
                cert.waiting = False
                cert.result.done.append(Step(StepKind.COLLECT, cert.state.pending.object
                                             if cert.state.pending else "",
                                             f"collect order {self._order_id(cert)}"))
                self._advance(cert)
            waiting = still
            if not waiting:
                break
            if time.monotonic() + self.scm_settings.poll_interval > deadline:
                for cert in waiting:
                    cert.result.outcome = Outcome.PENDING
                    cert.result.message = (f"order {self._order_id(cert)} is still being "
                                           "processed by SCM; the next run collects it")
                    log.info("%s: %s", cert.profile.name, cert.result.message)
                break
            self.options.pause(self.scm_settings.poll_interval)

    @staticmethod
    def _order_id(cert: Certificate) -> Optional[str]:
        return cert.state.pending.order_id if cert.state.pending else None

    def _collect(self, cert: Certificate) -> Optional[certs.Chain]:
        """One collection attempt; the verified chain, or None while SCM is processing."""
        profile, pending = cert.profile, cert.state.pending
        assert pending is not None and pending.order_id
        try:
            data = self.scm().collect(pending.order_id)
        except OrderRejected as exc:
            raise self._reject(cert, f"was refused by SCM: {exc}") from None
        if data is None:
            return None
        # _order saved the CSR before the order went out, so every collected order has it.
        assert pending.csr, "an order without its CSR in the state file"
        csr_key = certs.csr_key(pending.csr)
        try:
            chain = certs.build_chain(certs.load_certificates(data), csr_key,
                                      self.device.view.anchors())
            certs.verify_issued(chain, csr_key, profile.names, self.options.now())
        except VerificationError as exc:
            if exc.retry:
                raise AgentError(f"order {pending.order_id}: {exc}; collecting again next "
                                 "run") from None
            raise self._reject(cert, f"was refused before import: {exc}; nothing was "
                                     "imported") from None
        issued = certs.validation_level(chain.leaf)
        if issued and issued != profile.validation:
            log.warning("%s: the profile asks for %s but SCM issued %s: check scm.profile_id",
                        profile.name, profile.validation, issued)
        log.info("%s: collected %s (expires %s), chain verified", profile.name,
                 pending.order_id, f"{chain.leaf.not_valid_after_utc:%Y-%m-%d}")
        return chain

    def _reject(self, cert: Certificate, reason: str) -> Rejected:
        """An order that will never give a usable certificate: keep it on record for
        investigation, clean up its unused request object, and wait for --force."""
        state = cert.state
        pending = state.pending
        assert pending is not None
        state.rejected = {"order_id": pending.order_id, "reason": reason, "time": now_iso()}
        if pending.object != state.object and pending.object not in state.superseded:
            state.superseded.append(pending.object)
        state.note("rejected", order_id=pending.order_id, reason=reason)
        state.pending = None
        cert.chain = None
        self.store.save(state)
        return Rejected(f"{rejected_order(state.rejected)} {reason}. Fix the cause (in SCM or "
                        f"the profile), then run: paloaltoagent.py renew {cert.profile.name} "
                        "--force")

    def _install(self, cert: Certificate, name: str) -> None:
        """Import the CA certificates the device lacks (once each, by fingerprint) and the
        certificate, and read it back: it must be there with its own key."""
        profile, state, chain = cert.profile, cert.state, cert.chain
        assert chain is not None and state.pending is not None
        known = self.device.view.ca_by_fingerprint()
        for ca in chain.cas:
            fingerprint = certs.fingerprint(ca)
            if fingerprint in known:
                continue
            ca_name = certs.ca_object_name(ca)
            log.info("%s: importing CA certificate %s", profile.name, ca_name)
            self.device.import_ca(ca_name, ca)
            known[fingerprint] = ca_name
        log.info("%s: importing the certificate into %s", profile.name, name)
        back = self.device.import_certificate(name, chain.leaf)
        if not back.has_key:
            raise AgentError(f"{name} on {self.device.name} does not hold the imported "
                             "certificate with its private key; no service was pointed at it")
        state.pending.stage = Stage.INSTALLED
        state.note("imported", object=name, order_id=state.pending.order_id)
        self.store.save(state)

    def _delete(self, cert: Certificate, name: str) -> None:
        """Delete a superseded object, unless something uses it after all (the device would
        refuse with code 10): then it is kept, and said."""
        users = self.device.view.references(name)
        if users:
            log.warning("%s: keeping old %s, still used by %s (repoint it, and the next run "
                        "deletes it)", cert.profile.name, name,
                        ", ".join(b.describe() for b in users))
            cert.kept.add(name)
            return
        try:
            self.device.delete(name)
        except PanosError as exc:
            log.warning("%s: keeping old %s: %s", cert.profile.name, name, exc)
            cert.kept.add(name)

    # -- step 5: commit -------------------------------------------------------------------

    def _commit(self) -> None:
        """One commit for every certificate that changed the candidate or waits for one;
        then each records what the commit took in."""
        taking_part = [c for c in self.certificates if c.committing]
        if not taking_part:
            return
        step = Step(StepKind.COMMIT, self.device.name, self.device.commit_text())
        try:
            if self.device.commit():
                self.commits += 1
        except Interrupted as exc:
            for cert in taking_part:
                cert.result.interrupt(f"{exc}; the next run completes it")
            return
        except PanosError as exc:
            log.error("%s: commit failed: %s", self.device.name, exc)
            for cert in taking_part:
                self._failed(cert, self._uncommitted(cert, exc))
            return
        for cert in taking_part:
            cert.result.done.append(step)
            self._committed(cert)

    def _uncommitted(self, cert: Certificate, exc: Optional[Exception] = None) -> str:
        pending = cert.state.pending
        why = f": {exc}" if exc else ""
        if pending is not None and pending.stage is Stage.INSTALLED:
            return f"imported into {pending.object} but not committed (the next run commits " \
                   f"again){why}"
        return f"removing the old object was not committed (the next run tries again){why}"

    def _committed(self, cert: Certificate) -> None:
        """Record what the commit took in. A certificate that failed on the way keeps its
        stage (the next run goes on from it); what it deleted is recorded either way."""
        state, result, view = cert.state, cert.result, self.device.view
        pending = state.pending
        if pending is not None and pending.stage is Stage.INSTALLED and not result.failed:
            assert pending.order_id
            old = pending.replaces
            if old and old != pending.object and old in view.certificates and \
                    old not in state.superseded:
                state.superseded.append(old)  # kept: a later run deletes it
            state.object, state.cert_id, state.api = pending.object, pending.order_id, \
                pending.api
            state.pending = None
            state.note("committed", object=state.object, cert_id=state.cert_id)
            result.outcome, result.object, result.cert_id = Outcome.CHANGED, state.object, \
                state.cert_id
            result.message = f"installed as {state.object}"
            self._describe(result, view.certificates.get(state.object))
        for name in [n for n in state.superseded if n not in view.certificates and
                     n != (state.pending.object if state.pending else None)]:
            log.info("%s: removed superseded %s", cert.profile.name, name)
            state.note("removed", object=name)
            state.superseded.remove(name)
        self.store.save(state)  # .ids has held the new id since the order was placed
        if cert.stop:
            self._failed(cert, cert.stop)

    # -- telling ------------------------------------------------------------------------------

    @staticmethod
    def _describe(result: Result, entry: Optional[CertificateEntry]) -> None:
        facts = entry.facts if entry is not None else None
        if facts is not None:
            result.not_after, result.issuer = facts.not_after, facts.issuer_cn
            result.key, result.common_name = facts.key_label, facts.subject_cn

    def _warn(self, profile: CertificateProfile, message: str, once: bool = False) -> None:
        self._notice(f"{profile.name}: {message}", f"{profile.name}: {message}", once)

    def _notice(self, key: str, message: str, once: bool = False) -> None:
        """A warning a person must act on; with `once`, only the first time this state
        directory sees `key` (later runs log it at INFO), so cron does not mail it nightly.
        Status and dry runs write nothing, so they only log it."""
        looking = self.options.mode == "status" or self.options.dry_run
        if once and (looking or not self.store.first_notice(key)):
            log.info("%s", message)
        else:
            log.warning("%s", message)

    def _stale_key_notice(self) -> None:
        """The configured API key was refused and keygen made a new one: say once, per key,
        which field to change; cron would mail the same warning every night otherwise."""
        device = self.device
        assert isinstance(device, Firewall)
        fw = device.profile
        assert fw.api_key is not None
        digest = hashlib.sha256(fw.api_key.reveal().encode()).hexdigest()[:16]
        self._notice(f"stale api_key {fw.name} {digest}",
                     f"firewall {fw.name}: the firewall refuses the api_key of {fw.path} "
                     f"({fw.name}.api_key; a password change or key expiry invalidates keys), "
                     f"so the agent generates a key from username '{fw.username}' on every "
                     "run instead. Replace api_key with a new key for that user (type=keygen),"
                     " or delete api_key to always log in with username and password. (Said "
                     "once for this key.)", once=True)


def run(config: Config, names: Sequence[str], options: RunOptions) -> Report:
    """Steps 2-6 for the selected certificate profiles (all when `names` is empty), on up to
    max_parallel_firewalls devices at once; a slow or dead device holds up only its own
    thread (and only up to its timeouts). With mode "status" or a dry run, only reads."""
    report = Report([])
    started = time.monotonic()
    profiles = [config.certificates[n] for n in dict.fromkeys(names)] if names else \
        list(config.certificates.values())
    store = StateStore(config.state_dir)
    store.ensure_writable()
    by_device: Dict[str, List[CertificateProfile]] = {}
    for profile in profiles:
        by_device.setdefault(profile.firewall, []).append(profile)
    workers = min(config.max_parallel_firewalls, len(by_device)) or 1
    clients: Dict[str, Optional[ScmClient]] = {}
    made = threading.Lock()
    shared = http.Shared()  # TLS contexts and proxy settings, prepared once for all devices

    def scm() -> ScmClient:
        # Made on first use: a run with nothing due sends SCM nothing at all.
        with made:
            if "main" not in clients:
                assert config.scm is not None
                clients["main"] = make_client(config.scm, pool_size=workers)
            client = clients["main"]
        assert client is not None
        return client

    def lookup() -> Optional[ClassicClient]:
        main = scm()
        with made:
            if "lookup" not in clients:
                assert config.scm is not None
                clients["lookup"] = main if isinstance(main, ClassicClient) and \
                    config.scm.lookup == config.scm.credentials else make_lookup(config.scm)
            found = clients["lookup"]
        assert found is None or isinstance(found, ClassicClient)
        return found

    def one_device(name: str) -> List[Result]:
        firewall = config.firewalls[name]
        if not firewall.tls.verify and not firewall.tls.fingerprint:
            log.warning("%s: TLS verification is OFF (verify_tls: false); the management "
                        "connection can be intercepted", firewall.name)
        device = Firewall(firewall, sleep=options.pause, shared=shared,
                          stopping=options.stopping)
        worker = DeviceRun(device, by_device[name], store, config.scm, scm, lookup, options)
        try:
            return worker.run()
        except Exception as exc:  # a surprise on one device must not stop the others
            log.error("%s: unexpected error", name, exc_info=True)
            # What is already done (committed, failed, ordered) stays reported as such.
            results = list(worker.results.values()) or \
                [Result(p.name, name) for p in by_device[name]]
            for result in results:
                if result.outcome not in (Outcome.CHANGED, Outcome.FAILED):
                    result.fail(f"unexpected error: {type(exc).__name__}: {exc}")
                if options.progress:
                    options.progress(result)
            return results
        finally:
            with made:
                report.commits += worker.commits

    def all_devices() -> List[List[Result]]:
        if workers == 1:
            return [one_device(name) for name in by_device]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="firewall") as pool:
            return list(pool.map(one_device, by_device))

    if options.mode == "status" or options.dry_run:
        batches = all_devices()  # read only: no need to keep other runs out
    else:
        with store.lock():
            batches = all_devices()
    report.results = [result for batch in batches for result in batch]
    report.seconds = time.monotonic() - started
    return report


__all__ = ["DeviceRun", "Report", "Result", "RunOptions", "run"]
