"""Plain job types that every layer may use: spec, state, record, status, gathered result.

A coordinator sends a :class:`JobSpec` to every party; each party's node
answers with a :class:`JobStatus` (its :class:`JobRecord` and the outputs it
releases); the coordinator gathers them into a :class:`JobResult`, which the
job's kind decodes into its typed result. The conversion to and from the
protos lives in :mod:`invisible.net.jobs_api`; nothing here knows gRPC.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class JobState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    #: Prepared, held by a party's policy until its approvers consent.
    AWAITING_APPROVAL = "awaiting-approval"


@dataclass(frozen=True)
class HeldJob:
    """A job held at a node for its approvers, as an approver is shown it: the request,
    never the data (see invisible.metering.approvals)."""

    spec: JobSpec
    spec_digest: str
    requester: str
    dataset: str
    columns: tuple[str, ...]
    #: Who receives its outputs ("": the requester).
    recipient: str
    #: Its declared privacy cost (0: its releases carry no noise).
    rho: float
    deadline: str
    #: Per rule: approvers, required, approved (in force), rejected.
    rules: list[dict[str, Any]]


@dataclass(frozen=True)
class Started:
    """A party's answer to a job's Start."""

    #: Its policy refuses values beyond the job's bound: the job must run with the check.
    checks_bounds: bool = False
    #: Its policy holds the job for approval until this time (ISO, UTC); "" if not held.
    approval_deadline: str = ""


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    kind: str
    parties: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    #: The version of the kind's parameters and protocol the coordinator expects.
    version: int = 1


def spec_digest(spec: JobSpec) -> str:
    """SHA-256 of the job's canonical form: kind, version, parties in order, parameters."""
    canonical = json.dumps([spec.job_id, spec.kind, spec.version, list(spec.parties),
                            spec.params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class JobRecord:
    """What one party's node reports about its part in one job."""

    rows_used: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    values_opened: int = 0
    duration_s: float = 0.0
    bytes_released: int = 0
    #: Protocol steps in which this node sent: each waits on the one before (latency).
    rounds: int = 0
    #: Ring elements of correlated randomness (Beaver triples and the like) received from
    #: the federation's dealers.
    tuples: int = 0
    #: Paillier ciphertexts this node encrypted, multiplied in, re-randomised or decrypted.
    ciphertext_ops: int = 0
    #: CPU seconds of the thread that ran the job here (work it handed to process pools,
    #: such as Paillier decryption, is not in it).
    cpu_s: float = 0.0


@dataclass(frozen=True)
class ArrayInfo:
    """The dtype and shape of an output array a node releases (fetched by name)."""

    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, array: np.ndarray) -> ArrayInfo:
        return cls(array.dtype.str, tuple(int(d) for d in array.shape))


@dataclass
class JobStatus:
    """A job's state on one node; `arrays` are held by the node, fetched by name."""

    job_id: str
    state: JobState
    error: str = ""
    record: JobRecord = field(default_factory=JobRecord)
    output: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: Arrays released and not held here (a status read from the wire, or dropped outputs).
    array_infos: dict[str, ArrayInfo] = field(default_factory=dict, repr=False)
    #: Signed ledger entries (as JSON objects) the node gives the requester as receipts.
    receipts: list[dict[str, Any]] = field(default_factory=list)
    #: For a failed job: who aborted or cancelled it, if that is why it failed here.
    aborted_by: str = ""

    @classmethod
    def failed(cls, job_id: str, error: str, *, record: JobRecord | None = None,
               receipts: list[dict[str, Any]] | None = None, aborted_by: str = "") -> JobStatus:
        """The status of a job that failed or was cancelled here: it releases nothing."""
        return cls(job_id, JobState.FAILED, error=error, record=record or JobRecord(),
                   receipts=list(receipts or []), aborted_by=aborted_by)

    @property
    def released(self) -> dict[str, ArrayInfo]:
        """Every array this status releases, by name (held here or not)."""
        return {**self.array_infos, **{n: ArrayInfo.of(a) for n, a in self.arrays.items()}}


@dataclass
class JobResult:
    """What a coordinator gathered from every party of a finished job, before decoding."""

    job_id: str
    kind: str
    parties: tuple[str, ...]
    statuses: dict[str, JobStatus] = field(default_factory=dict)
    #: The requester's identity (the coordinator that ran the job).
    requester: str = ""
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
