"""The SCM side of a certificate's run: placing the order, finding an interrupted one again,
collecting and verifying what SCM issued.

An order is the one step that cannot be taken back (it is billed), so it goes out in the
order PRODUCT.md requires: the `ordering` stage is saved before the request is sent, SCM's
answer in `.ids` before the state file. A run stopped in between is found out by the next,
which searches SCM's orders (classic API, `scm.lookup_label`) or asks the administrator
(`--adopt ID` / `--force`), and never orders again on its own. What SCM issues is verified
before anything reaches the device; an order that can never give a usable certificate is
recorded as rejected and waits for `--force`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Union

from .errors import AgentError, Interrupted, OrderRejected, ScmError, VerificationError
from .plan import rejected_order
from .results import Action
from .settings import CertificateProfile, ScmSettings
from .state import CertState, Stage, StateStore, now_iso

if TYPE_CHECKING:
    from cryptography import x509

    from . import certs
    from .scm import ClassicClient, ScmClient

# certs (X.509, cryptography) is imported by the steps that order or collect: a run with
# nothing to order never loads it (facts.py).

log = logging.getLogger(__name__)


class Rejected(AgentError):
    """The order can never give a usable certificate; its state is recorded (`rejected`, the
    request object among the superseded), so the run goes on to clean up."""


class ScmClients:
    """The run's SCM clients, shared by the device threads and made on first use: a run with
    nothing due sends SCM nothing at all, and does not even load the SCM clients (nor
    requests, which they use)."""

    def __init__(self, settings: Optional[ScmSettings], pool_size: int) -> None:
        self.settings = settings
        self.pool_size = pool_size
        self._made: Dict[str, Union[ScmClient, ClassicClient, None]] = {}
        self._lock = threading.Lock()

    def main(self) -> ScmClient:
        with self._lock:
            if "main" not in self._made:
                assert self.settings is not None
                from .scm import make_client
                self._made["main"] = make_client(self.settings, pool_size=self.pool_size)
            client = self._made["main"]
        assert client is not None
        return client

    def lookup(self) -> Optional[ClassicClient]:
        """The classic client that searches orders (`scm.lookup_label`); the main client when
        it is classic with the same credentials."""
        from .scm import ClassicClient, make_lookup
        main = self.main()
        with self._lock:
            if "lookup" not in self._made:
                assert self.settings is not None
                same = isinstance(main, ClassicClient) and \
                    self.settings.lookup == self.settings.credentials
                self._made["lookup"] = main if same else make_lookup(self.settings)
            found = self._made["lookup"]
        assert found is None or isinstance(found, ClassicClient)
        return found


class OrderDesk:
    """Orders, lookups and collections for one device's certificates; every change of a
    certificate's order is saved in its state file before the next request."""

    def __init__(self, settings: Optional[ScmSettings], clients: ScmClients, store: StateStore,
                 *, force: bool, now: Callable[[], dt.datetime],
                 stopping: Callable[[], bool]) -> None:
        self.settings = settings
        self.clients = clients
        self.store = store
        self.force = force
        self.now = now
        self.stopping = stopping

    @property
    def can_look_up(self) -> bool:
        return self.settings is not None and self.settings.lookup is not None

    def preflight(self, profile: CertificateProfile) -> None:
        """What SCM would refuse is found out before the device makes a key for it."""
        self.clients.main().preflight(profile)

    # -- placing the order ----------------------------------------------------------------

    def order(self, profile: CertificateProfile, state: CertState, csr_pem: str) -> str:
        """Place the order for the pending request; its id, recorded."""
        if self.stopping():  # the request is saved: the next run orders with it
            raise Interrupted("key and CSR made, not ordered; the next run orders")
        pending = state.pending
        assert pending is not None
        from . import certs
        certs.csr_key(csr_pem)  # a CSR that does not parse fails here, before ordering
        pending.csr = csr_pem.strip()
        client = self.clients.main()
        pending.api = client.api
        pending.ids_before = self.store.read_ids(profile.name)
        # Written before the order goes out: a crash from here until SCM's answer is recorded
        # is noticed by the next run, which will not order again on its own.
        pending.stage = Stage.ORDERING
        self.store.save(state)
        try:
            order_id = self._send(client, profile, state)
        except ScmError as exc:
            if exc.refused:
                # SCM refused this very request (a key type, a name, a custom field...): it
                # would refuse it again, so the request is discarded, not re-sent every night.
                raise self.reject(profile, state, f"was refused by SCM: {exc}") from None
            if exc.placed_nothing:
                pending.stage = Stage.GENERATED
                state.note("order not placed", reason=str(exc))
                self.store.save(state)
                raise
            # The answer was lost: SCM may have placed the order. The `ordering` stage stays,
            # so no run orders again before finding out.
            raise AgentError(f"{exc}; SCM may have placed the order without its answer "
                             f"arriving: {self._lost_answer_advice(profile)}") from None
        self.store.write_ids(profile.name, order_id)
        pending.order_id, pending.stage = order_id, Stage.ORDERED
        state.note("ordered", order_id=order_id, kind=pending.kind, api=client.api)
        self.store.save(state)
        return order_id

    def _send(self, client: ScmClient, profile: CertificateProfile, state: CertState) -> str:
        """Renew by the previous certificate's id when there is one (SCM keeps the history
        together); enroll when SCM will not renew it."""
        pending = state.pending
        assert pending is not None and pending.csr
        if pending.kind is Action.RENEW and state.cert_id:
            try:
                order_id = client.renew(state.cert_id, pending.csr, profile)
                log.info("%s: SCM renewal of %s ordered: id %s", profile.name, state.cert_id,
                         order_id)
                return order_id
            except ScmError as exc:
                from .scm import RENEW_REFUSED_CODES
                if exc.code not in RENEW_REFUSED_CODES:
                    raise
                log.warning("%s: SCM will not renew %s (%s); enrolling instead", profile.name,
                            state.cert_id, exc)
                pending.kind = Action.ENROLL
        order_id = client.enroll(pending.csr, profile)
        log.info("%s: SCM enrollment ordered: id %s", profile.name, order_id)
        return order_id

    def _lost_answer_advice(self, profile: CertificateProfile) -> str:
        if self.can_look_up:
            return "the next run searches SCM's orders for it and collects it, or orders " \
                   "only if it never reached SCM"
        return (f"no run orders again on its own. Look in SCM for an order for "
                f"{profile.common_name} placed now: if there is one, run: paloaltoagent.py "
                f"renew {profile.name} --adopt ID (the agent collects it); if there is none: "
                f"paloaltoagent.py renew {profile.name} --force (scm.lookup_label lets the "
                "agent look by itself)")

    # -- an order whose answer was lost -----------------------------------------------------

    def look_up(self, profile: CertificateProfile, state: CertState) -> bool:
        """A run stopped between sending an order and recording its id: a classic-API search
        tells whether the order exists, with or without --force (the everyday "renew now"
        must not skip it). True when it was found and adopted; False when it never reached
        SCM (or, with --force, several candidates are ignored): the caller orders now."""
        pending = state.pending
        assert pending is not None
        lookup = self.clients.lookup()
        assert lookup is not None
        from . import certs
        csr_key = certs.csr_key(pending.csr) if pending.csr else None
        # A day early: SCM's dates are days, perhaps in another time zone.
        since = dt.date.fromisoformat(pending.since[:10]) - dt.timedelta(days=1)
        found = lookup.find_orders(profile.common_name, since, self.store.known_order_ids(),
                                   csr_key)
        if len(found) == 1:
            self.adopt(profile, state, found[0], "found at SCM")
            return True
        if found and not self.force:
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
        return False

    def adopt(self, profile: CertificateProfile, state: CertState, order_id: str,
              how: str) -> None:
        pending = state.pending
        assert pending is not None
        log.info("%s: resuming order %s (%s)", profile.name, order_id, how)
        self.store.write_ids(profile.name, order_id)
        pending.order_id, pending.stage = order_id, Stage.ORDERED
        state.note("ordered", order_id=order_id, kind=pending.kind, api=pending.api,
                   recovered=how)
        self.store.save(state)

    # -- collecting -----------------------------------------------------------------------

    def collect(self, profile: CertificateProfile, state: CertState,
                anchors: List[x509.Certificate]) -> Optional[certs.Chain]:
        """One collection attempt: the verified chain, or None while SCM is processing."""
        pending = state.pending
        assert pending is not None and pending.order_id
        try:
            data = self.clients.main().collect(pending.order_id)
        except OrderRejected as exc:
            raise self.reject(profile, state, f"was refused by SCM: {exc}") from None
        if data is None:
            return None
        # order() saved the CSR before the order went out, so every collected order has it.
        assert pending.csr, "an order without its CSR in the state file"
        from . import certs
        csr_key = certs.csr_key(pending.csr)
        try:
            chain = certs.build_chain(certs.load_certificates(data), csr_key, anchors)
            certs.verify_issued(chain, csr_key, profile.names, self.now())
        except VerificationError as exc:
            if exc.retry:
                raise AgentError(f"order {pending.order_id}: {exc}; collecting again next "
                                 "run") from None
            raise self.reject(profile, state, f"was refused before import: {exc}; nothing "
                                              "was imported") from None
        issued = certs.validation_level(chain.leaf)
        if issued and issued != profile.validation:
            log.warning("%s: the profile asks for %s but SCM issued %s: check scm.profile_id",
                        profile.name, profile.validation, issued)
        log.info("%s: collected %s (expires %s), chain verified", profile.name,
                 pending.order_id, f"{chain.leaf.not_valid_after_utc:%Y-%m-%d}")
        return chain

    def reject(self, profile: CertificateProfile, state: CertState, reason: str) -> Rejected:
        """An order that will never give a usable certificate: keep it on record for
        investigation, have its unused request object cleaned up, and wait for --force."""
        pending = state.pending
        assert pending is not None
        state.rejected = {"order_id": pending.order_id, "reason": reason, "time": now_iso()}
        if pending.object != state.object and pending.object not in state.superseded:
            state.superseded.append(pending.object)
        state.note("rejected", order_id=pending.order_id, reason=reason)
        state.pending = None
        self.store.save(state)
        return Rejected(f"{rejected_order(state.rejected)} {reason}. Fix the cause (in SCM or "
                        f"the profile), then run: paloaltoagent.py renew {profile.name} "
                        "--force")


__all__ = ["OrderDesk", "Rejected", "ScmClients"]
