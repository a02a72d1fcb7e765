"""A node's meter: every job is authorised, reserved, recorded and counted here.

The executor calls it at each state change of a job:

- :meth:`Meter.authorise` on the request alone, before anything reads data.
- :meth:`Meter.admit` before anything touches data values: in one ledger
  transaction, today's usage, the quota check, and the `requested` +
  `accepted` (or `requested` + `refused`) entries. Twenty concurrent
  requests at the edge of a quota cannot overspend it.
- :meth:`Meter.data_refusal` and :meth:`Meter.refuse_run` when an admitted job
  is to run: the data checks (k threshold, the kind's own), which end the
  job `refused` and charged. Deciding them only then keeps the answer to
  Start independent of the data: a job accepted and cancelled before it
  runs gives its reservation back and has revealed nothing.
- :meth:`Meter.close` at the end: `finished` (with rows, bytes, values
  opened, outputs released and to whom, duration), `failed` or `cancelled`.
- :meth:`Meter.witness`: the chain heads of the job's peers, countersigned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from invisible.metering.billing import BILLED_EVENTS, PriceList, bill
from invisible.metering.entries import PRIVATE_ROWS, REVOKED_REFUSED, LedgerEntry, PendingEntry
from invisible.metering.ledger import Usage, utc_now
from invisible.metering.metrics import NodeMetrics
from invisible.metering.policy import (
    ANY,
    Budget,
    DatasetPolicy,
    NodePolicy,
    Refusal,
    UseRequest,
    authorise,
    authorise_without_data,
    group_problem,
    privacy_budgets,
    privacy_problem,
    quota_problem,
    threshold_problem,
)
from invisible.metering.privacy import rho_of

log = logging.getLogger(__name__)

#: What a job whose rows are private records in the node's own ledger, not in its receipt.
PRIVATE_MEASURES = ("values_opened", "rounds", "tuples", "cpu_s")


class LedgerStore(Protocol):
    def transaction(self, decide: Any) -> list[LedgerEntry]: ...

    def append(self, *pending: PendingEntry) -> list[LedgerEntry]: ...

    def usage(self, dataset: str, day: str, requester: str | None = None,
              kinds: frozenset[str] | None = None) -> Usage: ...

    def groups(self, dataset: str, kind: str) -> list[tuple[str, ...]]: ...

    def privacy_spent(self, dataset: str, requester: str | None = None,
                      day: str | None = None) -> int: ...

    def head(self) -> tuple[int, str]: ...

    def knows_job(self, job_id: str) -> bool: ...

    def witnessed_heads(self) -> dict[str, tuple[int, str]]: ...

    def contradicted_peers(self) -> dict[str, int]: ...


class NullLedgerStore:
    """Records nothing (benchmarks only: what metering costs is measured against this)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def transaction(self, decide: Any) -> list[LedgerEntry]:
        return [LedgerEntry(self.node_id, 0, "", p.job_id, p.event, p.requester, p.kind,
                            p.dataset, p.rows, p.body, "") for p in decide(self)]

    def append(self, *pending: PendingEntry) -> list[LedgerEntry]:
        return self.transaction(lambda _: pending)

    def usage(self, dataset: str, day: str, requester: str | None = None,
              kinds: frozenset[str] | None = None) -> Usage:
        return Usage(0, 0)

    def groups(self, dataset: str, kind: str) -> list[tuple[str, ...]]:
        return []

    def privacy_spent(self, dataset: str, requester: str | None = None,
                      day: str | None = None) -> int:
        return 0

    def head(self) -> tuple[int, str]:
        return 0, ""

    def knows_job(self, job_id: str) -> bool:
        return False

    def witnessed_heads(self) -> dict[str, tuple[int, str]]:
        return {}

    def contradicted_peers(self) -> dict[str, int]:
        return {}


