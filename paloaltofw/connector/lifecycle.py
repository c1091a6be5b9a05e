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

How each step is done is `steps`' (the device's side) and `ordering`'s (SCM's side).
Every step is resumable: the state file says how far a certificate got (the `ordering` stage
is saved before an order goes out, SCM's answer in `.ids` before the state file), so a run
interrupted anywhere, followed by another run, ends with exactly one order per certificate.
A consumer is pointed at a new object only after its certificate and key were read back from
the device, so whatever a commit takes in, no service points at an incomplete object.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from . import http
from .cache import KnownFacts
from .device import CertificateEntry, Device, PushFailed, make_device
from .errors import AgentError, Interrupted, PanosError
from .ordering import OrderDesk, Rejected, ScmClients
from .plan import Decision, Situation, decide, pending_text, rejected_order
from .results import Action, Mode, Outcome, Report, Result, State, Step, StepKind
from .settings import CertificateProfile, Config, DeviceKind, ScmSettings
from .state import Stage, StateStore
from .steps import Certificate, Steps

log = logging.getLogger(__name__)

# No certificate takes more steps in one run (a guard against a decision that loops).
MAX_STEPS = 100


@dataclass
class RunOptions:
    mode: Mode = Mode.RENEW
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


class DeviceRun:
    """All certificates of one device: decide, act, decide again; collect together; one
    commit."""

    def __init__(self, device: Device, profiles: Sequence[CertificateProfile],
                 store: StateStore, scm_settings: Optional[ScmSettings], clients: ScmClients,
                 options: RunOptions) -> None:
        self.device = device
        self.profiles = profiles
        self.store = store
        self.scm_settings = scm_settings
        self.desk = OrderDesk(scm_settings, clients, store, force=options.force,
                              now=options.now, stopping=options.stopping)
        self.steps = Steps(device, self.desk, store)
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
        if self.options.mode is Mode.STATUS:
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
                # A failure or a wait at SCM says more than "interrupted" would.
                if cert.committing and cert.result.outcome not in (
                        Outcome.INTERRUPTED, Outcome.FAILED, Outcome.PENDING):
                    cert.result.interrupt(self._uncommitted(cert))
            return
        # Step 5: one commit for the device.
        self._commit()

    def _done(self) -> List[Result]:
        for notice in self.device.notices():
            self._notice(notice.key, notice.message, once=True)
        for cert in self.certificates:
            if cert.result.object in self.device.view.certificates:
                cert.result.consumers = self.device.view.consumers(cert.result.object)
        elapsed = time.monotonic() - self.started
        for result in self.results.values():
            result.seconds = elapsed
            if self.options.progress:
                self.options.progress(result)
        return list(self.results.values())

    # -- deciding ---------------------------------------------------------------------------

    def _situation(self, cert: Certificate) -> Situation:
        return Situation(
            profile=cert.profile, state=cert.state, view=self.device.view,
            now=self.options.now(), mode=self.options.mode, force=self.options.force,
            adopt=None if cert.adopted else self.options.adopt, lookup=self.desk.can_look_up,
            # Only an interrupted order compares .ids (plan.interrupted): a certificate with
            # nothing pending, every one on a quiet night, does not read it.
            ids=self.store.read_ids(cert.profile.name) if cert.state.pending else None,
            device=self.device.name,
            commit_text=self.device.commit_text(), collected=cert.chain is not None,
            kept=frozenset(cert.kept), made_now=cert.made_now, rejected_now=cert.rejected_now)

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
        """`status`: the certificate's condition, from the one read and the state file. It
        does nothing, so its action stays `none`; only a pending or refused order is told."""
        self._decide(cert, first=True)
        state, result = cert.state, cert.result
        result.object, result.action, result.message = \
            state.object or cert.profile.object_name, Action.NONE, ""
        if state.pending:
            result.message = pending_text(cert.profile, state.pending, self.device.awaits)
        elif state.rejected:
            result.state = State.ERROR
            result.message = f"the last {rejected_order(state.rejected)} " \
                             f"{state.rejected.get('reason')}; fix the cause, then: " \
                             f"paloaltoagent.py renew {cert.profile.name} --force"
        # Old objects kept because something the agent does not repoint still uses them.
        view = self.device.view
        kept = [f"old {name} kept, still used by " +
                ", ".join(b.describe() for b in view.references(name))
                for name in state.superseded if view.references(name)]
        if kept:
            result.message = "; ".join(([result.message] if result.message else []) + kept)

    def _plan(self, cert: Certificate) -> None:
        """`--dry-run`: the decision's steps, printed instead of taken."""
        decision = self._decide(cert, first=True)
        cert.result.planned = list(decision.steps)
        if decision.stop:  # the real run would fail it too, after any steps listed
            cert.result.fail(decision.stop)
        elif decision.action is not Action.NONE:
            cert.result.outcome = Outcome.PLANNED

    # -- acting -----------------------------------------------------------------------------

    def _advance(self, cert: Certificate, first: bool = False) -> None:
        """Execute the decided steps one by one, deciding again after each, until the
        certificate waits (for SCM or the commit), is done, or fails."""
        try:
            self._take_steps(cert, first)
        except Exception as exc:  # a surprise in one certificate must not stop the others
            self._unexpected(cert, exc)

    def _unexpected(self, cert: Certificate, exc: Exception) -> None:
        log.error("%s: unexpected error", cert.profile.name, exc_info=True)
        cert.waiting = False
        self._failed(cert, f"unexpected error: {type(exc).__name__}: {exc}")

    def _take_steps(self, cert: Certificate, first: bool) -> None:
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
                                      self._not_started(cert, step))
                return
            if step == previous:  # a step that changed nothing would repeat for ever
                raise AssertionError(f"{cert.profile.name}: no progress at {step.text}")
            previous = step
            try:
                changed = self.steps.take(cert, step)
            except Interrupted as exc:
                cert.result.interrupt(str(exc))
                return
            except Rejected as exc:
                # Decide again, to clean the refused request up; never to order again in
                # this run, even with --force (the same request would be refused again).
                cert.chain, cert.rejected_now = None, True
                self._failed(cert, str(exc))
                continue
            except AgentError as exc:
                self._failed(cert, str(exc))
                return
            if step.kind is StepKind.ADOPT:
                cert.adopted = True
            cert.result.done.append(step)
            cert.committing = cert.committing or changed
        raise AssertionError(f"{cert.profile.name}: more than {MAX_STEPS} steps: "
                             f"{[s.kind.value for s in cert.result.done]}")

    @staticmethod
    def _not_started(cert: Certificate, step: Step) -> str:
        if step.kind is StepKind.ORDER:
            return f"key and CSR made in {step.object}, not ordered; the next run orders"
        return f"before: {step.text}"

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
                    cert.chain = self.desk.collect(cert.profile, cert.state,
                                                   self.device.view.anchors())
                except Rejected as exc:
                    self._failed(cert, str(exc))
                    cert.waiting, cert.rejected_now = False, True
                    self._advance(cert)  # the refused request is cleaned up, not re-ordered
                    continue
                except AgentError as exc:
                    self._failed(cert, str(exc))
                    continue
                except Exception as exc:  # as in _advance: the others go on
                    self._unexpected(cert, exc)
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

    # -- step 5: commit -------------------------------------------------------------------

    def _commit(self) -> None:
        """One commit for every certificate that changed the candidate or waits for one;
        then each records what the commit took in."""
        taking_part = [c for c in self.certificates if c.committing]
        if not taking_part:
            return
        step = Step(StepKind.COMMIT, self.device.name, self.device.commit_text())
        try:
            outcome = self.device.commit()
        except Interrupted as exc:
            for cert in taking_part:
                cert.result.interrupt(f"{exc}; the next run completes it")
            return
        except PushFailed as exc:
            # Committed, but not on every firewall: each certificate keeps its stage, so the
            # next run pushes again (and orders nothing).
            self.commits += 1
            log.error("%s: %s", self.device.name, exc)
            for cert in taking_part:
                cert.result.pushes = list(exc.pushes)
                self._failed(cert, str(exc))
            return
        except PanosError as exc:
            log.error("%s: commit failed: %s", self.device.name, exc)
            for cert in taking_part:
                self._failed(cert, self._uncommitted(cert, exc))
            return
        self.commits += int(outcome.committed)
        for cert in taking_part:
            cert.result.done.append(step)
            cert.result.pushes = list(outcome.pushes)
            pending = cert.state.pending
            if outcome.unreached and pending is not None and \
                    pending.stage is Stage.INSTALLED and not cert.result.failed:
                # Committed on Panorama but on no firewall: not done. The stage stays, so
                # each run pushes again (and orders nothing) until a firewall takes it.
                cert.result.outcome, cert.result.object = Outcome.CHANGED, pending.object
                cert.result.message = f"committed on Panorama as {pending.object}, but " \
                    f"pushed to no firewall ({outcome.unreached}); each run pushes again"
                self.store.save(cert.state)
            else:
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
            old = pending.replaces if pending.replaces != pending.object else None
            state.object, state.cert_id, state.api = pending.object, pending.order_id, \
                pending.api
            state.pending = None
            state.note("committed", object=state.object, cert_id=state.cert_id)
            if old and old in view.certificates:
                if old not in state.superseded:
                    state.superseded.append(old)  # kept: a later run deletes it
            elif old:  # deleted in this commit
                log.info("%s: removed superseded %s", cert.profile.name, old)
                state.note("removed", object=old)
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
        looking = self.options.mode is Mode.STATUS or self.options.dry_run
        if once and (looking or not self.store.first_notice(key)):
            log.info("%s", message)
        else:
            log.warning("%s", message)


