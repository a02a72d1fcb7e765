"""An approver's side: list the jobs held for its decision, approve, reject or withdraw.

An approver's file has the shape of a coordinator's, with ``[approver]``::

    [approver]
    id = "dpo"
    federation = "federation.toml"   # or [parties] with addresses

    [tls]
    ca = "pki/ca.pem"
    cert = "pki/dpo.pem"             # a certificate in the approver role
    key = "pki/dpo.key"

Each decision is signed with the certificate's key over what the node
showed (see :mod:`invisible.metering.approvals`); before signing, the
approver recomputes the digest of the job spec it was shown, so it signs
for the job it read and nothing else. The node answers with its signed
ledger entry recording the decision, which the approver keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from invisible.coordinator.config import CoordinatorConfig, load_coordinator_config
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import HeldJob, JobState, spec_digest
from invisible.metering.approvals import Decision
from invisible.net.client import NodeClient
from invisible.net.pki import Role
from invisible.net.tls import TlsMaterial

log = logging.getLogger(__name__)


class Approver:
    """One approver identity and the nodes it decides for."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.tls = TlsMaterial.load(config.tls, expected_role=Role.APPROVER)
        if self.tls.identity.party_id != config.coordinator_id:
            raise ConfigError(f"{config.source}: approver id is '{config.coordinator_id}' but "
                              f"certificate {config.tls.cert} was issued to "
                              f"'{self.tls.identity.party_id}'")
        key = serialization.load_pem_private_key(self.tls.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{config.tls.key} is not an EC key")
        self._key = key
        self.clients = {p: NodeClient(self.tls, p, address, timeout_s=config.limits.rpc_timeout_s)
                        for p, address in config.parties.items()}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.clients)),
                                        thread_name_prefix="invisible-approver")

    @classmethod
    def from_config(cls, path: Path | str) -> Approver:
        return cls(load_coordinator_config(path, section="approver"))

    @property
    def approver_id(self) -> str:
        return self.config.coordinator_id

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for client in self.clients.values():
            client.close()

    def __enter__(self) -> Approver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, party: str) -> NodeClient:
        if party not in self.clients:
            raise ConfigError(f"unknown party '{party}'; {self.config.source} names "
                              f"{', '.join(sorted(self.clients))}")
        return self.clients[party]

    def pending(self, parties: Sequence[str] | None = None) -> dict[str, list[HeldJob]]:
        """The jobs held for this approver's decision, by party (every party of its file by
        default; one that cannot be asked raises, naming it)."""
        chosen = list(parties or self.clients)
        futures = {p: self._pool.submit(self._client(p).pending_approvals) for p in chosen}
        return {party: future.result() for party, future in futures.items()}

    def approve(self, party: str, job_id: str, reason: str = "",
                hours: float | None = None) -> dict[str, Any]:
        """Consent to a held job at `party` for `hours` (at most, and by default, the
        consent_hours of the rules that name this approver); the node's signed ledger entry
        recording it."""
        return self._decide(party, job_id, "approve", reason, hours)

    def reject(self, party: str, job_id: str, reason: str) -> dict[str, Any]:
        return self._decide(party, job_id, "reject", reason)

    def withdraw(self, party: str, job_id: str, reason: str = "") -> dict[str, Any]:
        """Take back an approval before the job runs."""
        return self._decide(party, job_id, "withdraw", reason)

    def _decide(self, party: str, job_id: str, what: str, reason: str,
                hours: float | None = None) -> dict[str, Any]:
        client = self._client(party)
        job = next((j for j in client.pending_approvals() if j.spec.job_id == job_id), None)
        if job is None:
            raise ConfigError(f"no job '{job_id}' waits for a decision of "
                              f"'{self.approver_id}' on party '{party}'")
        if spec_digest(job.spec) != job.spec_digest:  # sign only for the spec read
            raise ProtocolError(f"party '{party}' showed job '{job_id}' with a spec digest "
                                "that is not its spec's")
        if hours is None:
            hours = min((float(r["consent_hours"]) for r in job.rules
                         if self.approver_id in r.get("approvers", ())), default=24.0)
        decision = Decision.make(party, job_id, job.spec_digest, what, reason, hours)
        entry, state = client.decide(decision.payload().decode(), decision.sign(self._key))
        log.info("job %s on %s: %s (%s)", job_id, party, what, state.value)
        return {**entry, "state": _STATE_WORDS[state]}


_STATE_WORDS = {JobState.AWAITING_APPROVAL: "awaiting approval", JobState.RUNNING: "approved",
                JobState.FAILED: "rejected: cancelled", JobState.FINISHED: "finished"}


def describe(held: dict[str, list[HeldJob]]) -> list[dict[str, Any]]:
    """Held jobs as rows for a table or JSON."""
    return [{"party": party, "job_id": job.spec.job_id, "kind": job.spec.kind,
             "requester": job.requester, "dataset": job.dataset, "columns": list(job.columns),
             "recipient": job.recipient or job.requester, "rho": job.rho,
             "parties": list(job.spec.parties), "params": job.spec.params,
             "deadline": job.deadline, "spec_digest": job.spec_digest, "rules": job.rules}
            for party, jobs in held.items() for job in jobs]
