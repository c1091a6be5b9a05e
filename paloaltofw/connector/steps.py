"""The steps of a certificate's run, carried out: each kind of `results.Step` against the
device, SCM (through the order desk) and the state file.

Which step comes next is `plan.decide`'s to say, and in what order the certificates of a
device go is `lifecycle`'s; here is only how each step is done, and what it records. The
state file is saved before anything that cannot be taken back (a request object made, an
order placed), so that the next run can always go on from where this one stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Set

from .device import Device, NothingMade
from .errors import AgentError, PanosError
from .ordering import OrderDesk
from .plan import request_spec
from .results import Action, Result, Step, StepKind
from .settings import CertificateProfile
from .state import CertState, Pending, Stage, StateStore, now_iso

if TYPE_CHECKING:
    from . import certs

log = logging.getLogger(__name__)


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
    rejected_now: bool = False  # this run had its order refused: clean up, never order again
    adopted: bool = False  # this run adopted the --adopt order


class Steps:
    """How each step is done, for the certificates of one device."""

    def __init__(self, device: Device, desk: OrderDesk, store: StateStore) -> None:
        self.device = device
        self.desk = desk
        self.store = store

    def take(self, cert: Certificate, step: Step) -> bool:
        """Carry out one step of one certificate (raises what the device or SCM raised).
        True when it changed the device's candidate configuration: the certificate then
        takes part in the device's commit, even if its order still waits at SCM."""
        kind = step.kind
        if kind is StepKind.DISCARD:
            return self._discard(cert, step)
        if kind in (StepKind.INSTALL, StepKind.BIND, StepKind.DELETE):
            self._change(cert, step)
            return True
        if kind is StepKind.GENERATE:
            self._generate(cert, step)
        elif kind is StepKind.ORDER:
            self._order(cert, step.object)
        elif kind in (StepKind.RESUME, StepKind.ADOPT):
            assert step.order_id
            self.desk.adopt(cert.profile, cert.state, step.order_id,
                            "recorded in .ids by the interrupted run"
                            if kind is StepKind.RESUME else "given with --adopt")
        elif kind is StepKind.LOOKUP:
            if not self.desk.look_up(cert.profile, cert.state):
                self._order(cert, step.object)  # it never reached SCM
        elif kind is StepKind.REORDER:
            log.warning("%s: ordering again after an interrupted attempt (--force)",
                        cert.profile.name)
            self._order(cert, step.object)
        elif kind is StepKind.KEEP:
            log.warning("%s: keeping old %s, still used by %s (repoint it, and the next run "
                        "deletes it)", cert.profile.name, step.object, ", ".join(step.users))
            cert.kept.add(step.object)
        else:  # COLLECT and COMMIT are the run's, not a single certificate's
            raise AssertionError(f"not a certificate's step: {step}")
        return False

    def _change(self, cert: Certificate, step: Step) -> None:
        if step.kind is StepKind.INSTALL:
            self._install(cert, step.object)
        elif step.kind is StepKind.BIND:
            assert step.binding is not None
            log.info("%s: %s", cert.profile.name, step.text)
            self.device.bind(step.binding, step.location, step.value or step.object,
                             step.scope, step.replaces)
        else:
            self._delete(cert, step.object)

    def _discard(self, cert: Certificate, step: Step) -> bool:
        """Delete an unordered request object (a key and CSR only; nothing can use it) and
        forget it. Its deletion is committed with the rest of the run."""
        state, name, view = cert.state, step.object, self.device.view
        log.info("%s: making a new key and CSR instead of the unused request in %s (%s)",
                 cert.profile.name, name, step.reason)
        entry = view.certificates.get(name)
        users = view.references(name) if entry is not None else []
        deleted = entry is not None and entry.is_request and not users
        if deleted:
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
        return deleted

    def _generate(self, cert: Certificate, step: Step) -> None:
        """Save the request as `generated`, then have the device make the key and CSR."""
        profile, state = cert.profile, cert.state
        again = state.pending is not None  # saved by a run that did not see the answer
        if state.pending is None:
            log.info("%s: replacing the certificate on %s: %s", profile.name, self.device.name,
                     step.reason)
            self.desk.preflight(profile)
            current = state.object or profile.object_name
            state.rejected = None
            state.pending = Pending(
                stage=Stage.GENERATED, object=step.object,
                kind=Action.RENEW if state.cert_id else Action.ENROLL, since=now_iso(),
                replaces=current if current in self.device.view.certificates else None,
                request=request_spec(profile))
            if step.object in state.superseded:  # a name freed earlier in this run
                state.superseded.remove(step.object)
            state.note("replace", reason=step.reason, object=step.object)
            self.store.save(state)
        log.info("%s: generating %s key and CSR on %s as %s", profile.name, profile.key.label,
                 self.device.name, step.object)
        try:
            self.device.generate(step.object, profile, again)
        except NothingMade:
            # The device made nothing and left nothing: no request is pending any more.
            state.note("not generated", object=step.object)
            state.pending = None
            self.store.save(state)
            raise
        cert.made_now = True

    def _order(self, cert: Certificate, name: str) -> None:
        """Step 3's order: the CSR the device made, to SCM (ordering.OrderDesk keeps the
        order of saves that makes it happen at most once)."""
        self.desk.order(cert.profile, cert.state, self.device.export_csr(name))
        cert.result.ordered = True

    def _install(self, cert: Certificate, name: str) -> None:
        """Import the CA certificates the device lacks (once each, by fingerprint) and the
        certificate, and read it back: it must be there with its own key."""
        profile, state, chain = cert.profile, cert.state, cert.chain
        assert chain is not None and state.pending is not None
        from . import certs  # X.509 (cryptography): only when something is installed
        known = self.device.view.ca_by_fingerprint()
        for ca in chain.cas:
            fingerprint = certs.fingerprint(ca)
            if fingerprint in known:
                continue
            ca_name = certs.ca_object_name(ca, self.device.name_limit)
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


__all__ = ["Certificate", "Steps"]
