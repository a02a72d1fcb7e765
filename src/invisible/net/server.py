"""The gRPC servicers of a node: they translate protos to domain calls and back.

Every RPC first reads the caller's identity from its verified certificate
and checks its role: only parties deliver protocol messages, only
coordinators start jobs and read their status. Domain errors become gRPC
status codes (see :mod:`invisible.net.errors_grpc`); their messages name
what was wrong and never carry data.

A node stays available to every caller: deliveries in progress and status
long-polls are capped per identity and in all (:class:`Slots`), so the
worker pool keeps threads for Health and job control; a delivery that
stalls is cancelled at the node's RPC deadline. A delivery over its cap is
refused as busy (the sender retries within its deadline); a long-poll over
its cap is answered at once instead of waiting.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from typing import Any, TypeVar

import grpc

from invisible import __version__
from invisible.errors import InvisibleError, NodeBusyError, ProtocolError
from invisible.net import wire
from invisible.net.errors_grpc import RECEIPTS_METADATA, status_code_for
from invisible.net.jobs_api import (
    ApprovalService,
    JobService,
    spec_from_proto,
    spec_to_proto,
    status_to_proto,
)
from invisible.net.mailbox import ABORT_STEP, Mailbox
from invisible.net.pki import Identity, Role
from invisible.net.tls import (
    Revocations,
    TlsMaterial,
    caller_identity,
    days_left,
    renewable_server_credentials,
    require_role,
)
from invisible.v1 import (
    exchange_pb2,
    health_pb2,
    health_pb2_grpc,
    jobs_pb2,
)

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
_MAX_STATUS_WAIT_S = 60.0
#: The server's worker threads, and how many of them each kind of long call may hold.
WORKERS = 32
DELIVERIES_IN_ALL, DELIVERIES_PER_PEER = 20, 8
LONG_POLLS_IN_ALL, LONG_POLLS_PER_CALLER = 6, 2
#: gRPC clients refuse trailing metadata over 16 KiB (and the whole reply with it).
MAX_RECEIPTS_METADATA_BYTES = 12 << 10
#: A notice: a chain head (a few hundred bytes), or one with its proof (up to 1,000 entries).
MAX_NOTICE_BYTES = 2 << 20


class Watchdog:
    """Cancels calls still running past their time, from one thread checking twice a second
    (a timer thread per call would cost ~0.2 ms of CPU per delivery)."""

    def __init__(self, period_s: float = 0.5) -> None:
        self._due: dict[int, tuple[float, Callable[[], object]]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._period_s = period_s
        self._thread: threading.Thread | None = None

    def watch(self, timeout_s: float, cancel: Callable[[], object]) -> int:
        with self._lock:
            self._next += 1
            self._due[self._next] = (time.monotonic() + timeout_s, cancel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="rpc-watchdog",
                                                daemon=True)
                self._thread.start()
            return self._next

    def forget(self, ticket: int) -> None:
        with self._lock:
            self._due.pop(ticket, None)

    def _loop(self) -> None:
        while True:
            time.sleep(self._period_s)
            now = time.monotonic()
            with self._lock:
                late = [t for t, (due, _) in self._due.items() if due <= now]
                cancels = [self._due.pop(t)[1] for t in late]
            for cancel in cancels:
                cancel()


class Slots:
    """At most `in_all` calls at once, and `per_identity` for any one identity."""

    def __init__(self, in_all: int, per_identity: int) -> None:
        self.in_all, self.per_identity = in_all, per_identity
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, who: str) -> Iterator[bool]:
        """Yields whether a slot was free (never waits); gives it back on exit."""
        with self._lock:
            free = (sum(self._held.values()) < self.in_all
                    and self._held.get(who, 0) < self.per_identity)
            if free:
                self._held[who] = self._held.get(who, 0) + 1
        try:
            yield free
        finally:
            if free:
                with self._lock:
                    self._held[who] -= 1
                    if not self._held[who]:
                        del self._held[who]


class _Servicer:
    """A servicer whose calls are refused when made with a revoked certificate (the list
    is given by :func:`build_server`)."""

    revocations: Revocations | None = None


def _domain_errors_to_status(method: F) -> F:
    """Refuse a revoked caller, then run the method; a domain error becomes the call's
    status (and its receipt, if it was recorded)."""
    @functools.wraps(method)
    def wrapper(self: _Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if self.revocations is not None:
                self.revocations.check(context)
            return method(self, request, context)
        except InvisibleError as exc:
            log.info("%s refused: %s", method.__name__, exc)
            receipts = json.dumps(list(exc.receipts), sort_keys=True).encode()
            if len(receipts) > MAX_RECEIPTS_METADATA_BYTES:  # names in entries are capped
                log.warning("%s: the refusal's receipt is too large to send back (%d bytes)",
                            method.__name__, len(receipts))
            elif exc.receipts:  # the signed entry recording the refusal, for the requester
                context.set_trailing_metadata(((RECEIPTS_METADATA, receipts),))
            context.abort(status_code_for(exc), str(exc))

    return wrapper  # type: ignore[return-value]


class HealthServicer(health_pb2_grpc.HealthServicer, _Servicer):
    """`tls`: the node's material, or a callable giving what it serves now (renewed)."""

    def __init__(self, tls: TlsMaterial | Callable[[], TlsMaterial],
                 datasets: Callable[[], list[str]],
                 usable: Callable[[Identity], dict[str, list[str]]] | None = None) -> None:
        self._tls = tls if callable(tls) else (lambda: tls)
        self._identity = self._tls().identity
        self._datasets = datasets
        self._usable = usable
        self.stopping = False

    @_domain_errors_to_status
    def Check(self, request: health_pb2.HealthCheckRequest,
              context: grpc.ServicerContext) -> health_pb2.HealthCheckResponse:
        caller = caller_identity(context)
        usable = self._usable(caller) if self._usable is not None else {}
        tls = self._tls()  # one material per answer, even if a renewal lands meanwhile
        status = (health_pb2.HealthCheckResponse.STATUS_STOPPING if self.stopping
                  else health_pb2.HealthCheckResponse.STATUS_SERVING)
        return health_pb2.HealthCheckResponse(
            status=status, party_id=self._identity.party_id, role=self._identity.role.value,
            version=__version__, datasets=self._datasets(),
            certificate_days_left=days_left(tls.cert_pem),
            ca_days_left=days_left(tls.ca_pem),
            revocation_list_number=self.revocations.number if self.revocations else 0,
            revoked_certificates=len(self.revocations.serials) if self.revocations else 0,
            usable_columns=[health_pb2.DatasetColumns(dataset=d, columns=c)
                            for d, c in usable.items()],
        )


