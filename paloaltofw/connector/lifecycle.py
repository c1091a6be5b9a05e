"""The certificate lifecycle: the numbered workflow of PRODUCT.md, per firewall.

For each firewall:

  3. Ask the firewall what it holds (one configuration read) and decide, per certificate
     profile, whether its certificate is missing, expired, revoked, due for renewal or no
     longer matches the profile. If so, have the firewall generate the key pair and CSR
     *on the device*, under the profile's object name when that name is free, otherwise under
     a new dated name: a key is never regenerated under a name in use.
  4. Export the CSR, order at SCM (renew by the previous certificate's id, enroll otherwise),
     collect the issued chain (polling up to poll_timeout; a pending order waits for the next
     run).
  5. Record the order id the moment SCM returns it (`.ids`, then the state file), verify the
     chain, import the CA certificates (once each) and the leaf, read the leaf back, point the
     SSL/TLS service profiles at it, and commit this firewall once (partial, our admin only).
     Only after that commit are superseded objects deleted, if nothing references them, in a
     second commit.
  6. Log every main event.

Every step is resumable: the state file says how far a certificate got, so a run that is
interrupted anywhere, followed by another run, ends with exactly one order per certificate.
A service profile is repointed only after the new certificate and its key were read back from
the firewall, so whatever a commit takes in, no service points at an incomplete object.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import certs, http
from .settings import CertificateProfile, Config, FirewallProfile, ScmSettings
from .errors import (AgentError, Interrupted, OrderRejected, PanosError, ScmError,
                     VerificationError)
from .panos import CertificateEntry, Inventory, PanosClient
from .scm import RENEW_REFUSED_CODES, ClassicClient, ScmClient, make_client, make_lookup
from .state import CertState, Pending, StateStore, now_iso

log = logging.getLogger(__name__)


@dataclass
class Result:
    """What happened to one certificate profile in this run (or, in a dry run, would)."""

    profile: str
    firewall: str
    object: Optional[str] = None
    # The certificate's condition when the run looked: ok | due | pending | missing |
    # expired | revoked | error ("error" until it has been looked at).
    state: str = "error"
    # What the run did or would do: none | enroll | renew | collect | commit.
    action: str = "none"
    outcome: str = "ok"  # ok | changed | pending | failed | planned | interrupted
    message: str = ""
    cert_id: Optional[str] = None
    not_after: Optional[dt.datetime] = None
    common_name: str = ""
    key: str = ""
    issuer: str = ""
    plan: List[str] = field(default_factory=list)
    ordered: bool = False  # a billable order was placed in this run
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def fail(self, message: str) -> None:
        self.outcome, self.message = "failed", message

    def interrupt(self, message: str) -> None:
        """A signal stopped the run before this certificate was done; its state is saved."""
        self.outcome, self.message = "interrupted", f"interrupted: {message}"


@dataclass
class Report:
    """A whole run: every certificate's result, and what it cost."""

    results: List[Result]
    commits: int = 0
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    seconds: float = 0.0

    @property
    def orders(self) -> int:
        return sum(1 for r in self.results if r.ordered)


@dataclass
class RunOptions:
    # "enroll": only missing certificates; "renew": everything due; "status": only look.
    mode: str = "renew"
    force: bool = False
    dry_run: bool = False  # read only: plan, send no write and no order
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))
    sleep: Callable[[float], None] = time.sleep
    # Called with each certificate's final result, from the firewall's worker thread.
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


class Condition(NamedTuple):
    """How the certificate on the firewall stands against its profile."""

    state: str  # ok | due | missing | expired | revoked
    reason: Optional[str]  # why it must be replaced; None: it need not be
    # Something about the profile an administrator should fix, or a replacement the window
    # asked for and the run declined; the caller logs it (with `once`, only the first time).
    warning: Optional[str] = None
    once: bool = False


def assess(profile: CertificateProfile, entry: Optional[CertificateEntry], now: dt.datetime,
           installed: Optional[dt.datetime] = None) -> Condition:
    """The certificate's condition on the firewall, and why it must be replaced. `installed`
    is when the agent installed it, if it did (a better "issued" time than Sectigo's
    not-before, which is midnight of the issue day)."""
    if entry is None:
        return Condition("missing", "no certificate on the firewall")
    facts = entry.facts
    if facts is None:
        return Condition("missing", "the object holds no certificate (only a request)")
    if entry.status == "revoked":
        return Condition("revoked", "revoked")
    if facts.not_after <= now:
        return Condition("expired", f"expired on {facts.not_after:%Y-%m-%d}")
    if facts.key_label != profile.key.label:
        return Condition("due", f"key changed in the profile ({facts.key_label} -> "
                                f"{profile.key.label})")
    missing = [n for n in profile.names if not facts.covers(n)]
    if missing:
        return Condition("due", f"names added to the profile ({', '.join(missing)})")
    return _window(profile, facts, now, installed)


