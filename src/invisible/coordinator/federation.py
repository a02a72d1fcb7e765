"""The coordinator's view of a federation: its parties, and jobs run across them.

A :class:`Federation` is made from a coordinator config (its certificate,
the CA, and the parties' addresses). It starts a job on every party node,
waits for all of them, and returns the outputs only if every party finished:
one failure fails the whole job and nothing is released.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from invisible.coordinator.config import CoordinatorConfig, load_coordinator_config
from invisible.errors import (
    ConfigError,
    InvisibleError,
    JobAbortedError,
    PartyUnavailableError,
    PolicyError,
    ProtocolError,
)
from invisible.jobspec import JobResult, JobSpec, JobState, JobStatus
from invisible.kinds.alignments import ALIGNMENT_PREFIX
from invisible.kinds.bandwidth import BandwidthParams, BandwidthResult
from invisible.kinds.connectivity import ConnectivityParams, ConnectivityResult
from invisible.kinds.paillier_sum import PaillierSumParams
from invisible.kinds.params import ColumnsRef, InputRef, Params, input_refs
from invisible.kinds.psi import PsiParams, PsiResult
from invisible.kinds.registry import find_kind, kind_of
from invisible.kinds.secure_sum import DEFAULT_MAX_ROWS, SecureSumParams, SecureSumResult
from invisible.kinds.statistics import StatisticsParams, StatisticsResult
from invisible.kinds.vertical_statistics import (
    VerticalStatisticsParams,
    VerticalStatisticsResult,
)
from invisible.metering.audit import ledger_keys_in, receipt_defect
from invisible.net.client import HealthInfo, NodeClient
from invisible.net.pki import Role
from invisible.net.tls import TlsMaterial
from invisible.text import printable

log = logging.getLogger(__name__)

_POLL_S = 2.0
R = TypeVar("R")
T = TypeVar("T")
Columns = Mapping[str, tuple[str, str] | InputRef]


class Federation:
    """Parties reachable from one coordinator identity."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.tls = TlsMaterial.load(config.tls, expected_role=Role.COORDINATOR)
        self.clients = {
            party: NodeClient(self.tls, party, address, role=role,
                              timeout_s=config.limits.rpc_timeout_s)
            for nodes, role in ((config.parties, Role.PARTY), (config.dealers, Role.DEALER))
            for party, address in nodes.items()
        }
        self._pool = ThreadPoolExecutor(max_workers=max(4, len(self.clients)))
        #: The nodes' ledger public keys the coordinator holds, to check their receipts.
        self.ledger_keys = ledger_keys_in(config.ledger_keys, self.clients)

    @classmethod
    def from_config(cls, path: Path | str) -> Federation:
        return cls(load_coordinator_config(path))

    @property
    def parties(self) -> tuple[str, ...]:
        """The data-holding parties (dealers are not among them)."""
        return tuple(self.config.parties)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, party: str) -> NodeClient:
        client = self.clients.get(party)
        if client is None:
            raise ConfigError(f"unknown party '{party}' (known: {', '.join(self.parties)})")
        return client

    def health(self, timeout_s: float | None = None) -> dict[str, HealthInfo]:
        """Each party's health; waits for nodes that are still starting, up to the deadline."""
        futures = {p: self._pool.submit(c.health, timeout_s) for p, c in self.clients.items()}
        return {party: future.result() for party, future in futures.items()}

    def run(self, params: Params[R], parties: Sequence[str] | None = None, *,
            job_id: str | None = None, timeout_s: float | None = None,
            progress: Callable[[int, int], None] | None = None,
            approval_wait_s: float | None = None) -> R:
        """Run a job of any kind and return its typed result.

        The parameters are checked here exactly as every node will check them
        (so a mistake is reported before any node is contacted); the job runs
        on ``parties`` or, by default, on the parties the parameters name (all
        of the federation's for kinds that name none); the kind decodes what
        the parties released. `progress(done, total)` is called as the first party
        reports steps of a long job (rounds, epochs). A job some party's policy holds for
        approval waits for its approvers up to `approval_wait_s` (default: until the
        earliest deadline the parties set), then is cancelled everywhere.
        """
        kind = kind_of(params)
        chosen = tuple(parties or params.job_parties(self.parties))
        checked = type(params).parse(params.to_json(), chosen)
        gathered = self._run_checked(kind.name, kind.version, checked.to_json(), chosen,
                                     job_id, timeout_s, progress, approval_wait_s)
        result: R = kind.finish(checked, gathered)
        return result

    def run_raw(self, kind: str, params: Mapping[str, Any] | None = None,
                parties: Sequence[str] | None = None, *, job_id: str | None = None,
                timeout_s: float | None = None,
                approval_wait_s: float | None = None) -> JobResult:
        """Run a job from a kind's name and its parameters as a JSON object; the gathered,
        undecoded result. The parameters are checked as in :meth:`run`."""
        found = find_kind(kind)
        raw = dict(params or {})
        chosen = tuple(parties or found.params_type.read(raw).job_parties(self.parties))
        checked = found.params_type.parse(raw, chosen)
        return self._run_checked(found.name, found.version, checked.to_json(), chosen, job_id,
                                 timeout_s, approval_wait_s=approval_wait_s)

    def _run_checked(self, kind: str, version: int, params: dict[str, Any],
                     chosen: tuple[str, ...], job_id: str | None,
                     timeout_s: float | None,
                     progress: Callable[[int, int], None] | None = None,
                     approval_wait_s: float | None = None) -> JobResult:
        """Run one job on the given parties; all finish, or nothing is released.

        Steps: prepare the job on every party (each checks its policy and
        reserves quota; a refusal anywhere cancels it on the parties that had
        accepted, before any data is touched); if some party holds it for
        approval, wait for its approvers (a rejection or the deadline cancels
        it everywhere); run it on every party; wait
        for every party and fetch the arrays each releases to this requester;
        if any failed, raise naming the party where it started. Each party's
        signed receipt is kept in the result (and in the receipts folder).
        """
        clients = {p: self._client(p) for p in chosen}
        spec = JobSpec(job_id or f"{kind}-{uuid.uuid4().hex[:12]}", kind, chosen, params, version)
        started = time.perf_counter()
        answers = self._on_every_party(clients, spec.job_id, lambda c: c.start_job(spec),
                                       "refused")
        check = any(a.checks_bounds for a in answers.values())  # a policy refuses out of bound
        held = {p: a.approval_deadline for p, a in answers.items() if a.approval_deadline}
        if held:  # then run the holding parties first: one whose consent lapsed meanwhile
            # refuses before any other party starts (and is charged)
            self._await_approvals(clients, spec.job_id, held, approval_wait_s)
            self._on_every_party({p: c for p, c in clients.items() if p in held}, spec.job_id,
                                 lambda c: c.run_job(spec.job_id, check_bounds=check), "failed",
                                 cancel=clients)
        self._on_every_party({p: c for p, c in clients.items() if p not in held}, spec.job_id,
                             lambda c: c.run_job(spec.job_id, check_bounds=check), "failed",
                             cancel=clients)
        deadline = time.monotonic() + (timeout_s or self.config.limits.job_timeout_s)
        waits = {p: self._pool.submit(self._await_and_fetch, c, spec.job_id, deadline,
                                      progress if p == chosen[0] else None)
                 for p, c in clients.items()}
        statuses: dict[str, JobStatus] = {}
        arrays: dict[str, dict[str, np.ndarray]] = {}
        errors: dict[str, InvisibleError] = {}
        for party, wait in waits.items():
            try:
                statuses[party], arrays[party] = wait.result()
            except InvisibleError as exc:
                errors[party] = exc
        failed = {p: (s.error, s.aborted_by) for p, s in statuses.items()
                  if s.state is JobState.FAILED}
        failed.update({p: (str(e), e.by if isinstance(e, JobAbortedError) else "")
                       for p, e in errors.items()})
        if failed:
            receipts = self._cancel(spec.job_id, [p for p in chosen if p not in failed],
                                    "failed elsewhere")
            receipts.update({p: s.receipts for p, s in statuses.items() if p in failed})
            receipts.update({p: list(e.receipts) for p, e in errors.items()})
            self._write_receipts(spec.job_id, receipts)
            party, error = _root_cause(failed)
            refused = party in statuses and any(
                r.get("event") == "refused" for r in statuses[party].receipts)
            where = f"party '{party}'"
            alike = [p for p, (e, by) in failed.items() if not by and e == error]
            if len(alike) > 1:  # reached alike by several (the bound check): none singled out
                where = ("every party" if len(alike) == len(chosen) else
                         "parties " + ", ".join(f"'{p}'" for p in alike) + " alike")
            raise (PolicyError if refused else ProtocolError)(
                f"job '{spec.job_id}' {'was refused' if refused else 'failed'} on {where}: "
                f"{error}; no result was released")
        result = JobResult(spec.job_id, kind, chosen, statuses, self.config.coordinator_id,
                           arrays, time.perf_counter() - started)
        self._keep_receipts(result)
        return result

    def _await_approvals(self, clients: Mapping[str, NodeClient], job_id: str,
                         held: Mapping[str, str], wait_s: float | None) -> None:
        """Wait until every party that holds the job has its approvals (its status leaves
        awaiting-approval), asking every party meanwhile (which keeps the job prepared at
        the parties that do not hold it). A party that cancelled it (rejected, or a
        deadline passed), or one that cannot be asked, ends the job everywhere; so does
        waiting past `wait_s` (default: the earliest of the parties' deadlines, plus a
        little). PolicyError."""
        log.info("job %s is held for approval by %s", job_id,
                 ", ".join(f"{p} (until {d})" for p, d in held.items()))
        if wait_s is None:
            earliest = min(datetime.fromisoformat(d.replace("Z", "+00:00")) for d in held.values())
            wait_s = max(0.0, (earliest - datetime.now(UTC)).total_seconds()) + _POLL_S + 5.0
        deadline = time.monotonic() + wait_s
        waiting = set(held)
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._write_receipts(job_id, self._cancel(job_id, list(clients),
                                                          "approvals did not come in time"))
                raise PolicyError(f"job '{job_id}' was held for approval by "
                                  f"{', '.join(sorted(waiting))} and not approved within "
                                  f"{wait_s:g} s; it was cancelled everywhere and nothing ran")
            asked_at = time.monotonic()
            asked = {p: self._pool.submit(clients[p].job_status, job_id,
                                          min(_POLL_S, remaining) if p in waiting else 0.0)
                     for p in sorted(clients)}
            for party, future in asked.items():
                try:
                    status = future.result()
                except InvisibleError as exc:
                    status = JobStatus.failed(job_id, str(exc), receipts=list(exc.receipts))
                if status.state is JobState.FAILED:
                    receipts = self._cancel(job_id, [p for p in clients if p != party],
                                            f"not approved at {party}")
                    receipts[party] = status.receipts
                    self._write_receipts(job_id, receipts)
                    raise PolicyError(f"job '{job_id}' was not approved on party '{party}': "
                                      f"{status.error}; nothing ran")
                if status.state is not JobState.AWAITING_APPROVAL:
                    waiting.discard(party)
            if waiting and time.monotonic() - asked_at < _POLL_S / 4:
                time.sleep(_POLL_S / 4)  # a node answered at once (its long-polls are taken)

    def _keep_receipts(self, result: JobResult) -> None:
        self._write_receipts(result.job_id, result.receipts)

    def _write_receipts(self, job_id: str, receipts: Mapping[str, Sequence[Any]]) -> None:
        """Keep every party's signed entries of a job, whatever its end (one file a job).

        Only what can serve as evidence is kept: a ledger entry of the party that
        sent it, intact, and signed by the party's ledger key when the coordinator
        has that key (``<id>-ledger.pub`` in its `ledger_keys` folder; without it
        the signature is left to the auditor: see
        :func:`~invisible.metering.audit.receipt_defect`). Anything else is logged
        (party, job, why; never its content) and dropped, so that one bad item
        cannot spoil the folder an auditor verifies a ledger against.
        """
        kept = {p: self._genuine(job_id, p, r) for p, r in receipts.items()}
        kept = {p: r for p, r in kept.items() if r}
        if not kept:
            return
        folder = self.config.receipts_dir
        folder.mkdir(parents=True, exist_ok=True)
        path, copy = folder / f"{job_id}.json", 1
        while path.exists():  # a job id reused by hand: never overwrite earlier evidence
            path, copy = folder / f"{job_id}.{copy}.json", copy + 1
        path.write_text(json.dumps(kept, indent=1, sort_keys=True))

    def _genuine(self, job_id: str, party: str, receipts: Sequence[Any]) -> list[Any]:
        """The receipts of one party that can serve as evidence (see :meth:`_write_receipts`);
        the others go to the `rejected` folder beside them, with why."""
        genuine, rejected = [], []
        for item in receipts:
            defect = self._receipt_defect(job_id, party, item)
            if defect is None:
                genuine.append(item)
            else:
                log.warning("a receipt from '%s' for job '%s' is not kept: %s", party,
                            printable(job_id, 80), defect)
                rejected.append({"receipt": item, "why": defect})
        if rejected:
            self._quarantine(job_id, party, rejected)
        return genuine

    def _receipt_defect(self, job_id: str, party: str, item: Any) -> str | None:
        """As :func:`receipt_defect`; a receipt that fails with the key held here is tried
        once more with the key file read again (the node may have rotated its key)."""
        defect = receipt_defect(party, item, self.ledger_keys.get(party), job_id)
        if defect is not None and party in self.ledger_keys:
            fresh = ledger_keys_in(self.config.ledger_keys, [party]).get(party)
            if fresh is not None:
                self.ledger_keys[party] = fresh
                defect = receipt_defect(party, item, fresh, job_id)
        return defect

    def _quarantine(self, job_id: str, party: str, rejected: list[dict[str, Any]]) -> None:
        """Keep what was not evidence for an investigation, where no verifier reads it as
        evidence (not a .json file)."""
        folder = self.config.receipts_dir / "rejected"
        folder.mkdir(parents=True, exist_ok=True)
        path, copy = folder / f"{job_id}.{party}.rejected", 1
        while path.exists():
            path, copy = folder / f"{job_id}.{party}.{copy}.rejected", copy + 1
        path.write_text(json.dumps(rejected, indent=1, sort_keys=True, default=str))

    def _on_every_party(self, clients: Mapping[str, NodeClient], job_id: str,
                        call: Callable[[NodeClient], T], what: str,
                        cancel: Mapping[str, NodeClient] | None = None) -> dict[str, T]:
        """Call every party of `clients` at once, giving each one's answer; if any call
        fails, cancel the job at the others (of `cancel`, default `clients`) and raise."""
        futures = {p: self._pool.submit(call, c) for p, c in clients.items()}
        errors: dict[str, InvisibleError] = {}
        answers: dict[str, T] = {}
        for party, future in futures.items():
            try:
                answers[party] = future.result()
            except InvisibleError as exc:
                errors[party] = exc
        if errors:
            receipts = self._cancel(job_id, [p for p in (cancel or clients) if p not in errors],
                                    f"{what} at {', '.join(errors)}")
            receipts.update({p: list(e.receipts) for p, e in errors.items()})
            self._write_receipts(job_id, receipts)
            raise next(iter(errors.values()))
        return answers

    def _cancel(self, job_id: str, parties: Sequence[str], reason: str,
                ) -> dict[str, list[dict[str, Any]]]:
        """Cancel the job at `parties`; the receipts of its end there (best effort)."""
        def cancel(party: str) -> list[dict[str, Any]]:
            client = self.clients[party]
            client.cancel_job(job_id, reason, 5.0)
            return client.job_status(job_id, wait_s=2.0).receipts

        futures = {p: self._pool.submit(cancel, p) for p in parties}
        receipts = {}
        for party, future in futures.items():
            try:
                receipts[party] = future.result()
            except InvisibleError:
                pass  # a party that cannot be told fails at its own deadline
        return receipts

    @staticmethod
    def _await_and_fetch(client: NodeClient, job_id: str, deadline: float,
                         progress: Callable[[int, int], None] | None = None,
                         ) -> tuple[JobStatus, dict[str, np.ndarray]]:
        """Wait for one party's status; if it finished, fetch the arrays it releases.

        Fetching before the other parties finish saves a round trip; it reveals
        nothing early, since `run` hands arrays to the caller only when every
        party finished, and discards them otherwise.
        """
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PartyUnavailableError(client.peer_id, f"job '{job_id}' did not finish in time")
            status = client.job_status(job_id, wait_s=min(_POLL_S, remaining))
            if status.state is not JobState.RUNNING:
                break
            steps = status.output.get("progress")
            if progress is not None and isinstance(steps, list) and len(steps) == 2:
                progress(int(steps[0]), int(steps[1]))
        if status.state is not JobState.FINISHED:
            return status, {}
        return status, {name: client.fetch_output(job_id, name) for name in status.released}

    # -- the named helpers a notebook calls; each is `run` with the kind's parameters --------

    def secure_sum(self, inputs: Columns, bound: float, *, group_by: str | None = None,
                   categories: int | None = None, elementwise: bool = False,
                   length: int | None = None, fractional_bits: int = 16,
                   max_rows: int = DEFAULT_MAX_ROWS, recipient: str | None = None,
                   rho: float | None = None, job_id: str | None = None,
                   timeout_s: float | None = None) -> SecureSumResult:
        """Sum a column across the parties named in `inputs` ({party: (dataset, column)}):
        its total, per-category totals (`group_by`, `categories`), or the column itself
        as a vector (`elementwise`, `length`); with `rho`, noised for differential privacy
        (each owner charges rho to its budgets). See :mod:`invisible.kinds.secure_sum`."""
        return self.run(SecureSumParams(
            inputs=input_refs(inputs), bound=float(bound), max_rows=max_rows,
            fractional_bits=fractional_bits, group_by=group_by, categories=categories,
            elementwise=elementwise, length=length, recipient=recipient, rho=rho),
            job_id=job_id, timeout_s=timeout_s)

    def paillier_sum(self, inputs: Columns, bound: float, *, key_holder: str,
                     aggregator: str | None = None, group_by: str | None = None,
                     categories: int | None = None, elementwise: bool = False,
                     length: int | None = None, fractional_bits: int = 16,
                     max_rows: int = DEFAULT_MAX_ROWS, key_bits: int = 2048,
                     rho: float | None = None, job_id: str | None = None,
                     timeout_s: float | None = None) -> SecureSumResult:
        """The sums of :meth:`secure_sum` by Paillier encryption; the key holder decrypts
        the total for the requester (with `rho`, noised as :meth:`secure_sum`'s). See
        :mod:`invisible.kinds.paillier_sum`."""
        return self.run(PaillierSumParams(
            inputs=input_refs(inputs), bound=float(bound), max_rows=max_rows,
            fractional_bits=fractional_bits, group_by=group_by, categories=categories,
            elementwise=elementwise, length=length, key_holder=key_holder,
            aggregator=aggregator, key_bits=key_bits, rho=rho), job_id=job_id,
            timeout_s=timeout_s)

    def statistics(self, inputs: Columns, bound: float, *, outputs: Sequence[str], dealer: str,
                   max_rows: int = 100_000, recipient: str | None = None, ddof: int = 0,
                   rho: float | None = None, job_id: str | None = None,
                   timeout_s: float | None = None) -> StatisticsResult:
        """Declared statistics (count, sum, mean, variance, std; variance with divisor
        count - ddof) of a column split by rows, on shares with a dealer node; reads like a
        dict. With `rho`, computed from noised moments (differential privacy). See
        :mod:`invisible.kinds.statistics`."""
        return self.run(StatisticsParams(
            inputs=input_refs(inputs), bound=float(bound), max_rows=max_rows,
            outputs=tuple(outputs), dealer=dealer, recipient=recipient, ddof=ddof, rho=rho),
            job_id=job_id, timeout_s=timeout_s)

    def psi(self, inputs: Columns, *, alignment: str | None = None, release_size: bool = False,
            job_id: str | None = None, timeout_s: float | None = None) -> PsiResult:
        """The ids the parties have in common, by private set intersection: each keeps its
        own rows as alignment `alignment` (default: the job id); the requester learns the
        size only with `release_size`. See :mod:`invisible.kinds.psi`."""
        return self.run(PsiParams(inputs=input_refs(inputs), alignment=alignment,
                                  release_size=release_size),
                        job_id=job_id, timeout_s=timeout_s)

    def vertical_statistics(self, alignment: str | PsiResult,
                            columns: Mapping[str, Sequence[str]], *,
                            outputs: Sequence[str] = ("mean", "std", "correlation"),
                            bounds: Mapping[str, Mapping[str, float] | Sequence[float]]
                            | None = None, dealer: str, recipient: str | None = None,
                            ddof: int = 0, rho: float | None = None, job_id: str | None = None,
                            timeout_s: float | None = None) -> VerticalStatisticsResult:
        """Statistics of columns different parties hold about the rows of `alignment` (a
        name, or the result of :meth:`psi`): `columns` per party; `bounds` per party, one
        public bound on |value| per column (as a list, or by column name), needed for mean,
        variance, std and covariance, and with `rho` (noised for differential privacy,
        each owner charging rho to its budgets). Read the result as DataFrames:
        ``summary()``, ``correlation``, ``covariance``. See
        :mod:`invisible.kinds.vertical_statistics`."""
        name = alignment.alignment if isinstance(alignment, PsiResult) else str(alignment)
        bounds = bounds or {}
        inputs = {}
        for party, names in columns.items():
            given = bounds.get(party)
            if isinstance(given, Mapping):
                missing = [c for c in names if c not in given]
                if missing:
                    raise ConfigError(f"vertical_statistics: no bound for column(s) "
                                      f"{', '.join(map(repr, missing))} of party '{party}'")
                given = [given[c] for c in names]
            inputs[party] = ColumnsRef(ALIGNMENT_PREFIX + name.removeprefix(ALIGNMENT_PREFIX),
                                       tuple(names),
                                       None if given is None else tuple(map(float, given)))
        return self.run(VerticalStatisticsParams(
            inputs=inputs, outputs=tuple(outputs), dealer=dealer, recipient=recipient,
            ddof=ddof, rho=rho), job_id=job_id, timeout_s=timeout_s)

    def connectivity(self, parties: Sequence[str] | None = None) -> ConnectivityResult:
        """Every pair of parties (default: all) proves mTLS reachability and key agreement."""
        return self.run(ConnectivityParams(), parties)

    def bandwidth(self, sender: str, receiver: str, elements: int) -> BandwidthResult:
        """Diagnostic: the raw rate of the channel from `sender` to `receiver`."""
        return self.run(BandwidthParams(sender=sender, receiver=receiver, elements=elements))


def _root_cause(failed: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """The party whose failure caused the others': one that failed on its own account, not
    because another party aborted the job or the requester cancelled it."""
    for party, (error, aborted_by) in failed.items():
        if not aborted_by:
            return party, error
    party, (error, _) = next(iter(failed.items()))
    return party, error