class ExchangeServicer(_Servicer):
    """PeerExchange.Deliver, taking serialised frames (see `wire.parse_raw_frame`)."""

    def __init__(self, mailbox: Mailbox, known_peers: Callable[[], set[str]],
                 notices: Mapping[str, Callable[[str, bytes], None]] | None = None,
                 stream_timeout_s: float = 30.0) -> None:
        self._mailbox = mailbox
        self._known_peers = known_peers
        self._slots = Slots(DELIVERIES_IN_ALL, DELIVERIES_PER_PEER)
        self._watchdog = Watchdog()
        #: A delivery still streaming after this long is cancelled (a stalled peer).
        self._stream_timeout_s = stream_timeout_s
        #: Handlers of one-way notices by reserved step (e.g. "!head"), called with the sender.
        self._notices = dict(notices or {})

    def add_to(self, server: grpc.Server) -> None:
        """Serve Deliver with frames left serialised: chunks are read without protobuf."""
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            wire.EXCHANGE_SERVICE, {"Deliver": grpc.stream_unary_rpc_method_handler(
                self.Deliver, request_deserializer=None,
                response_serializer=exchange_pb2.DeliverAck.SerializeToString)})])

    @_domain_errors_to_status
    def Deliver(self, request_iterator: Iterator[bytes],
                context: grpc.ServicerContext) -> exchange_pb2.DeliverAck:
        sender = require_role(context, Role.PARTY, Role.DEALER).party_id
        if sender not in self._known_peers():
            raise ProtocolError(f"party '{sender}' is not a configured peer of this node")
        with self._slots.hold(sender) as free:
            if not free:
                raise NodeBusyError(f"this node is busy: party '{sender}' has "
                                    f"{DELIVERIES_PER_PEER} deliveries under way, or all peers "
                                    f"{DELIVERIES_IN_ALL}")
            ticket = self._watchdog.watch(self._stream_timeout_s, context.cancel)
            try:
                return self._deliver(sender, request_iterator)
            finally:
                self._watchdog.forget(ticket)

    def _deliver(self, sender: str, request_iterator: Iterator[bytes]) -> exchange_pb2.DeliverAck:
        """Admit the message from its header, then read its body (see `Mailbox.reserve`)."""
        header, chunks = wire.read_raw_header(request_iterator)
        if header.step.startswith("!"):
            self._control(sender, header, chunks)
            return exchange_pb2.DeliverAck(received_bytes=header.total_bytes)
        reservation = self._mailbox.reserve(header.job_id, header.step, sender,
                                            header.total_bytes)
        if reservation is None:  # the job ended here: acknowledged, its body never read
            return exchange_pb2.DeliverAck(received_bytes=0)
        try:
            payload = wire.decode_payload(header, chunks)
        except BaseException:
            self._mailbox.cancel(reservation)
            raise
        self._mailbox.fill(reservation, payload)
        return exchange_pb2.DeliverAck(received_bytes=header.total_bytes)

    def _control(self, sender: str, header: exchange_pb2.MessageHeader,
                 chunks: Iterator[memoryview]) -> None:
        """An abort or a notice (a reserved step): small, and never kept in the mailbox."""
        if header.step == ABORT_STEP:
            if not self._mailbox.may_abort(header.job_id, sender):
                raise ProtocolError(f"party '{sender}' may not abort job {header.job_id!r}: it "
                                    "is not a party of a job prepared here")
            self._mailbox.abort_job(header.job_id, sender)
            return
        handle = self._notices.get(header.step)
        if handle is None:
            raise ProtocolError(f"unknown reserved step {header.step!r}")
        payload = wire.decode_payload(header, chunks, functools.partial(_check_notice, sender))
        if not isinstance(payload, bytes):
            raise ProtocolError(f"a notice on step {header.step!r} must be bytes")
        handle(sender, payload)


