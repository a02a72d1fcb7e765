"""The domain side of the Jobs service: what a coordinator asks a node, and what it gets.

The gRPC servicer and client translate between these types and the protos in
``protos/invisible/v1/jobs.proto``; nodes and coordinators only see these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from invisible.errors import ProtocolError
from invisible.net import wire
from invisible.net.pki import Identity
from invisible.v1 import exchange_pb2, jobs_pb2


class JobState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


_STATE_TO_PROTO = {
    JobState.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobState.FINISHED: jobs_pb2.JOB_STATE_FINISHED,
    JobState.FAILED: jobs_pb2.JOB_STATE_FAILED,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    kind: str
    parties: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def to_proto(self) -> jobs_pb2.JobSpec:
        return jobs_pb2.JobSpec(
            job_id=self.job_id, kind=self.kind, parties=list(self.parties),
            params_json=json.dumps(self.params, sort_keys=True),
        )

    @classmethod
    def from_proto(cls, spec: jobs_pb2.JobSpec) -> JobSpec:
        try:
            params = json.loads(spec.params_json) if spec.params_json else {}
        except json.JSONDecodeError:
            raise ProtocolError("job parameters are not valid JSON") from None
        if not isinstance(params, dict):
            raise ProtocolError("job parameters must be a JSON object")
        return cls(spec.job_id, spec.kind, tuple(spec.parties), params)


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

    def to_proto(self) -> jobs_pb2.JobRecord:
        return jobs_pb2.JobRecord(**self.__dict__)

    @classmethod
    def from_proto(cls, record: jobs_pb2.JobRecord) -> JobRecord:
        return cls(
            rows_used=record.rows_used, bytes_sent=record.bytes_sent,
            bytes_received=record.bytes_received, messages_sent=record.messages_sent,
            messages_received=record.messages_received, values_opened=record.values_opened,
            duration_s=record.duration_s, bytes_released=record.bytes_released,
        )


@dataclass
class JobStatus:
    """A job's state on one node; `arrays` are held by the node, fetched by name."""

    job_id: str
    state: JobState
    error: str = ""
    record: JobRecord = field(default_factory=JobRecord)
    output: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    array_headers: dict[str, exchange_pb2.MessageHeader] = field(default_factory=dict, repr=False)
    #: Signed ledger entries (as JSON objects) the node gives the requester as receipts.
    receipts: list[dict[str, Any]] = field(default_factory=list)
    #: For a failed job: who aborted or cancelled it, if that is why it failed here.
    aborted_by: str = ""

    def to_proto(self) -> jobs_pb2.JobStatusResponse:
        return jobs_pb2.JobStatusResponse(
            job_id=self.job_id, state=_STATE_TO_PROTO[self.state], error=self.error,
            record=self.record.to_proto(),
            output_json=json.dumps(self.output, sort_keys=True) if self.output else "",
            output_arrays=[wire.make_header(self.job_id, name, a) for name, a in self.arrays.items()]
            + [h for name, h in self.array_headers.items() if name not in self.arrays],
            receipts_json=[json.dumps(r, sort_keys=True) for r in self.receipts],
            aborted_by=self.aborted_by,
        )

    @classmethod
    def from_proto(cls, response: jobs_pb2.JobStatusResponse) -> JobStatus:
        state = _STATE_FROM_PROTO.get(response.state)
        if state is None:
            raise ProtocolError("job status has an unknown state")
        headers = {}
        for header in response.output_arrays:
            wire.check_header(header)
            headers[header.step] = header
        try:
            output = json.loads(response.output_json) if response.output_json else {}
            receipts = [json.loads(r) for r in response.receipts_json]
        except json.JSONDecodeError:
            raise ProtocolError("job output or receipt is not valid JSON") from None
        return cls(
            job_id=response.job_id, state=state, error=response.error,
            record=JobRecord.from_proto(response.record), output=output, array_headers=headers,
            receipts=receipts, aborted_by=response.aborted_by,
        )


class JobService(Protocol):
    """What a node offers the Jobs servicer."""

    def start_job(self, spec: JobSpec, requester: Identity) -> None: ...

    def run_job(self, job_id: str, requester: Identity) -> None: ...

    def job_status(self, job_id: str, requester: Identity, wait_s: float) -> JobStatus: ...

    def job_output(self, job_id: str, name: str, requester: Identity) -> np.ndarray: ...

    def cancel_job(self, job_id: str, requester: Identity, reason: str) -> None: ...
