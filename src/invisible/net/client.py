"""Client of one node, pinned to the identity it must present.

Every call has a deadline. A node that is not up yet is retried until the
deadline (nothing was delivered, so retrying cannot duplicate a message); a
failed TLS handshake is final at once. Failures become domain errors that
name the party.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np

from invisible.errors import (
    JobAbortedError,
    MessageTooLargeError,
    PartyUnavailableError,
    ProtocolError,
)
from invisible.jobspec import HeldJob, JobSpec, JobState, JobStatus, Started
from invisible.net import wire
from invisible.net.errors_grpc import domain_error, is_transient_failure
from invisible.net.jobs_api import (
    spec_from_proto,
    spec_to_proto,
    state_from_proto,
    status_from_proto,
)
from invisible.net.mailbox import ABORT_STEP, DEFAULT_MAX_MESSAGE_BYTES
from invisible.net.pki import Role, target_name
from invisible.net.tls import TlsMaterial
from invisible.protocols.channel import Payload
from invisible.v1 import (
    exchange_pb2,
    health_pb2,
    health_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)

DEFAULT_TIMEOUT_S = 30.0
_GRPC_MESSAGE_LIMIT = 64 << 20
_RETRY_PAUSE_S = 0.05
T = TypeVar("T")


def channel_options(peer_id: str, role: Role) -> list[tuple[str, object]]:
    return [
        ("grpc.ssl_target_name_override", target_name(peer_id, role)),
        ("grpc.default_authority", target_name(peer_id, role)),
        ("grpc.max_send_message_length", _GRPC_MESSAGE_LIMIT),
        ("grpc.max_receive_message_length", _GRPC_MESSAGE_LIMIT),
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 500),
    ]


@dataclass(frozen=True)
class HealthInfo:
    serving: bool
    party_id: str
    role: str
    version: str
    datasets: tuple[str, ...]
    certificate_days_left: float = 0.0
    ca_days_left: float = 0.0
    #: The CA's revocation list the node enforces (0: none) and how many it revokes.
    revocation_list_number: int = 0
    revoked_certificates: int = 0
    #: Each dataset's columns ("name:type") the caller's policy lets it use (a requester).
    usable_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)


class NodeClient:
    """Calls to one node; thread-safe, one HTTP/2 connection reused for all calls."""

    def __init__(
        self,
        tls: TlsMaterial,
        peer_id: str,
        address: str,
        *,
        role: Role = Role.PARTY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
        max_output_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.peer_id = peer_id
        self.address = address
        self.role = role
        self._closed = False
        self.timeout_s = timeout_s
        self.chunk_bytes = chunk_bytes
        self.max_output_bytes = max_output_bytes
        self._channel = grpc.secure_channel(
            address, tls.channel_credentials(), options=channel_options(peer_id, role)
        )
        # Deliver with frames serialised by wire.encode_raw_frames (chunks copied once).
        self._deliver = self._channel.stream_unary(
            wire.DELIVER_METHOD, request_serializer=None,
            response_deserializer=exchange_pb2.DeliverAck.FromString)
        self._fetch_output = self._channel.unary_stream(
            wire.FETCH_OUTPUT_METHOD,
            request_serializer=jobs_pb2.FetchOutputRequest.SerializeToString,
            response_deserializer=None)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobsStub(self._channel)
        self._approvals = jobs_pb2_grpc.ApprovalsStub(self._channel)

    @property
    def known(self) -> bool:
        """Whether the peer's address is known: port 0 stands for one not published yet
        (a local federation's nodes bind port 0 and publish the port they got)."""
        return not self.address.endswith(":0")

    def close(self) -> None:
        self._closed = True
        self._channel.close()

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, attempt: Callable[[float], T], timeout_s: float | None,
              interrupted: Callable[[], str | None] | None = None) -> T:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        if not self.known:
            raise PartyUnavailableError(self.peer_id, f"{what}: its address is not known yet "
                                                      f"({self.address})")
        while True:
            stopped_by = interrupted() if interrupted else None
            if stopped_by:
                raise JobAbortedError(f"{what} to party '{self.peer_id}' stopped: the job was "
                                      f"aborted by '{stopped_by}'", stopped_by)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PartyUnavailableError(
                    self.peer_id, f"{what}: not reachable at {self.address} before the deadline"
                )
            try:
                return attempt(remaining)
            except ValueError:
                if not self._closed:
                    raise
                # closed under a call: the node stopped, or a reload moved the peer
                raise PartyUnavailableError(self.peer_id, f"{what}: the connection to "
                                            f"{self.address} was closed") from None
            except grpc.RpcError as error:
                if is_transient_failure(error) and deadline - time.monotonic() > _RETRY_PAUSE_S:
                    time.sleep(_RETRY_PAUSE_S)
                    continue
                raise domain_error(error, self.peer_id, what) from None

    def deliver(self, job_id: str, step: str, payload: Payload,
                timeout_s: float | None = None,
                interrupted: Callable[[], str | None] | None = None) -> None:
        """Stream one message to the node's mailbox; returns once the node holds all of it.

        A node that is not reachable yet is retried until the deadline, unless
        `interrupted` names who aborted the job in the meantime.
        """
        self._call(
            f"delivery of step '{step}'",
            lambda remaining: self._deliver(
                wire.encode_raw_frames(job_id, step, payload, self.chunk_bytes),
                timeout=remaining,
            ),
            timeout_s,
            interrupted,
        )

    def health(self, timeout_s: float | None = None) -> HealthInfo:
        response = self._call(
            "health check",
            lambda remaining: self._health.Check(health_pb2.HealthCheckRequest(), timeout=remaining),
            timeout_s,
        )
        return HealthInfo(
            serving=response.status == health_pb2.HealthCheckResponse.STATUS_SERVING,
            party_id=response.party_id, role=response.role, version=response.version,
            datasets=tuple(response.datasets),
            certificate_days_left=response.certificate_days_left,
            ca_days_left=response.ca_days_left,
            revocation_list_number=response.revocation_list_number,
            revoked_certificates=response.revoked_certificates,
            usable_columns={d.dataset: tuple(d.columns) for d in response.usable_columns},
        )

    def start_job(self, spec: JobSpec, timeout_s: float | None = None) -> Started:
        """Prepare the job there: whether that party's policy needs the bound check, and
        until when it holds the job for approval (if it does)."""
        response = self._call(
            f"start of job '{spec.job_id}'",
            lambda remaining: self._jobs.Start(
                jobs_pb2.StartJobRequest(spec=spec_to_proto(spec)), timeout=remaining
            ),
            timeout_s,
        )
        return Started(bool(response.checks_bounds), response.approval_deadline)

    def run_job(self, job_id: str, timeout_s: float | None = None,
                check_bounds: bool = False) -> None:
        self._call(
            f"run of job '{job_id}'",
            lambda remaining: self._jobs.Run(
                jobs_pb2.RunJobRequest(job_id=job_id, check_bounds=check_bounds),
                timeout=remaining),
            timeout_s,
        )

    def job_status(self, job_id: str, wait_s: float = 0.0,
                   timeout_s: float | None = None) -> JobStatus:
        """The job's state; waits on the node up to wait_s for it to finish."""
        wait_ms = max(0, int(wait_s * 1000))
        response = self._call(
            f"status of job '{job_id}'",
            lambda remaining: self._jobs.Status(
                jobs_pb2.JobStatusRequest(job_id=job_id, wait_ms=wait_ms),
                timeout=max(remaining, wait_s + 5.0),
            ),
            timeout_s if timeout_s is not None else self.timeout_s + wait_s,
        )
        return status_from_proto(response)

    def fetch_output(self, job_id: str, name: str, timeout_s: float | None = None) -> np.ndarray:
        """Stream one output array of a finished job; refused over the client's cap."""

        def attempt(remaining: float) -> np.ndarray:
            def check(nbytes: int) -> None:
                if nbytes > self.max_output_bytes:
                    raise MessageTooLargeError(
                        f"output '{name}' of party '{self.peer_id}' declares {nbytes} bytes, "
                        f"over the cap of {self.max_output_bytes} bytes"
                    )

            try:
                header, payload = wire.decode_raw_message(self._fetch_output(
                    jobs_pb2.FetchOutputRequest(job_id=job_id, name=name), timeout=remaining),
                    check)
            except MessageTooLargeError:
                raise
            except ProtocolError as exc:
                raise ProtocolError(f"output '{name}' of party '{self.peer_id}': {exc}") from None
            if not isinstance(payload, np.ndarray) or header.step != name:
                raise ProtocolError(f"party '{self.peer_id}' sent the wrong output for '{name}'")
            return payload

        return self._call(f"output '{name}' of job '{job_id}'", attempt, timeout_s)

    def cancel_job(self, job_id: str, reason: str, timeout_s: float | None = None) -> None:
        self._call(
            f"cancel of job '{job_id}'",
            lambda remaining: self._jobs.Cancel(
                jobs_pb2.CancelJobRequest(job_id=job_id, reason=reason), timeout=remaining
            ),
            timeout_s,
        )

    def pending_approvals(self, timeout_s: float | None = None) -> list[HeldJob]:
        """The jobs held there that wait for this (approver) identity's decision."""
        response = self._call(
            "list of held jobs",
            lambda remaining: self._approvals.Pending(jobs_pb2.PendingApprovalsRequest(),
                                                      timeout=remaining),
            timeout_s)
        try:
            return [HeldJob(
                spec_from_proto(job.spec), job.spec_digest, job.requester, job.dataset,
                tuple(job.columns), job.recipient, job.rho, job.deadline,
                json.loads(job.rules_json)) for job in response.jobs]
        except json.JSONDecodeError:
            raise ProtocolError(f"party '{self.peer_id}' sent held jobs that are not valid "
                                "JSON") from None

    def decide(self, decision_json: str, signature: bytes,
               timeout_s: float | None = None) -> tuple[dict[str, Any], JobState]:
        """Send a signed decision; the node's ledger entry recording it, and the job's
        state after it."""
        response = self._call(
            "decision",
            lambda remaining: self._approvals.Decide(
                jobs_pb2.DecideRequest(decision_json=decision_json, signature=signature),
                timeout=remaining),
            timeout_s)
        try:
            entry = json.loads(response.receipt_json)
        except json.JSONDecodeError:
            raise ProtocolError(f"party '{self.peer_id}' sent a receipt that is not valid "
                                "JSON") from None
        return entry, state_from_proto(response.state)

    def abort_peer_job(self, job_id: str, timeout_s: float | None = None) -> None:
        """Tell a peer node that this party gave up on a job, so it fails at once."""
        self.deliver(job_id, ABORT_STEP, b"", timeout_s=timeout_s)
