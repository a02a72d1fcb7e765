"""The coordinator's view of a federation: its parties, and jobs run across them.

A :class:`Federation` is made from a coordinator config (its certificate,
the CA, and the parties' addresses). It starts a job on every party node,
waits for all of them, and returns the outputs only if every party finished:
one failure fails the whole job and nothing is released.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from invisible.coordinator.config import CoordinatorConfig, load_coordinator_config
from invisible.errors import (
    ConfigError,
    InvisibleError,
    JobAbortedError,
    PartyUnavailableError,
    ProtocolError,
)
from invisible.net.client import HealthInfo, NodeClient
from invisible.net.jobs_api import JobRecord, JobSpec, JobState, JobStatus
from invisible.net.pki import Role
from invisible.net.tls import TlsMaterial

if TYPE_CHECKING:
    from invisible.coordinator.secure_sum import SecureSumResult

_POLL_S = 2.0


@dataclass
class JobResult:
    job_id: str
    kind: str
    parties: tuple[str, ...]
    statuses: dict[str, JobStatus] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def records(self) -> dict[str, JobRecord]:
        return {p: s.record for p, s in self.statuses.items()}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {p: s.output for p, s in self.statuses.items()}

    @property
    def receipts(self) -> dict[str, list[dict[str, Any]]]:
        """Each party's signed ledger entries for this job (verify with its ledger key)."""
        return {p: s.receipts for p, s in self.statuses.items()}


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

    def run(
        self,
        kind: str,
        params: dict[str, Any] | None = None,
        parties: Sequence[str] | None = None,
        *,
        job_id: str | None = None,
        timeout_s: float | None = None,
    ) -> JobResult:
        """Run one job on the given parties (default: all); all finish, or nothing is released.

        Steps: prepare the job on every party (each checks its policy and
        reserves quota; a refusal anywhere cancels it on the parties that had
        accepted, before any data is touched); run it on every party; wait
        for every party and fetch the arrays each releases to this requester;
        if any failed, raise naming the party where it started. Each party's
        signed receipt is kept in the result (and in the receipts folder).
        """
        chosen = tuple(parties or self.parties)
        clients = {p: self._client(p) for p in chosen}
        spec = JobSpec(job_id or f"{kind}-{uuid.uuid4().hex[:12]}", kind, chosen, params or {})
        started = time.perf_counter()
        self._on_every_party(clients, spec.job_id, lambda c: c.start_job(spec), "refused")
        self._on_every_party(clients, spec.job_id, lambda c: c.run_job(spec.job_id), "failed")
        deadline = time.monotonic() + (timeout_s or self.config.limits.job_timeout_s)
        waits = {p: self._pool.submit(self._await_and_fetch, c, spec.job_id, deadline)
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
            self._cancel(spec.job_id, [p for p in chosen if p not in failed], "failed elsewhere")
            party, error = _root_cause(failed)
            raise ProtocolError(
                f"job '{spec.job_id}' failed on party '{party}': {error}; no result was released"
            )
        result = JobResult(spec.job_id, kind, chosen, statuses, arrays,
                           time.perf_counter() - started)
        self._keep_receipts(result)
        return result

    def _keep_receipts(self, result: JobResult) -> None:
        folder = self.config.receipts_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{result.job_id}.json"
        path.write_text(json.dumps(result.receipts, indent=1, sort_keys=True))

    def _on_every_party(self, clients: Mapping[str, NodeClient], job_id: str,
                        call: Callable[[NodeClient], None], what: str) -> None:
        """Call every party at once; if any call fails, cancel the job at the others and raise."""
        futures = {p: self._pool.submit(call, c) for p, c in clients.items()}
        errors: dict[str, InvisibleError] = {}
        for party, future in futures.items():
            try:
                future.result()
            except InvisibleError as exc:
                errors[party] = exc
        if errors:
            self._cancel(job_id, [p for p in clients if p not in errors],
                         f"{what} at {', '.join(errors)}")
            raise next(iter(errors.values()))

    def _cancel(self, job_id: str, parties: Sequence[str], reason: str) -> None:
        futures = [self._pool.submit(self.clients[p].cancel_job, job_id, reason, 5.0)
                   for p in parties]
        for future in futures:
            try:
                future.result()
            except InvisibleError:
                pass  # best effort: a party that cannot be told fails at its own deadline

    @staticmethod
    def _await_and_fetch(client: NodeClient, job_id: str, deadline: float,
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
        if status.state is not JobState.FINISHED:
            return status, {}
        return status, {name: client.fetch_output(job_id, name) for name in status.array_headers}

    def paillier_sum(self, inputs: Mapping[str, tuple[str, str]], bound: float, *,
                     key_holder: str, **options: Any) -> SecureSumResult:
        """Sum across parties by Paillier encryption; see
        :func:`invisible.coordinator.paillier_sum.run_paillier_sum`."""
        from invisible.coordinator.paillier_sum import run_paillier_sum

        return run_paillier_sum(self, inputs, bound, key_holder=key_holder, **options)

    def statistics(self, inputs: Mapping[str, tuple[str, str]], bound: float, *,
                   outputs: Sequence[str], dealer: str, **options: Any) -> dict[str, float]:
        """Declared statistics (count, sum, mean, variance, std) of a column split by rows,
        computed on shares with a dealer; see :mod:`invisible.protocols.mpc.statistics`."""
        from invisible.coordinator.statistics import run_statistics

        values, _ = run_statistics(self, inputs, bound, outputs=outputs, dealer=dealer, **options)
        return values

    def secure_sum(self, inputs: Mapping[str, tuple[str, str]], bound: float,
                   **options: Any) -> SecureSumResult:
        """Sum a column (or per-category totals, or vectors) across parties; see
        :func:`invisible.coordinator.secure_sum.run_secure_sum`."""
        from invisible.coordinator.secure_sum import run_secure_sum

        return run_secure_sum(self, inputs, bound, **options)


def _root_cause(failed: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """The party whose failure caused the others': one that failed on its own account, not
    because another party aborted the job or the requester cancelled it."""
    for party, (error, aborted_by) in failed.items():
        if not aborted_by:
            return party, error
    party, (error, _) = next(iter(failed.items()))
    return party, error
