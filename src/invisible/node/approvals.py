"""The jobs a node holds for approval, and its approvers' decisions on them.

The executor asks the desk at each step of a job (see
:mod:`invisible.metering.approvals` for the rules and what each party
learns):

- :meth:`ApprovalDesk.hold` when a job was prepared: whether rules hold it
  (then an `awaiting-approval` entry, and its deadline);
- :meth:`ApprovalDesk.take` when the coordinator runs it: refused unless
  approved; from then on no decision changes it, and the approvals it runs on
  go into its receipt;
- :meth:`ApprovalDesk.forget` when it ends without running.

Approvers call :meth:`pending` and :meth:`decide` (the Approvals service).
One lock orders decisions and `take`, so a consent withdrawn before the job
runs is never run on. The desk calls back into the executor (to cancel a
rejected job, to wake a waiting status request) only outside its lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from invisible.errors import ConfigError, PolicyError
from invisible.jobspec import HeldJob, JobSpec, spec_digest
from invisible.metering.approvals import (
    AWAITING,
    EVENTS,
    Consent,
    Decision,
    Held,
    clock,
    iso,
    rules_holding,
)
from invisible.metering.entries import LedgerEntry
from invisible.metering.meter import JobMeta, Meter
from invisible.metering.privacy import rho_of
from invisible.net.pki import Identity, Role

log = logging.getLogger(__name__)


#: Jobs one requester may have held for approval at one node at once.
MAX_HELD_PER_REQUESTER = 32


@dataclass
class _Waiting:
    spec: JobSpec
    meta: JobMeta
    held: Held
    #: Rejections left a rule unable to reach k: it waits for its cancellation, and nothing
    #: may run it or decide on it.
    rejected: bool = False


class ApprovalDesk:
    def __init__(self, party_id: str, meter: Meter,
                 cancel: Callable[[str, str, str], None],
                 wake: Callable[[str], None],
                 revoked: Callable[[bytes], bool] = lambda certificate: False) -> None:
        self.party_id = party_id
        self.meter = meter
        #: Whether a certificate is revoked now (the CA's list as the node enforces it).
        self._revoked = revoked
        #: cancel(job_id, reason, by): the executor cancels a job that never ran.
        self._cancel = cancel
        #: wake(job_id): a status request waiting on the job answers now.
        self._wake = wake
        self._waiting: dict[str, _Waiting] = {}
        self._lock = threading.Lock()

    def hold(self, spec: JobSpec, meta: JobMeta) -> float | None:
        """Hold a prepared job if its dataset's approval rules name it: its deadline (unix
        time), recorded in an `awaiting-approval` entry; None if no rule holds it. Called
        before the job can be run: from here on Run finds it held. PolicyError if its
        requester has MAX_HELD_PER_REQUESTER jobs held here already."""
        policy = self.meter.policy_of(meta)
        if policy is None or meta.use is None:
            return None
        rules = rules_holding(policy.approval, meta.use)
        if not rules:
            return None
        held = Held.of(rules, spec_digest(spec), clock(), meta.requester, self._revoked)
        with self._lock:
            mine = sum(w.meta.requester == meta.requester for w in self._waiting.values())
            if mine >= MAX_HELD_PER_REQUESTER:
                raise PolicyError(f"requester '{meta.requester}' has {mine} jobs held for "
                                  f"approval on party '{self.party_id}'; it may start another "
                                  "when one of them ends")
            self._waiting[spec.job_id] = _Waiting(spec, meta, held)
        self.meter.note(meta, AWAITING, deadline=iso(held.deadline), rules=[
            {"approvers": list(r.approvers), "required": r.required} for r in rules])
        log.info("job %s held for approval (%s) until %s", spec.job_id,
                 "; ".join(r.describe() for r in rules), iso(held.deadline))
        return held.deadline

    def awaiting(self, job_id: str) -> bool:
        """Whether a held job may not run yet (approvals missing, rejected, or too late)."""
        with self._lock:
            waiting = self._waiting.get(job_id)
            return waiting is not None and (waiting.rejected
                                            or not waiting.held.approved(clock()))

    def take(self, job_id: str, held: bool) -> list[dict[str, str]]:
        """The job is to run: the approvals it runs on (none if it is not `held`);
        PolicyError if it may not run. After this no decision is taken on it. A held job
        no longer waiting (rejected, cancelled) is refused: the check fails closed."""
        with self._lock:
            waiting = self._waiting.get(job_id)
            if waiting is None and not held:
                return []
            if waiting is None or waiting.rejected:
                raise PolicyError(f"job '{job_id}' was held for approval on party "
                                  f"'{self.party_id}' and is no longer waiting to run")
            now = clock()
            if not waiting.held.approved(now):
                raise PolicyError(f"job '{job_id}' is held for approval on party "
                                  f"'{self.party_id}' and {waiting.held.missing(now)}")
            del self._waiting[job_id]
            return [c.summary() for c in waiting.held.approvals(now).values()]

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._waiting.pop(job_id, None)

    def expired(self, job_id: str) -> str:
        """Why a job that reached its deadline is cancelled."""
        with self._lock:
            waiting = self._waiting.get(job_id)
            if waiting is None:
                return "the deadline to run it passed"
            before = waiting.held.deadline - 1e-3  # how it stood as the deadline came
            if waiting.held.approved(before):
                return "it was approved but not run before its deadline"
            return f"its approvals did not come in time (it {waiting.held.missing(before)})"

    # -- the approvers' calls ---------------------------------------------------------------

    def pending(self, approver: Identity) -> list[HeldJob]:
        """The held jobs that wait for this approver's decision (any it may still change)."""
        self._require_approver(approver)
        now = clock()
        with self._lock:
            mine = [w for w in self._waiting.values()
                    if approver.party_id in w.held.approvers and not w.rejected]
            return [HeldJob(w.spec, w.held.digest, w.meta.requester, w.meta.use.dataset,
                            tuple(w.meta.use.columns), w.meta.use.recipient or "",
                            rho_of(w.meta.use.rho) if w.meta.use.rho else 0.0,
                            iso(w.held.deadline), w.held.state(now))
                    for w in mine if w.meta.use is not None]

    def decide(self, approver: Identity, certificate_pem: bytes, decision_json: str,
               signature: bytes) -> tuple[LedgerEntry, str]:
        """Take a signed decision: its ledger entry, and the job's state after it ("awaiting",
        "approved" or "rejected"). PolicyError, nothing recorded, for a decision that may not
        be taken (see Held.check) or whose signature is not the caller's."""
        self._require_approver(approver)
        decision = Decision.parse(decision_json)
        if not decision.signed_by(certificate_pem, signature):
            raise PolicyError("the decision's signature is not by the key of the certificate "
                              "it was sent with")
        with self._lock:
            waiting = self._waiting.get(decision.job_id)
            if waiting is None or waiting.rejected \
                    or approver.party_id not in waiting.held.approvers:
                raise ConfigError(f"no job '{decision.job_id}' waits for a decision of "
                                  f"'{approver.party_id}' on party '{self.party_id}' (it ran, "
                                  "ended, or never needed one)")
            held = waiting.held
            now = clock()
            decided, expires = held.check(decision, approver.party_id, self.party_id,
                                          decision.job_id, now)
            held.made[approver.party_id] += 1
            consent = Consent(approver.party_id, decision, signature.hex(), decided, expires,
                              certificate_pem)
            entry = self.meter.note(waiting.meta, EVENTS[decision.decision],
                                    approver=approver.party_id, decision=decision.__dict__,
                                    signature=consent.signature,
                                    certificate=certificate_pem.decode())
            held.decisions[approver.party_id] = consent
            hopeless = held.hopeless()
            if hopeless is not None:  # nothing runs it from here; `forget` drops it
                waiting.rejected = True
            state = ("rejected" if hopeless is not None
                     else "approved" if held.approved(now) else "awaiting")
        log.info("job %s: %s by %s (%s)", decision.job_id, EVENTS[decision.decision],
                 approver.party_id, state)
        if hopeless is not None:
            self._cancel(decision.job_id, f"rejected by '{approver.party_id}' "
                         f"({decision.reason or 'no reason given'}): approval by "
                         f"{hopeless.describe()} can no longer be reached", approver.party_id)
        else:
            self._wake(decision.job_id)
        return entry, state

    @staticmethod
    def _require_approver(identity: Identity) -> None:
        if identity.role is not Role.APPROVER:
            raise PolicyError(f"{identity} may not decide on held jobs; it needs an approver "
                              "certificate")