def run(config: Config, names: Sequence[str], options: RunOptions) -> Report:
    """Steps 2-6 for the selected certificate profiles (all when `names` is empty), on up to
    max_parallel_firewalls devices at once; a slow or dead device holds up only its own
    thread (and only up to its timeouts). With Mode.STATUS or a dry run, only reads."""
    report = Report([])
    started = time.monotonic()
    profiles = [config.certificates[n] for n in dict.fromkeys(names)] if names else \
        list(config.certificates.values())
    store = StateStore(config.state_dir)
    store.ensure_writable()
    by_device: Dict[str, List[CertificateProfile]] = {}
    for profile in profiles:
        by_device.setdefault(profile.firewall, []).append(profile)
    # Panorama's own store and its templates share one session target and the admin's
    # pending changes on Panorama: they take turns, in one lane. Firewalls (also those
    # reached through Panorama, by target=SERIAL, and HA pairs) each have their own.
    lanes: Dict[str, List[str]] = {}
    for name in by_device:
        device = config.firewalls[name]
        # The two entries of an HA pair are one configuration: one lane.
        lane = "/".join(sorted((device.name, device.peer.name))) if device.peer else \
            device.name if device.kind is DeviceKind.FIREWALL else \
            device.panorama or device.name
        lanes.setdefault(lane, []).append(name)
    workers = min(config.max_parallel_firewalls, len(lanes)) or 1
    clients = ScmClients(config.scm, pool_size=workers)
    counted = threading.Lock()
    shared = http.Shared()  # TLS contexts and proxy settings, prepared once for all devices
    known = KnownFacts(config.state_dir)  # certificate facts by PEM hash, from earlier runs

    def one_device(name: str) -> List[Result]:
        firewall = config.firewalls[name]
        if not firewall.tls.verify and not firewall.tls.fingerprint:
            log.warning("%s: TLS verification is OFF (verify_tls: false); the management "
                        "connection can be intercepted", firewall.name)
        worker: Optional[DeviceRun] = None
        try:
            device = make_device(firewall, sleep=options.pause, shared=shared,
                                 stopping=options.stopping, known=known)
            worker = DeviceRun(device, by_device[name], store, config.scm, clients, options)
            return worker.run()
        except Exception as exc:  # a surprise on one device must not stop the others
            log.error("%s: unexpected error", name, exc_info=True)
            # What is already done (committed, failed, ordered) stays reported as such.
            results = (list(worker.results.values()) if worker else []) or \
                [Result(p.name, name) for p in by_device[name]]
            for result in results:
                if result.outcome not in (Outcome.CHANGED, Outcome.FAILED):
                    result.fail(f"unexpected error: {type(exc).__name__}: {exc}")
                if options.progress:
                    options.progress(result)
            return results
        finally:
            with counted:
                report.commits += worker.commits if worker else 0

    def one_lane(names: List[str]) -> List[Result]:
        return [result for name in names for result in one_device(name)]

    def all_devices() -> List[List[Result]]:
        if workers == 1:
            return [one_lane(names) for names in lanes.values()]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="firewall") as pool:
            return list(pool.map(one_lane, lanes.values()))

    if options.mode is Mode.STATUS or options.dry_run:
        batches = all_devices()  # read only: no need to keep other runs out
    else:
        with store.lock():
            batches = all_devices()
    report.results = [result for batch in batches for result in batch]
    known.save(complete=not names)
    report.seconds = time.monotonic() - started
    return report


__all__ = ["DeviceRun", "Report", "Result", "RunOptions", "run"]