def _check_notice(sender: str, nbytes: int) -> None:
    if nbytes > MAX_NOTICE_BYTES:
        raise ProtocolError(f"a notice from party '{sender}' declares {nbytes} bytes, over "
                            f"the cap of {MAX_NOTICE_BYTES}")


class JobsServicer(_Servicer):
    """The Jobs service; FetchOutput streams serialised frames (see `wire.encode_raw_frames`)."""

    def __init__(self, jobs: JobService) -> None:
        self._jobs = jobs
        self._long_polls = Slots(LONG_POLLS_IN_ALL, LONG_POLLS_PER_CALLER)

    def add_to(self, server: grpc.Server) -> None:
        def unary(method: Callable[..., Any], request: Any, response: Any,
                  ) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=request.FromString,
                response_serializer=response.SerializeToString)

        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(wire.JOBS_SERVICE, {
            "Start": unary(self.Start, jobs_pb2.StartJobRequest, jobs_pb2.StartJobResponse),
            "Run": unary(self.Run, jobs_pb2.RunJobRequest, jobs_pb2.RunJobResponse),
            "Status": unary(self.Status, jobs_pb2.JobStatusRequest, jobs_pb2.JobStatusResponse),
            "FetchOutput": grpc.unary_stream_rpc_method_handler(
                self.FetchOutput, request_deserializer=jobs_pb2.FetchOutputRequest.FromString,
                response_serializer=None),
            "Cancel": unary(self.Cancel, jobs_pb2.CancelJobRequest, jobs_pb2.CancelJobResponse),
        })])

    @_domain_errors_to_status
    def Start(self, request: jobs_pb2.StartJobRequest,
              context: grpc.ServicerContext) -> jobs_pb2.StartJobResponse:
        requester = require_role(context, Role.COORDINATOR)
        spec = spec_from_proto(request.spec)
        started = self._jobs.start_job(spec, requester)
        return jobs_pb2.StartJobResponse(job_id=spec.job_id, checks_bounds=started.checks_bounds,
                                         approval_deadline=started.approval_deadline)

    @_domain_errors_to_status
    def Run(self, request: jobs_pb2.RunJobRequest,
            context: grpc.ServicerContext) -> jobs_pb2.RunJobResponse:
        requester = require_role(context, Role.COORDINATOR)
        self._jobs.run_job(request.job_id, requester, request.check_bounds)
        return jobs_pb2.RunJobResponse()

    @_domain_errors_to_status
    def Status(self, request: jobs_pb2.JobStatusRequest,
               context: grpc.ServicerContext) -> jobs_pb2.JobStatusResponse:
        requester = require_role(context, Role.COORDINATOR)
        wait_s = min(request.wait_ms / 1000.0, _MAX_STATUS_WAIT_S)
        remaining = context.time_remaining()
        if remaining is not None:
            wait_s = max(0.0, min(wait_s, remaining - 0.5))
        with self._long_polls.hold(requester.party_id) as free:  # over the cap: answer now
            status = self._jobs.job_status(request.job_id, requester, wait_s if free else 0.0)
        return status_to_proto(status)

    def FetchOutput(self, request: jobs_pb2.FetchOutputRequest,
                    context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            requester = require_role(context, Role.COORDINATOR)
            array = self._jobs.job_output(request.job_id, request.name, requester)
        except InvisibleError as exc:
            log.info("FetchOutput refused: %s", exc)
            context.abort(status_code_for(exc), str(exc))
        yield from wire.encode_raw_frames(request.job_id, request.name, array)

    @_domain_errors_to_status
    def Cancel(self, request: jobs_pb2.CancelJobRequest,
               context: grpc.ServicerContext) -> jobs_pb2.CancelJobResponse:
        requester = require_role(context, Role.COORDINATOR)
        self._jobs.cancel_job(request.job_id, requester, request.reason[:200])
        return jobs_pb2.CancelJobResponse()


class ApprovalsServicer(_Servicer):
    """The Approvals service: approver certificates only, each decision checked against the
    certificate the call is made with."""

    def __init__(self, desk: ApprovalService) -> None:
        self._desk = desk

    def add_to(self, server: grpc.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            wire.APPROVALS_SERVICE, {
                "Pending": grpc.unary_unary_rpc_method_handler(
                    self.Pending, request_deserializer=jobs_pb2.PendingApprovalsRequest.FromString,
                    response_serializer=jobs_pb2.PendingApprovalsResponse.SerializeToString),
                "Decide": grpc.unary_unary_rpc_method_handler(
                    self.Decide, request_deserializer=jobs_pb2.DecideRequest.FromString,
                    response_serializer=jobs_pb2.DecideResponse.SerializeToString),
            })])

    @_domain_errors_to_status
    def Pending(self, request: jobs_pb2.PendingApprovalsRequest,
                context: grpc.ServicerContext) -> jobs_pb2.PendingApprovalsResponse:
        approver = require_role(context, Role.APPROVER)
        return jobs_pb2.PendingApprovalsResponse(jobs=[jobs_pb2.HeldJob(
            spec=spec_to_proto(job.spec), spec_digest=job.spec_digest, requester=job.requester,
            dataset=job.dataset, columns=list(job.columns), recipient=job.recipient,
            rho=job.rho, deadline=job.deadline,
            rules_json=json.dumps(job.rules, sort_keys=True))
            for job in self._desk.pending(approver)])

    @_domain_errors_to_status
    def Decide(self, request: jobs_pb2.DecideRequest,
               context: grpc.ServicerContext) -> jobs_pb2.DecideResponse:
        approver = require_role(context, Role.APPROVER)
        [certificate] = context.auth_context()["x509_pem_cert"]  # require_role read it
        entry, state = self._desk.decide(approver, certificate, request.decision_json,
                                         request.signature)
        return jobs_pb2.DecideResponse(receipt_json=json.dumps(entry.to_json(), sort_keys=True), state={
            "awaiting": jobs_pb2.JOB_STATE_AWAITING_APPROVAL,
            "approved": jobs_pb2.JOB_STATE_RUNNING,
            "rejected": jobs_pb2.JOB_STATE_FAILED}[state])


def build_server(
    tls: TlsMaterial | Callable[[], TlsMaterial],
    address: str,
    *,
    health: HealthServicer,
    exchange: ExchangeServicer | None,
    jobs: JobsServicer | None,
    approvals: ApprovalsServicer | None = None,
    max_workers: int = WORKERS,
    revocations: Revocations | None = None,
) -> tuple[grpc.Server, int]:
    """A started-but-not-yet-serving server bound to `address`; returns (server, port).
    Every call to its services is refused if made with a certificate `revocations` lists.
    `tls` may be a callable: each new connection is then served the material it returns
    (a renewed certificate, without a restart)."""
    for servicer in (health, exchange, jobs, approvals):
        if servicer is not None:
            servicer.revocations = revocations
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="invisible-rpc"),
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.so_reuseport", 0),
        ],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if exchange is not None:
        exchange.add_to(server)
    if jobs is not None:
        jobs.add_to(server)
    if approvals is not None:
        approvals.add_to(server)
    try:
        credentials = (tls.server_credentials() if isinstance(tls, TlsMaterial)
                       else renewable_server_credentials(tls))
        port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise InvisibleError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise InvisibleError(f"cannot listen on {address} (address in use or not local)")
    return server, port
