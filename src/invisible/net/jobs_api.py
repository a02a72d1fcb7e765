"""The Jobs service between a coordinator and a node: proto <-> domain conversion.

The domain types are plain (:mod:`invisible.jobspec`); the gRPC servicer and
client translate them to and from ``protos/invisible/v1/jobs.proto`` here,
so nodes, kinds and coordinators never see a protobuf message.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import numpy as np

from invisible.errors import ProtocolError
from invisible.jobspec import (
    ArrayInfo,
    HeldJob,
    JobRecord,
    JobSpec,
    JobState,
    JobStatus,
    Started,
)
from invisible.net import wire
from invisible.net.pki import Identity
from invisible.v1 import exchange_pb2, jobs_pb2

_STATE_TO_PROTO = {
    JobState.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobState.FINISHED: jobs_pb2.JOB_STATE_FINISHED,
    JobState.FAILED: jobs_pb2.JOB_STATE_FAILED,
    JobState.AWAITING_APPROVAL: jobs_pb2.JOB_STATE_AWAITING_APPROVAL,
}
_STATE_FROM_PROTO: dict[int, JobState] = {v: k for k, v in _STATE_TO_PROTO.items()}


def spec_to_proto(spec: JobSpec) -> jobs_pb2.JobSpec:
    return jobs_pb2.JobSpec(
        job_id=spec.job_id, kind=spec.kind, parties=list(spec.parties),
        params_json=json.dumps(spec.params, sort_keys=True), kind_version=spec.version,
    )


def spec_from_proto(spec: jobs_pb2.JobSpec) -> JobSpec:
    try:
        params = json.loads(spec.params_json) if spec.params_json else {}
    except json.JSONDecodeError:
        raise ProtocolError("job parameters are not valid JSON") from None
    if not isinstance(params, dict):
        raise ProtocolError("job parameters must be a JSON object")
    return JobSpec(spec.job_id, spec.kind, tuple(spec.parties), params, spec.kind_version or 1)


def _record_to_proto(record: JobRecord) -> jobs_pb2.JobRecord:
    return jobs_pb2.JobRecord(**record.__dict__)


def _record_from_proto(record: jobs_pb2.JobRecord) -> JobRecord:
    return JobRecord(
        rows_used=record.rows_used, bytes_sent=record.bytes_sent,
        bytes_received=record.bytes_received, messages_sent=record.messages_sent,
        messages_received=record.messages_received, values_opened=record.values_opened,
        duration_s=record.duration_s, bytes_released=record.bytes_released,
        rounds=record.rounds, tuples=record.tuples, ciphertext_ops=record.ciphertext_ops,
        cpu_s=record.cpu_s,
    )


def _array_header(job_id: str, name: str, info: ArrayInfo) -> exchange_pb2.MessageHeader:
    count = 1
    for dim in info.shape:
        count *= dim
    return exchange_pb2.MessageHeader(
        job_id=job_id, step=name, kind=exchange_pb2.PAYLOAD_KIND_ARRAY, dtype=info.dtype,
        shape=list(info.shape), total_bytes=count * np.dtype(info.dtype).itemsize,
    )


def status_to_proto(status: JobStatus) -> jobs_pb2.JobStatusResponse:
    return jobs_pb2.JobStatusResponse(
        job_id=status.job_id, state=_STATE_TO_PROTO[status.state], error=status.error,
        record=_record_to_proto(status.record),
        output_json=json.dumps(status.output, sort_keys=True) if status.output else "",
        output_arrays=[_array_header(status.job_id, name, info)
                       for name, info in status.released.items()],
        receipts_json=[json.dumps(r, sort_keys=True) for r in status.receipts],
        aborted_by=status.aborted_by,
    )


def state_from_proto(value: int) -> JobState:
    state = _STATE_FROM_PROTO.get(value)
    if state is None:
        raise ProtocolError("job status has an unknown state")
    return state


def status_from_proto(response: jobs_pb2.JobStatusResponse) -> JobStatus:
    state = state_from_proto(response.state)
    infos = {}
    for header in response.output_arrays:
        wire.check_header(header)
        if header.kind != exchange_pb2.PAYLOAD_KIND_ARRAY:
            raise ProtocolError("a job output must be an array")
        infos[header.step] = ArrayInfo(header.dtype, tuple(header.shape))
    try:
        output = json.loads(response.output_json) if response.output_json else {}
        receipts = [json.loads(r) for r in response.receipts_json]
    except json.JSONDecodeError:
        raise ProtocolError("job output or receipt is not valid JSON") from None
    return JobStatus(
        job_id=response.job_id, state=state, error=response.error,
        record=_record_from_proto(response.record), output=output, array_infos=infos,
        receipts=receipts, aborted_by=response.aborted_by,
    )


class JobService(Protocol):
    """What a node offers the Jobs servicer."""

    def start_job(self, spec: JobSpec, requester: Identity) -> Started: ...

    def run_job(self, job_id: str, requester: Identity, check_bounds: bool = False) -> None: ...

    def job_status(self, job_id: str, requester: Identity, wait_s: float) -> JobStatus: ...

    def job_output(self, job_id: str, name: str, requester: Identity) -> np.ndarray: ...

    def cancel_job(self, job_id: str, requester: Identity, reason: str) -> None: ...


class ApprovalService(Protocol):
    """What a node offers the Approvals servicer (see invisible.node.approvals)."""

    def pending(self, approver: Identity) -> list[HeldJob]: ...

    def decide(self, approver: Identity, certificate_pem: bytes, decision_json: str,
               signature: bytes) -> tuple[Any, str]: ...