@dataclass(frozen=True)
class JobMeta:
    """The ledger's view of a job: who, what kind, and what it uses here (if any data)."""

    job_id: str
    requester: str
    kind: str
    use: UseRequest | None = None
    #: The rows it touches are not the requester's to know (an alignment whose size was not
    #: released): they go to this node's own ledger, not to a receipt.
    rows_private: bool = False

    def pending(self, event: str, rows: int = 0, **body: Any) -> PendingEntry:
        dataset = self.use.dataset if self.use else ""
        if self.use is not None:
            body.setdefault("columns", list(self.use.columns))
            if self.use.rho:  # nano-rho; the accepted entries' are what budgets sum
                body.setdefault("rho", self.use.rho)
        return PendingEntry(self.job_id, event, self.requester, self.kind, dataset, rows, body)


class Meter:
    def __init__(self, party_id: str, store: LedgerStore,
                 policies: dict[str, DatasetPolicy | None], metrics: NodeMetrics,
                 node_policy: NodePolicy | None = None) -> None:
        self.party_id = party_id
        self.store = store
        self.policies = policies
        #: The rule for jobs that use none of this node's data (None: they are refused).
        self.node_policy = node_policy
        self.metrics = metrics
        #: False for the benchmarks' no-op store: nothing to countersign.
        self.records = not isinstance(store, NullLedgerStore)

    def refuse(self, job: JobMeta, rule: str, detail: str) -> LedgerEntry:
        """Record a job refused before policy could be applied (an invalid request)."""
        entries = self.store.append(job.pending("requested"),
                                    job.pending("refused", rule=rule, detail=detail))
        self.metrics.refusals.labels(rule).inc()
        self.metrics.jobs(job.kind, "refused").inc()
        return entries[-1]

    def authorise(self, job: JobMeta) -> None:
        """The policy on the request alone (requester, kind, columns, recipient), before
        anything reads data; raises a recorded Refusal."""
        use = job.use
        if use is None:
            return
        policy = self.policies.get(use.dataset)
        try:
            authorise(self.party_id, policy, use)
            assert policy is not None  # authorise refuses a dataset without policy
            # A budget already spent refuses the job before anything reads data; `admit`
            # checks again, atomically with the reservation.
            spent = privacy_problem(use, self._spent(self.store, use, policy))
            if spent is not None:
                raise Refusal(self.party_id, *spent)
        except Refusal as refusal:
            refusal.receipts = (self.refuse(job, refusal.rule, str(refusal)).to_json(),)
            raise

    @staticmethod
    def _spent(store: LedgerStore, use: UseRequest,
               policy: DatasetPolicy) -> list[tuple[Budget, int]]:
        """Each budget that binds this request, with what it has spent (none for a request
        that costs nothing)."""
        day = utc_now()[:10]
        return [(b, store.privacy_spent(use.dataset, b.requester, day if b.daily else None))
                for b in privacy_budgets(policy, use)]

    def admit(self, job: JobMeta, traffic: int = 0) -> LedgerEntry:
        """Reserve an authorised job, atomically, or refuse it over quota (nothing reserved);
        raises a recorded Refusal.

        Nothing decided here depends on the data's values: the data checks
        (:meth:`data_refusal`) refuse the job only when it is run, charged.
        """
        use = job.use
        if use is None:
            return self._admit_without_data(job, traffic)
        policy = self.policies.get(use.dataset)
        rule = authorise(self.party_id, policy, use)  # checked by `authorise` already
        assert policy is not None  # authorise refuses a dataset without policy
        day = utc_now()[:10]
        verdict: dict[str, Any] = {}

        def decide(store: LedgerStore) -> list[PendingEntry]:
            # A rule's own limits count the jobs of its kinds (a rule for psi alone limits psi).
            mine = store.usage(use.dataset, day, use.requester,
                               None if ANY in rule.kinds else rule.kinds)
            overall = store.usage(use.dataset, day)
            quota = quota_problem(policy, rule, use, (mine.jobs, mine.rows),
                                  (overall.jobs, overall.rows))
            if quota is None and use.group is not None:
                quota = group_problem(policy, use, store.groups(use.dataset, use.kind))
            spent = self._spent(store, use, policy)
            if quota is None:
                quota = privacy_problem(use, spent)
            verdict.update(quota=quota, mine=mine, overall=overall, spent=spent)
            if quota is not None:
                return [job.pending("requested"),
                        job.pending("refused", rule=quota[0], detail=quota[1])]
            group = {} if use.group is None else {"group": sorted(use.group)}
            return [job.pending("requested"), job.pending("accepted", rows=use.rows, **group)]

        entries = self.store.transaction(decide)
        if verdict["quota"] is not None:
            self.metrics.refusals.labels(verdict["quota"][0]).inc()
            self.metrics.jobs(job.kind, "refused").inc()
            refusal = Refusal(self.party_id, *verdict["quota"])
            refusal.receipts = (entries[-1].to_json(),)
            raise refusal
        self._export_remaining(policy, rule, use, verdict["mine"], verdict["overall"])
        self._export_privacy(use, verdict["spent"])
        return entries[-1]

    def policy_of(self, job: JobMeta) -> DatasetPolicy | None:
        """The policy of the dataset the job uses here (None: it uses none)."""
        return self.policies.get(job.use.dataset) if job.use is not None else None

    def refuses_out_of_bound(self, job: JobMeta) -> bool:
        """Whether the policy of the job's dataset refuses values beyond a declared bound."""
        policy = self.policy_of(job)
        return policy is not None and policy.refuses_out_of_bound

    def data_refusal(self, job: JobMeta, problem: str | None = None) -> Refusal | None:
        """The data checks of an admitted job: the k threshold, and `problem` (a
        data-dependent reason the kind found). Records nothing: see :meth:`refuse_run`."""
        use = job.use
        if use is None:
            return None
        policy = self.policies.get(use.dataset)
        assert policy is not None  # the job was authorised
        found = threshold_problem(policy, use) or (("data", problem) if problem else None)
        return Refusal(self.party_id, *found) if found is not None else None

    def refuse_run(self, job: JobMeta, refusal: Refusal, record: dict[str, Any],
                   **body: Any) -> LedgerEntry:
        """End an admitted job refused by its data checks as it was to run: *charged*, its
        reservation kept, so probing the data with refusals costs what running jobs would."""
        self.metrics.refusals.labels(refusal.rule).inc()
        return self.close(job, "refused", record, rule=refusal.rule,
                          detail=refusal.detail, charged=True, **body)

    def _admit_without_data(self, job: JobMeta, traffic: int) -> LedgerEntry:
        """A job that uses none of this node's data: the node's own policy and quota."""
        policy = self.node_policy
        try:
            authorise_without_data(self.party_id, policy, job.requester, job.kind, traffic)
        except Refusal as refusal:
            refusal.receipts = (self.refuse(job, refusal.rule, str(refusal)).to_json(),)
            raise
        assert policy is not None
        day = utc_now()[:10]
        verdict: dict[str, Any] = {}

        def decide(store: LedgerStore) -> list[PendingEntry]:
            used = store.usage("", day, job.requester).jobs
            over = policy.jobs_per_day is not None and used + 1 > policy.jobs_per_day
            verdict["over"] = over
            if over:
                return [job.pending("requested"), job.pending(
                    "refused", rule="quota", detail=f"jobs per day without data for "
                    f"'{job.requester}' (limit {policy.jobs_per_day}) would be exceeded")]
            return [job.pending("requested"), job.pending("accepted", traffic=traffic)]

        entries = self.store.transaction(decide)
        if verdict["over"]:
            self.metrics.refusals.labels("quota").inc()
            self.metrics.jobs(job.kind, "refused").inc()
            over_quota = Refusal(self.party_id, "quota", entries[-1].body["detail"])
            over_quota.receipts = (entries[-1].to_json(),)
            raise over_quota
        return entries[-1]

    def note(self, job: JobMeta, event: str, **body: Any) -> LedgerEntry:
        """A fact of a job for this node's own ledger only (never a receipt), e.g. how many
        values were clipped."""
        return self.store.append(job.pending(event, **body))[-1]

    def _export_remaining(self, policy: DatasetPolicy, rule: Any, use: UseRequest,
                          mine: Usage, overall: Usage) -> None:
        for limit, used, who, unit in (
            (rule.jobs_per_day, mine.jobs + 1, use.requester, "jobs"),
            (rule.rows_per_day, mine.rows + use.rows, use.requester, "rows"),
            (policy.jobs_per_day, overall.jobs + 1, "*", "jobs"),
            (policy.rows_per_day, overall.rows + use.rows, "*", "rows"),
        ):
            if limit is not None:
                self.metrics.quota_remaining.set(use.dataset, who, unit, limit, limit - used)

    def _export_privacy(self, use: UseRequest, spent: list[tuple[Budget, int]]) -> None:
        for budget, used in spent:
            self.metrics.privacy_remaining(use.dataset, budget.requester or "*",
                                           "day" if budget.daily else "total",
                                           rho_of(budget.limit),
                                           rho_of(budget.limit - used - use.rho))

    def close(self, job: JobMeta, event: str, record: dict[str, Any], rows: int = 0,
              notes: Sequence[tuple[str, dict[str, Any]]] = (), **body: Any) -> LedgerEntry:
        """The terminal entry of a job that was admitted: finished, failed or cancelled.

        `notes`: (event, body) facts of the job for this node's own ledger (see
        :meth:`note`), written before the terminal entry in the same transaction (one
        durable write). For a job whose rows are private, the rows go into a `rows` entry
        of this node's own ledger first, and the terminal entry (the receipt) says 0."""
        touched = rows
        first = [job.pending(name, **facts) for name, facts in notes]
        if job.rows_private:  # even for 0 rows: the entries' count must not tell it
            # The rows, and what counts them or grows with them (values opened, the
            # openings, the rounds, the dealer's tuples, the CPU time), in this node's own
            # ledger only: neither the receipt nor its bill may tell the count.
            counted = {k: record.get(k, 0) for k in PRIVATE_MEASURES}
            first.append(job.pending(PRIVATE_ROWS, rows=rows, **counted,
                                     openings=body.pop("openings", [])))
            rows = 0
            record = {**record, "rows_used": 0, **dict.fromkeys(PRIVATE_MEASURES, 0)}
            if isinstance(body.get("outputs"), dict):
                body["outputs"] = {**body["outputs"], "values_opened": 0}
        prices = self._prices(job)
        if prices is not None and event in BILLED_EVENTS:  # on what the receipt shows
            used = {**record, **body}
            if job.use is not None and job.use.rho:
                used["rho"] = job.use.rho
            body["bill"] = bill(prices, used, rows)
        entry = self.store.append(*first, job.pending(event, rows=rows, **record, **body))[-1]
        self.metrics.jobs(job.kind, event).inc()
        if "duration_s" in record:
            self.metrics.observe_duration(job.kind, float(record["duration_s"]))
        if event == "finished" and job.use is not None:
            self.metrics.rows.labels(job.use.dataset).inc(touched)
        self.metrics.bytes.labels("sent").inc(record.get("bytes_sent", 0))
        self.metrics.bytes.labels("received").inc(record.get("bytes_received", 0))
        return entry

    def _prices(self, job: JobMeta) -> PriceList | None:
        """The price list of the job's dataset here, or of the node for a job without data."""
        if job.use is None:
            return self.node_policy.prices if self.node_policy is not None else None
        policy = self.policies.get(job.use.dataset)
        return policy.prices if policy is not None else None

    def note_peer(self, event: str, peer: str, **body: Any) -> LedgerEntry:
        """A fact about a peer's chain (it went back on a countersigned head, or proved it
        extends it again), for this node's own ledger."""
        return self.store.append(PendingEntry("-", event, kind="witness",
                                              body={"peer": peer, **body}))[-1]

    def note_revoked(self, caller: str, role: str, serial: int, first: bool) -> None:
        """A call made with a revoked certificate was refused: counted, and recorded in the
        ledger the first time since the list in force was loaded (a revoked caller that
        retries cannot fill the ledger)."""
        self.metrics.revoked_calls.labels(role).inc()
        if first:
            self.store.append(PendingEntry("-", REVOKED_REFUSED, kind="tls", body={
                "caller": caller, "role": role, "serial": f"{serial:x}"}))

    def witness_heads(self, heads: dict[str, tuple[int, str]]) -> LedgerEntry:
        """Countersign peers' chain heads as received over mutual TLS (a `witnessed` entry)."""
        return self.store.append(PendingEntry(
            "-", "witnessed", kind="witness",
            body={"heads": {p: [seq, digest] for p, (seq, digest) in heads.items()}}))[-1]