def _window(profile: CertificateProfile, facts: certs.Facts, now: dt.datetime,
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
        return Condition("ok", None, warning)
    issued = max(facts.not_before, installed or facts.not_before)
    youngest = max(dt.timedelta(days=1), lifetime / 10)
    if now - issued < youngest:
        if warning:
            return Condition("ok", None, warning)
        return Condition("ok", None, f"inside its renewal window ({profile.renewal}) but "
                                     f"issued less than {_days(youngest)} ago "
                                     f"({issued:%Y-%m-%d %H:%M} UTC), so the window alone does "
                                     "not replace it yet; shorten the window", once=True)
    return Condition("due", f"expires on {facts.not_after:%Y-%m-%d}, within "
                            f"{profile.renewal}", warning)


def _days(span: dt.timedelta) -> str:
    days = span.total_seconds() / 86400
    return "a day" if days <= 1 else f"{days:.0f} days"


def due_reason(condition: Condition, mode: str, force: bool) -> Optional[str]:
    """Why this run must replace the certificate, or None to leave it alone: `enroll` only
    fills in missing certificates, `renew` replaces whatever needs it, --force everything."""
    if force:
        return condition.reason or "renewal forced"
    if mode == "enroll" and condition.state != "missing":
        return None
    return condition.reason


def request_spec(profile: CertificateProfile) -> Dict[str, Any]:
    """What a key and CSR made on the firewall are made for: if any of it changes in the
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
        key, names = certs.csr_summary(pending.csr)
        if key != profile.key.label:
            return f"the request in {pending.object} has a {key} key, the profile asks for " \
                   f"{profile.key.label}"
        missing = [n for n in profile.names if not certs.names_cover(names, n)]
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


def pending_text(profile: CertificateProfile, pending: Pending) -> str:
    """What `status` says of a certificate on its way."""
    if pending.stage == "generated":
        why = stale_request(profile, pending)
        if why:
            return f"{why}; the next run makes a new key and CSR and orders with them"
        return f"key and CSR made on the firewall in {pending.object}; not ordered yet (the " \
               "next run orders)"
    if pending.stage == "ordering":
        return f"a run was interrupted while ordering at SCM ({pending.since}); the next run " \
               "finds out whether the order exists before anything else"
    if pending.stage == "installed":
        return f"order {pending.order_id} imported into {pending.object}, not committed yet " \
               "(the next run commits)"
    return f"order {pending.order_id} placed at SCM, waiting for issuance (the next run " \
           "collects it)"


def renewal_name(base: str, taken: Sequence[str], today: dt.date) -> str:
    """`<base>-YYYYMMDD`, then `-2`, `-3`… on the same day: predictable and within 63
    characters (config.py keeps `base` short enough)."""
    stem = f"{base}-{today:%Y%m%d}"
    lowered = {t.lower() for t in taken}
    if stem.lower() not in lowered:
        return stem
    for n in range(2, 100):
        if f"{stem}-{n}".lower() not in lowered:
            return f"{stem}-{n}"
    raise AgentError(f"no free object name for {base} today")


class FirewallRun:
    """All due certificates of one firewall, then one commit (and one cleanup commit)."""

    def __init__(self, scm_settings: Optional[ScmSettings], firewall: FirewallProfile,
                 profiles: Sequence[CertificateProfile], store: StateStore,
                 scm: Callable[[], ScmClient], lookup: Callable[[], Optional[ClassicClient]],
                 options: RunOptions, shared: Optional[http.Shared] = None) -> None:
        self.scm_settings = scm_settings
        self.firewall = firewall
        self.profiles = profiles
        self.store = store
        self.scm = scm
        self.lookup = lookup
        self.options = options
        self.panos = PanosClient(firewall, sleep=options.pause, shared=shared,
                                 stopping=options.stopping)
        self.inventory = Inventory()
        self.states: Dict[str, CertState] = {}  # as loaded (and since saved) in this run
        self.conditions: Dict[str, Condition] = {}  # each certificate as the run found it
        self.commits = 0  # commit jobs that succeeded
        self.started = time.monotonic()
        self.results: Dict[str, Result] = {}

    def run(self) -> List[Result]:
        results = self.results = {p.name: Result(p.name, self.firewall.name,
                                                 common_name=p.common_name, key=p.key.label)
                                  for p in self.profiles}
        if self.options.stopping():
            for result in results.values():
                result.interrupt("not started")
            return self._done(results)
        # Step 3: one read tells what the firewall holds.
        try:
            self.inventory = self.panos.read_inventory()
        except PanosError as exc:
            for result in results.values():
                result.state = "error"
                result.fail(str(exc))
            return self._done(results)
        if self.options.mode == "status" or self.options.dry_run:
            step = self.look if self.options.mode == "status" else self.plan
            for profile in self.profiles:
                self._attempt(profile, results[profile.name], step, profile,
                              results[profile.name])
            return self._done(results)
        # Steps 3-4 for every certificate: decide, generate, order. Nothing waits here.
        ordered: List[Tuple[CertificateProfile, CertState]] = []
        installed: List[CertState] = []
        for profile in self.profiles:
            if self.options.stopping():
                results[profile.name].interrupt("not started")
                continue
            state = self._attempt(profile, results[profile.name], self.prepare, profile,
                                  results[profile.name])
            if state is None or state.pending is None:
                continue
            if state.pending.stage == "installed":  # imported by a run whose commit failed
                installed.append(state)
            else:
                ordered.append((profile, state))
        # Steps 4-5: collect all orders together, so that their waits for SCM overlap.
        installed += self.collect_all(ordered, results)
        if self.options.stopping():
            for state in installed:
                results[state.profile].interrupt(f"imported into {state.pending.object}, not "
                                                 "committed; the next run commits"
                                                 if state.pending else "not committed")
            return self._done(results)
        if not installed or self.commit(installed, results):
            self.cleanup(results)
        return self._done(results)

    def _done(self, results: Dict[str, Result]) -> List[Result]:
        if self.panos.stale_api_key:
            self._stale_key_notice()
        elapsed = time.monotonic() - self.started
        for result in results.values():
            result.seconds = elapsed
            if self.options.progress:
                self.options.progress(result)
        return list(results.values())

    def _attempt(self, profile: CertificateProfile, result: Result, step: Callable[..., Any],
                 *args: Any) -> Any:
        """Run one step for one certificate; a failure is that certificate's alone."""
        try:
            return step(*args)
        except Interrupted as exc:
            result.interrupt(str(exc))
        except AgentError as exc:
            result.fail(str(exc))
            log.error("%s: %s", profile.name, exc)
        except Exception as exc:  # one certificate's surprise must not stop the others
            result.fail(f"unexpected error: {type(exc).__name__}: {exc}")
            log.error("%s: unexpected error", profile.name, exc_info=True)
        return None

    # -- looking without touching: status and dry runs -------------------------------------

    def _current(self, profile: CertificateProfile, result: Result
                 ) -> Tuple[CertState, Optional[CertificateEntry]]:
        """Load the state file and look at the certificate the profile has on the firewall."""
        state = self.states[profile.name] = self.store.load(profile.name)
        current = state.object or profile.object_name
        entry = self.inventory.certificates.get(current)
        result.object, result.cert_id = current, state.cert_id
        self._describe(result, entry)
        condition = self.conditions[profile.name] = assess(
            profile, entry, self.options.now(), installed_at(state, current))
        result.state = "pending" if state.pending else condition.state
        if condition.warning and state.pending is None:
            self._warn(profile, condition.warning, once=condition.once)
        return state, entry

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
        fw = self.firewall
        assert fw.api_key is not None
        digest = hashlib.sha256(fw.api_key.reveal().encode()).hexdigest()[:16]
        self._notice(f"stale api_key {fw.name} {digest}",
                     f"firewall {fw.name}: the firewall refuses the api_key of {fw.path} "
                     f"({fw.name}.api_key; a password change or key expiry invalidates keys), "
                     f"so the agent generates a key from username '{fw.username}' on every "
                     "run instead. Replace api_key with a new key for that user (type=keygen),"
                     " or delete api_key to always log in with username and password. (Said "
                     "once for this key.)", once=True)

    def _decide(self, profile: CertificateProfile, state: CertState,
                entry: Optional[CertificateEntry], result: Result) -> Optional[str]:
        """Why this run replaces the certificate (None: it leaves it); the same for real runs
        and dry runs. Raises when an earlier order was refused and --force is not given."""
        if state.rejected and not self.options.force:
            raise AgentError(f"the last {rejected_order(state.rejected)} "
                             f"{state.rejected.get('reason')}. Fix the cause, then run: "
                             f"paloaltoagent.py renew {profile.name} --force")
        condition = self.conditions[profile.name]
        reason = due_reason(condition, self.options.mode, self.options.force)
        if reason is None:
            result.message = "up to date" if result.state == "ok" else \
                f"{condition.reason}; enroll leaves it, renew replaces it"
        return reason

    def look(self, profile: CertificateProfile, result: Result) -> None:
        """`status`: the certificate's condition, from the one read and the state file."""
        state, _ = self._current(profile, result)
        if state.pending:
            result.message = pending_text(profile, state.pending)
        elif state.rejected:
            result.state = "error"
            result.message = f"the last {rejected_order(state.rejected)} " \
                             f"{state.rejected.get('reason')}; fix the cause, then: " \
                             f"paloaltoagent.py renew {profile.name} --force"

    def plan(self, profile: CertificateProfile, result: Result) -> None:
        """`--dry-run`: the steps a real run would take for this certificate, in order,
        including the commits; nothing is written and nothing is ordered."""
        state, entry = self._current(profile, result)
        fw, pending = self.firewall.name, state.pending
        steps: List[str] = []
        freed: Optional[str] = None
        if pending is not None and pending.stage == "generated":
            why = "--force" if self.options.force else stale_request(profile, pending)
            if why:
                steps.append(f"delete the unused request {pending.object} ({why})")
                freed, pending = pending.object, None
        if pending is None:
            reason = self._decide(profile, state, entry, result)
            if reason is None:
                steps += self._plan_cleanup(state, None)
                if freed:
                    steps.append(f"commit {fw} (partial, admin {self.firewall.admin})")
                result.plan = steps
                return
            new, old = self._new_object(profile, freed), (result.object if entry else None)
            kind = "renew" if state.cert_id else "enroll"
            steps.append(f"generate {profile.key.label} key and CSR on {fw} as {new} "
                         f"({reason})")
            steps.append(f"renew SCM certificate {state.cert_id}" if kind == "renew" else
                         f"enroll at SCM ({profile.validation}, profile "
                         f"{profile.order.profile_id})")
            steps.append("collect the new order")
            stage = "generated"
        else:
            new, old, kind, stage = pending.object, pending.replaces, pending.kind, pending.stage
            if stage == "ordering":
                steps += self._plan_interrupted(profile, pending)
                stage = "ordered"
            if stage == "generated":
                steps.append(f"order at SCM with the CSR already in {new} on {fw}")
                steps.append("collect the new order")
            elif stage == "ordered" and pending.order_id and not steps:
                steps.append(f"collect order {pending.order_id}")
        if stage != "installed":
            steps.append(f"verify the chain; import the CA certificates not yet on {fw} and "
                         f"the certificate into {new}")
            for service in self._repoint_targets(profile, new, old):
                steps.append(f"point SSL/TLS service profile {service} at {new}"
                             if service in self.inventory.service_profiles else
                             f"create SSL/TLS service profile {service} for {new}")
        steps.append(f"commit {fw} (partial, admin {self.firewall.admin})")
        steps += self._plan_cleanup(state, old if old != new else None)
        result.plan, result.outcome = steps, "planned"
        result.action = {"ordered": "collect", "installed": "commit"}.get(stage, kind)
        result.object = new

    def _plan_interrupted(self, profile: CertificateProfile, pending: Pending) -> List[str]:
        """What `_resume_ordering` will do with an order whose answer never arrived."""
        ids = self.store.read_ids(profile.name)
        if ids and ids != pending.ids_before:
            return [f"resume order {ids}, recorded in .ids by the interrupted run",
                    f"collect order {ids}"]
        if self.options.adopt:
            return [f"adopt order {self.options.adopt} (--adopt)",
                    f"collect order {self.options.adopt}"]
        if self.scm_settings is not None and self.scm_settings.lookup is not None:
            return [f"search SCM's orders for {profile.common_name} to find the interrupted "
                    "order; adopt it, or order if it never reached SCM" +
                    (" (or if several are found: --force)" if self.options.force else ""),
                    "collect that order"]
        if self.options.force:
            return [f"order again at SCM with the CSR already in {pending.object} (--force "
                    "after an interrupted order)", "collect the new order"]
        raise AgentError(f"a previous run was interrupted while ordering at SCM (at "
                         f"{pending.since}); a real run stops here until: paloaltoagent.py "
                         f"renew {profile.name} --adopt ID (an order you found in SCM) or "
                         "--force (there is none), or scm.lookup_label is set")

    def _plan_cleanup(self, state: CertState, old: Optional[str]) -> List[str]:
        """Deletes the cleanup would attempt, and its commit if any delete would happen. The
        old object's service profiles are repointed first, so only other users keep it."""
        steps, deleting = [], False
        for name in dict.fromkeys(state.superseded + ([old] if old else [])):
            if name not in self.inventory.certificates:
                steps.append(f"commit the earlier delete of {name}")
                deleting = True
                continue
            users = [d for d, c in self.inventory.other_references if c == name] if \
                name == old else self.inventory.references(name)
            if users:
                steps.append(f"keep {name}: still used by {', '.join(users)}")
            else:
                steps.append(f"delete {name} if nothing references it")
                deleting = True
        if deleting:
            steps.append(f"commit {self.firewall.name} again (partial, admin "
                         f"{self.firewall.admin})")
        return steps

    def _repoint_targets(self, profile: CertificateProfile, new: str,
                         old: Optional[str]) -> List[str]:
        """The service profiles to point at `new`: the profile's own, and every one that
        pointed at the object it replaces."""
        targets = list(profile.ssl_tls_service_profiles)
        if old and old != new:
            targets += [p for p, c in self.inventory.service_profiles.items() if c == old]
        return [t for t in dict.fromkeys(targets)
                if self.inventory.service_profiles.get(t) != new]

    # -- steps 3-5 for one certificate ---------------------------------------------------

    def prepare(self, profile: CertificateProfile, result: Result) -> Optional[CertState]:
        """Decide, and bring a due certificate as far as an order at SCM; returns its state
        when it has an order to collect or a certificate waiting to be committed."""
        state, entry = self._current(profile, result)
        current = result.object
        if self.options.adopt and (state.pending is None or
                                   state.pending.stage != "ordering"):
            now = pending_text(profile, state.pending) if state.pending else "nothing pending"
            raise AgentError(f"--adopt: {profile.name} has no interrupted order to adopt "
                             f"({now})")
        if state.pending is not None and state.pending.stage == "generated":
            # Nothing was ordered with this request yet: if it no longer fits the profile
            # (or --force asks for a fresh start), it is thrown away and the run decides again.
            why = "--force" if self.options.force else stale_request(profile, state.pending)
            if why:
                self._discard_request(profile, state, why)
        if state.pending is None:
            reason = self._decide(profile, state, entry, result)
            if reason is None:
                return None
            log.info("%s: replacing the certificate on %s: %s", profile.name,
                     self.firewall.name, reason)
            # What SCM would refuse is found out before the firewall makes a key for it.
            self.scm().preflight(profile)
            state.rejected = None
            state.pending = Pending("generated", self._new_object(profile),
                                    "renew" if state.cert_id else "enroll", since=now_iso(),
                                    replaces=current if entry is not None else None,
                                    request=request_spec(profile))
            if state.pending.object in state.superseded:  # a name freed earlier in this run
                state.superseded.remove(state.pending.object)
            state.note("replace", reason=reason, object=state.pending.object)
            self.store.save(state)
        pending = state.pending
        assert pending is not None
        result.object = pending.object
        result.action = {"ordered": "collect", "installed": "commit"}.get(pending.stage,
                                                                         pending.kind)

        if pending.stage == "ordering":
            self._resume_ordering(profile, state)
        if pending.stage == "generated":
            csr = self._csr(profile, pending)
            if self.options.stopping():  # the request is saved: the next run orders with it
                raise Interrupted(f"key and CSR made in {pending.object}, not ordered; the "
                                  "next run orders")
            self._order(profile, state, csr)
            result.ordered = True
        return state

    def _discard_request(self, profile: CertificateProfile, state: CertState,
                         why: str) -> None:
        """Delete an unordered request object (a key and CSR only; nothing can use it) and
        forget it. Its deletion is committed with the rest of the run, or by the cleanup."""
        pending = state.pending
        assert pending is not None
        log.info("%s: making a new key and CSR instead of the unused request in %s (%s)",
                 profile.name, pending.object, why)
        entry = self.inventory.certificates.get(pending.object)
        users = self.inventory.references(pending.object) if entry is not None else []
        if entry is not None and entry.cert is None and not users:
            self.panos.delete_certificate(pending.object)
            self.inventory.certificates.pop(pending.object, None)
            if pending.object not in state.superseded:
                state.superseded.append(pending.object)  # so that the delete is committed
        elif entry is not None:
            # Not a bare request any more (a certificate was imported into it, or something
            # names it): not the agent's to delete.
            log.warning("%s: leaving %s on %s as it is (%s)", profile.name, pending.object,
                        self.firewall.name, f"used by {', '.join(users)}" if users else
                        "it holds a certificate")
        state.note("discarded", object=pending.object, reason=why)
        state.pending = None
        self.store.save(state)

    def collect_all(self, waiting: List[Tuple[CertificateProfile, CertState]],
                    results: Dict[str, Result]) -> List[CertState]:
        """Collect every order, polling them in turn until each is issued or poll_timeout
        has passed; verify and install each as it arrives. Returns the installed ones."""
        installed: List[CertState] = []
        if not waiting:
            return installed
        assert self.scm_settings is not None
        deadline = time.monotonic() + self.scm_settings.poll_timeout
        while waiting:
            still: List[Tuple[CertificateProfile, CertState]] = []
            for index, (profile, state) in enumerate(waiting):
                if self.options.stopping():
                    for other, left in still + waiting[index:]:
                        assert left.pending is not None
                        results[other.name].interrupt(f"order {left.pending.order_id} waits "
                                                      "at SCM; the next run collects it")
                    return installed
                result = results[profile.name]
                chain = self._attempt(profile, result, self._collect, profile, state)
                if result.failed:
                    continue
                if chain is None:
                    still.append((profile, state))
                    continue
                self._attempt(profile, result, self._install, profile, state, chain)
                if not result.failed:
                    installed.append(state)
            waiting = still
            if not waiting:
                break
            if time.monotonic() + self.scm_settings.poll_interval > deadline:
                for profile, state in waiting:
                    assert state.pending is not None
                    result = results[profile.name]
                    result.outcome = "pending"
                    result.message = (f"order {state.pending.order_id} is still being "
                                      "processed by SCM; the next run collects it")
                    log.info("%s: %s", profile.name, result.message)
                break
            self.options.pause(self.scm_settings.poll_interval)
        return installed

    def _new_object(self, profile: CertificateProfile, freed: Optional[str] = None) -> str:
        """The profile's object name when it is free, else a new dated one. `freed`: a name
        the run will have deleted by then (a dry run has not)."""
        taken = [n for n in self.inventory.certificates if n != freed]
        if profile.object_name not in taken:
            return profile.object_name
        return renewal_name(profile.object_name, taken, self.options.now().date())

    def _csr(self, profile: CertificateProfile, pending: Pending) -> str:
        """Have the firewall make the key pair and CSR (unless an interrupted run already
        did, under this very name), then export the CSR."""
        entry = self.inventory.certificates.get(pending.object)
        if entry is None:
            log.info("%s: generating %s key and CSR on %s as %s", profile.name,
                     profile.key.label, self.firewall.name, pending.object)
            self.panos.generate_csr(pending.object, profile)
            self.inventory.certificates[pending.object] = CertificateEntry(pending.object, True)
        elif entry.cert is not None or not entry.has_key:
            raise AgentError(f"object {pending.object} on {self.firewall.name} holds something "
                             "other than the agent's pending request; rename or delete it")
        return self.panos.export_csr(pending.object)

    def _resume_ordering(self, profile: CertificateProfile, state: CertState) -> None:
        """A run stopped between sending an order and recording its id. Find out whether the
        order exists: SCM's answer may have reached `.ids`; otherwise a classic-API search
        (scm.lookup_label) tells, with or without --force (the everyday "renew now" must not
        skip it). Only when the search cannot decide, or there is none, may --force order
        again."""
        pending = state.pending
        assert pending is not None
        ids = self.store.read_ids(profile.name)
        if ids and ids != pending.ids_before:
            self._adopt(profile, state, ids, "recorded in .ids by the interrupted run")
            return
        if self.options.adopt:
            # The administrator found the order in SCM. If it is not ours, verification
            # refuses its certificate (it does not carry the key made on the firewall).
            self._adopt(profile, state, self.options.adopt, "given with --adopt")
            return
        lookup = self.lookup()
        if lookup is not None:
            csr_key = certs.csr_key(pending.csr) if pending.csr else None
            # A day early: SCM's dates are days, perhaps in another time zone.
            since = dt.date.fromisoformat(pending.since[:10]) - dt.timedelta(days=1)
            found = lookup.find_orders(profile.common_name, since,
                                       self.store.known_order_ids(), csr_key)
            if len(found) == 1:
                self._adopt(profile, state, found[0], "found at SCM")
                return
            if not found:
                log.info("%s: the interrupted order never reached SCM; ordering now",
                         profile.name)
                pending.stage = "generated"
                return
            if not self.options.force:
                raise AgentError(f"a previous run was interrupted while ordering and SCM "
                                 f"has several new orders for {profile.common_name} "
                                 f"({', '.join(found)}); check in SCM which was placed at "
                                 f"{pending.since}, then run: paloaltoagent.py renew "
                                 f"{profile.name} --adopt ID (or --force to order anew)")
        elif not self.options.force:
            raise AgentError(
                f"a previous run was interrupted while ordering at SCM (at {pending.since}); "
                f"an order may exist. Look in SCM for an order for {profile.common_name} "
                f"placed then: if there is one, run: paloaltoagent.py renew {profile.name} "
                f"--adopt ID (the agent collects it); if there is none: paloaltoagent.py "
                f"renew {profile.name} --force (or set scm.lookup_label so the agent can "
                "look by itself)")
        log.warning("%s: ordering again after an interrupted attempt (--force)", profile.name)
        pending.stage = "generated"

    def _adopt(self, profile: CertificateProfile, state: CertState, order_id: str,
               how: str) -> None:
        pending = state.pending
        assert pending is not None
        log.info("%s: resuming order %s (%s)", profile.name, order_id, how)
        self.store.write_ids(profile.name, order_id)
        pending.order_id, pending.stage = order_id, "ordered"
        state.note("ordered", order_id=order_id, kind=pending.kind, api=pending.api,
                   recovered=how)
        self.store.save(state)

    def _order(self, profile: CertificateProfile, state: CertState, csr_pem: str) -> None:
        pending = state.pending
        assert pending is not None
        certs.csr_key(csr_pem)  # a CSR that does not parse fails here, before ordering
        pending.csr = csr_pem.strip()
        client = self.scm()
        pending.api = client.api
        pending.ids_before = self.store.read_ids(profile.name)
        # Written before the order goes out: a crash from here until SCM's answer is recorded
        # is noticed by the next run, which will not order again on its own.
        pending.stage = "ordering"
        self.store.save(state)
        try:
            order_id = self._send_order(client, profile, state, csr_pem)
        except ScmError as exc:
            if exc.refused:
                # SCM refused this very request (a key type, a name, a custom field...): it
                # would refuse it again, so the request is discarded, not re-sent every night.
                raise self._reject(profile, state, f"was refused by SCM: {exc}") from None
            if exc.placed_nothing:
                pending.stage = "generated"
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
        self.store.write_ids(profile.name, order_id)
        pending.order_id, pending.stage = order_id, "ordered"
        state.note("ordered", order_id=order_id, kind=pending.kind, api=client.api)
        self.store.save(state)

    def _send_order(self, client: ScmClient, profile: CertificateProfile, state: CertState,
                    csr_pem: str) -> str:
        pending = state.pending
        assert pending is not None
        if pending.kind == "renew" and state.cert_id:
            try:
                order_id = client.renew(state.cert_id, csr_pem, profile)
                log.info("%s: SCM renewal of %s ordered: id %s", profile.name, state.cert_id,
                         order_id)
                return order_id
            except ScmError as exc:
                if exc.code not in RENEW_REFUSED_CODES:
                    raise
                log.warning("%s: SCM will not renew %s (%s); enrolling instead", profile.name,
                            state.cert_id, exc)
                pending.kind = "enroll"
        order_id = client.enroll(csr_pem, profile)
        log.info("%s: SCM enrollment ordered: id %s", profile.name, order_id)
        return order_id

    def _collect(self, profile: CertificateProfile, state: CertState) -> Optional[certs.Chain]:
        """One collection attempt; the verified chain, or None while SCM is processing."""
        pending = state.pending
        assert pending is not None and pending.order_id
        try:
            data = self.scm().collect(pending.order_id)
        except OrderRejected as exc:
            raise self._reject(profile, state, f"was refused by SCM: {exc}") from None
        if data is None:
            return None

        # _order saved the CSR before the order went out, so every collected order has it.
        assert pending.csr, "an order without its CSR in the state file"
        csr_key = certs.csr_key(pending.csr)
        anchors = [e.cert for e in self.inventory.certificates.values()
                   if e.cert is not None and not e.has_key and certs.is_ca(e.cert)]
        try:
            chain = certs.build_chain(certs.load_certificates(data), csr_key, anchors)
            certs.verify_issued(chain, csr_key, profile.names, self.options.now())
        except VerificationError as exc:
            if exc.retry:
                raise AgentError(f"order {pending.order_id}: {exc}; collecting again next "
                                 "run") from None
            raise self._reject(profile, state, f"was refused before import: {exc}; nothing "
                               "was imported") from None
        issued = certs.validation_level(chain.leaf)
        if issued and issued != profile.validation:
            log.warning("%s: the profile asks for %s but SCM issued %s: check scm.profile_id",
                        profile.name, profile.validation, issued)
        log.info("%s: collected %s (expires %s), chain verified", profile.name,
                 pending.order_id, f"{chain.leaf.not_valid_after_utc:%Y-%m-%d}")
        return chain

    def _reject(self, profile: CertificateProfile, state: CertState, reason: str) -> AgentError:
        """An order that will never give a usable certificate: keep it on record for
        investigation, clean up its unused request object, and wait for --force."""
        pending = state.pending
        assert pending is not None
        state.rejected = {"order_id": pending.order_id, "reason": reason, "time": now_iso()}
        if pending.object != state.object and pending.object not in state.superseded:
            state.superseded.append(pending.object)
        state.note("rejected", order_id=pending.order_id, reason=reason)
        state.pending = None
        self.store.save(state)
        return AgentError(f"{rejected_order(state.rejected)} {reason}. Fix the cause (in SCM "
                          f"or the profile), then run: paloaltoagent.py renew {profile.name} "
                          "--force")

    def _install(self, profile: CertificateProfile, state: CertState,
                 chain: certs.Chain) -> None:
        pending = state.pending
        assert pending is not None
        known = self.inventory.ca_by_fingerprint()
        for ca in chain.cas:
            fingerprint = certs.fingerprint(ca)
            if fingerprint in known:
                continue
            name = certs.ca_object_name(ca)
            log.info("%s: importing CA certificate %s", profile.name, name)
            self.panos.import_certificate(name, certs.pem(ca))
            self.inventory.certificates[name] = CertificateEntry(name, False, cert=ca)
            known[fingerprint] = name
        current = self.inventory.certificates.get(pending.object)
        if current is None or current.cert != chain.leaf:
            log.info("%s: importing the certificate into %s", profile.name, pending.object)
            self.panos.import_certificate(pending.object, certs.pem(chain.leaf))
        # Verify after import: the firewall must hold this certificate with its own key.
        back = self.panos.read_certificate(pending.object)
        if back is None or back.cert != chain.leaf or not back.has_key:
            raise AgentError(f"{pending.object} on {self.firewall.name} does not hold the "
                             "imported certificate with its private key; no service was "
                             "pointed at it")
        self.inventory.certificates[pending.object] = back
        for service in self._repoint_targets(profile, pending.object, pending.replaces):
            if service in self.inventory.service_profiles:
                log.info("%s: pointing SSL/TLS service profile %s at %s", profile.name,
                         service, pending.object)
                self.panos.set_service_certificate(service, pending.object)
            else:
                log.info("%s: creating SSL/TLS service profile %s for %s", profile.name,
                         service, pending.object)
                self.panos.create_service_profile(service, pending.object)
            self.inventory.service_profiles[service] = pending.object
        pending.stage = "installed"
        state.note("imported", object=pending.object, order_id=pending.order_id)
        self.store.save(state)

    # -- step 5: commit, then clean up ----------------------------------------------------

    def _commit(self) -> None:
        job = self.panos.commit()
        if job is None:
            log.info("%s: nothing left to commit", self.firewall.name)
            return
        log.info("%s: commit job %s started", self.firewall.name, job)
        self.panos.wait_job(job)
        self.commits += 1
        log.info("%s: commit job %s succeeded", self.firewall.name, job)

    def commit(self, installed: List[CertState], results: Dict[str, Result]) -> bool:
        try:
            self._commit()
        except Interrupted as exc:
            for state in installed:
                results[state.profile].interrupt(f"{exc}; the next run completes it")
            return False
        except PanosError as exc:
            for state in installed:
                results[state.profile].fail(f"imported but not committed (the next run "
                                            f"commits again): {exc}")
            log.error("%s: commit failed: %s", self.firewall.name, exc)
            return False
        for state in installed:
            pending = state.pending
            assert pending is not None and pending.order_id
            result = results[state.profile]
            old = pending.replaces
            if old and old != pending.object and old not in state.superseded:
                state.superseded.append(old)
            result.outcome = "changed"
            state.object, state.cert_id, state.api = pending.object, pending.order_id, \
                pending.api
            state.pending = None
            state.note("committed", object=state.object, cert_id=state.cert_id)
            self.store.save(state)  # .ids has held this id since the order was placed
            result.object, result.cert_id = state.object, state.cert_id
            self._describe(result, self.inventory.certificates.get(state.object))
            result.message = f"installed as {state.object}"
        return True

    def cleanup(self, results: Dict[str, Result]) -> None:
        """Delete superseded objects that nothing references (the firewall would refuse with
        code 10 otherwise). Names stay in the state until the cleanup commit succeeded, so a
        delete left uncommitted by an interrupted run is committed by the next one."""
        touched: List[CertState] = []
        if self.options.stopping():
            return  # the superseded objects stay listed; the next run removes them
        for profile in self.profiles:
            state = self.states.get(profile.name)
            if state is None or not state.superseded:
                continue
            needs_commit = False
            in_use = {state.object, state.pending.object if state.pending else None}
            for name in list(state.superseded):
                if name in in_use:  # never delete what the profile holds or is making
                    state.superseded.remove(name)
                    continue
                if name not in self.inventory.certificates:
                    needs_commit = True  # deleted in the candidate, perhaps not yet committed
                    continue
                users = self.inventory.references(name)
                if users:
                    log.warning("%s: keeping old %s, still used by %s (repoint it, and the "
                                "next run deletes it)", profile.name, name, ", ".join(users))
                    continue
                if self.options.stopping():
                    break  # what is not deleted yet stays listed for the next run
                try:
                    self.panos.delete_certificate(name)
                except PanosError as exc:
                    log.warning("%s: keeping old %s: %s", profile.name, name, exc)
                    continue
                self.inventory.certificates.pop(name, None)
                needs_commit = True
            if needs_commit:
                touched.append(state)
        if not touched:
            return
        try:
            if self.options.stopping():
                raise Interrupted(f"firewall {self.firewall.name}: not committed")
            self._commit()
        except Interrupted as exc:
            log.info("%s: %s; the next run commits the removal", self.firewall.name, exc)
            return
        except PanosError as exc:
            log.error("%s: cleanup commit failed: %s", self.firewall.name, exc)
            for state in touched:
                result = results[state.profile]
                if not result.failed:
                    result.fail(f"removing the old object was not committed (the next run "
                                f"tries again): {exc}")
            return
        for state in touched:
            for name in [n for n in state.superseded if n not in self.inventory.certificates]:
                log.info("%s: removed superseded %s", state.profile, name)
                state.note("removed", object=name)
                state.superseded.remove(name)
            self.store.save(state)

    def _describe(self, result: Result, entry: Optional[CertificateEntry]) -> None:
        facts = entry.facts if entry is not None else None
        if facts is not None:
            result.not_after, result.issuer = facts.not_after, facts.issuer_cn
            result.key, result.common_name = facts.key_label, facts.subject_cn


def run(config: Config, names: Sequence[str], options: RunOptions) -> Report:
    """Steps 2-6 for the selected certificate profiles (all when `names` is empty), on up to
    max_parallel_firewalls firewalls at once; a slow or dead firewall holds up only its own
    thread (and only up to its timeouts). With mode "status" or a dry run, only reads."""
    report = Report([])
    started = time.monotonic()
    profiles = [config.certificates[n] for n in dict.fromkeys(names)] if names else \
        list(config.certificates.values())
    store = StateStore(config.state_dir)
    store.ensure_writable()
    by_firewall: Dict[str, List[CertificateProfile]] = {}
    for profile in profiles:
        by_firewall.setdefault(profile.firewall, []).append(profile)
    workers = min(config.max_parallel_firewalls, len(by_firewall)) or 1
    clients: Dict[str, Optional[ScmClient]] = {}
    made = threading.Lock()
    shared = http.Shared()  # TLS contexts and proxy settings, prepared once for all firewalls

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
            return clients["lookup"]  # type: ignore[return-value]

    def one_firewall(name: str) -> List[Result]:
        firewall = config.firewalls[name]
        if not firewall.tls.verify and not firewall.tls.fingerprint:
            log.warning("%s: TLS verification is OFF (verify_tls: false); the management "
                        "connection can be intercepted", firewall.name)
        worker = FirewallRun(config.scm, firewall, by_firewall[name], store, scm, lookup,
                             options, shared)
        try:
            return worker.run()
        except Exception as exc:  # a surprise on one firewall must not stop the others
            log.error("%s: unexpected error", name, exc_info=True)
            # What is already done (committed, failed, ordered) stays reported as such.
            results = list(worker.results.values()) or \
                [Result(p.name, name) for p in by_firewall[name]]
            for result in results:
                if result.outcome not in ("changed", "failed"):
                    result.fail(f"unexpected error: {type(exc).__name__}: {exc}")
                if options.progress:
                    options.progress(result)
            return results
        finally:
            with made:
                report.commits += worker.commits

    def all_firewalls() -> List[List[Result]]:
        if workers == 1:
            return [one_firewall(name) for name in by_firewall]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="firewall") as pool:
            return list(pool.map(one_firewall, by_firewall))

    if options.mode == "status" or options.dry_run:
        batches = all_firewalls()  # read only: no need to keep other runs out
    else:
        with store.lock():
            batches = all_firewalls()
    report.results = [result for batch in batches for result in batch]
    report.seconds = time.monotonic() - started
    return report
