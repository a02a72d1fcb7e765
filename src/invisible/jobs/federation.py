"""The coordinator's view of a federation: its parties, and jobs run across them.

A :class:`Federation` is made from a coordinator config (its certificate,
the CA, and the parties' addresses). It starts a job on every party node,
waits for all of them, and returns the outputs only if every party finished:
one failure fails the whole job and nothing is released.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invisible.errors import ConfigError, InvisibleError, PartyUnavailableError, ProtocolError
from invisible.net.client import HealthInfo, NodeClient
from invisible.net.jobs_api import JobRecord, JobSpec, JobState, JobStatus
from invisible.net.pki import Role
from invisible.net.tls import TlsMaterial
from invisible.node.config import CoordinatorConfig, load_coordinator_config

_POLL_S = 2.0


@dataclass
class JobResult:
    job_id: str
    kind: str
    parties: tuple[str, ...]
    statuses: dict[str, JobStatus] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def records(self) -> dict[str, JobRecord]:
        return {p: s.record for p, s in self.statuses.items()}

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {p: s.output for p, s in self.statuses.items()}


class Federation:
    """Parties reachable from one coordinator identity."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.tls = TlsMaterial.load(config.tls, expected_role=Role.COORDINATOR)
        self.clients = {
            party: NodeClient(self.tls, party, address, timeout_s=config.limits.rpc_timeout_s)
            for party, address in config.parties.items()
        }
        self._pool = ThreadPoolExecutor(max_workers=max(4, len(self.clients)))

    @classmethod
    def from_config(cls, path: Path | str) -> Federation:
        return cls(load_coordinator_config(path))

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(self.clients)

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
        """Run one job on the given parties (default: all) and gather every party's status."""
        chosen = tuple(parties or self.parties)
        clients = {p: self._client(p) for p in chosen}
        spec = JobSpec(job_id or f"{kind}-{uuid.uuid4().hex[:12]}", kind, chosen, params or {})
        started = time.perf_counter()
        starts = {p: self._pool.submit(c.start_job, spec) for p, c in clients.items()}
        refusals = []
        for future in starts.values():
            try:
                future.result()
            except InvisibleError as exc:
                refusals.append(exc)
        if refusals:
            raise refusals[0]
        deadline = time.monotonic() + (timeout_s or self.config.limits.job_timeout_s)
        waits = {p: self._pool.submit(self._await, c, spec.job_id, deadline)
                 for p, c in clients.items()}
        statuses = {p: f.result() for p, f in waits.items()}
        failed = {p: s for p, s in statuses.items() if s.state is JobState.FAILED}
        if failed:
            party, status = next(iter(failed.items()))
            raise ProtocolError(
                f"job '{spec.job_id}' failed on party '{party}': {status.error}; "
                "no result was released"
            )
        return JobResult(spec.job_id, kind, chosen, statuses, time.perf_counter() - started)

    @staticmethod
    def _await(client: NodeClient, job_id: str, deadline: float) -> JobStatus:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PartyUnavailableError(client.peer_id, f"job '{job_id}' did not finish in time")
            status = client.job_status(job_id, wait_s=min(_POLL_S, remaining))
            if status.state is not JobState.RUNNING:
                return status
