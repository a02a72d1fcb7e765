"""The transport every protocol is written against.

A :class:`Channel` belongs to one party and one job. It sends numpy arrays or
byte strings to another party of the job, tagged with a protocol step, and
receives from a named party and step. Messages from one sender for one
(job, step) arrive in the order they were sent; different jobs never mix.

Implementations: :class:`invisible.net.inprocess.InProcessChannel` (queues in
one process, for tests and simulation) and
:class:`invisible.net.grpc_channel.GrpcChannel` (mutual-TLS gRPC between
nodes). Protocol code never knows which one it holds.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from invisible.errors import ProtocolError

Payload = np.ndarray | bytes

#: dtypes a message may carry; object and structured dtypes are never accepted.
ALLOWED_DTYPES = frozenset(
    np.dtype(name).str
    for name in (
        "bool", "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64", "float32", "float64",
    )
)


def payload_nbytes(payload: Payload) -> int:
    return payload.nbytes if isinstance(payload, np.ndarray) else len(payload)


def check_payload(payload: object) -> Payload:
    """Accept bytes or a numeric array of an allowed dtype, as a C-contiguous array."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, np.ndarray):
        array = payload.astype(payload.dtype.newbyteorder("<"), copy=False)
        if array.dtype.str not in ALLOWED_DTYPES:
            raise ProtocolError(f"arrays of dtype {payload.dtype} cannot be sent")
        # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
        return array if array.flags.c_contiguous else array.copy(order="C")
    raise ProtocolError(f"a message must be a numpy array or bytes, not {type(payload).__name__}")


def _read_only(message: Payload) -> Payload:
    if isinstance(message, np.ndarray) and message.flags.writeable:
        message = message.view()
        message.flags.writeable = False
    return message


@dataclass
class ChannelStats:
    """What one party's channel moved during one job (payload bytes, not framing)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    #: Protocol steps in which this party sent (a round: every step waits on the last).
    rounds: int = 0
    #: Payload bytes received, by sender.
    received_from: dict[str, int] = field(default_factory=dict)


class Channel(ABC):
    """One party's endpoint for one job."""

    def __init__(self, party_id: str, job_id: str, parties: Sequence[str]) -> None:
        if party_id not in parties:
            raise ProtocolError(f"party '{party_id}' is not among the job's parties")
        if len(set(parties)) != len(parties):
            raise ProtocolError("a job's party list names a party twice")
        self.party_id = party_id
        self.job_id = job_id
        self.parties: tuple[str, ...] = tuple(parties)
        self.stats = ChannelStats()
        self._steps_sent: set[str] = set()
        self._stats_lock = threading.Lock()
        #: Who interrupted the job (the coordinator or a peer), once someone has.
        self.interrupted_by: str | None = None
        #: A digest of the job as this party was given it (kind, version, parties in order,
        #: parameters), bound into every pairwise seed: parties given different versions of
        #: one job derive unrelated masks, so a requester gains nothing by telling them apart.
        self.binding = ""

    @property
    def peers(self) -> tuple[str, ...]:
        """The other parties of the job, in job order."""
        return tuple(p for p in self.parties if p != self.party_id)

    def _check_peer(self, party: str) -> None:
        if party not in self.parties or party == self.party_id:
            raise ProtocolError(f"unknown peer '{party}' for job '{self.job_id}'")

    def send(self, to: str, step: str, payload: Payload, *, handover: bool = False) -> None:
        """Send one message to party `to` for this job's `step`; returns once delivered.

        `handover`: the caller gives the array away and never writes to it again,
        so a transport in the same process may deliver it without a copy; the
        receiver then gets it read-only. Without it, what was delivered can never
        change, whatever the caller does with its array afterwards.
        """
        self._check_peer(to)
        message = check_payload(payload)
        self._send(to, step, _read_only(message) if handover else message, handover)
        with self._stats_lock:
            self.stats.bytes_sent += payload_nbytes(message)
            self.stats.messages_sent += 1
            self._count_round(step)

    def send_to_each(self, step: str, payloads: Mapping[str, Payload], *,
                     handover: bool = False) -> None:
        """Send one message to each named peer; transports may send them concurrently.

        `handover` as for :meth:`send`; one array may then go to several peers.
        """
        checked = {}
        for to, payload in payloads.items():
            self._check_peer(to)
            message = check_payload(payload)
            checked[to] = _read_only(message) if handover else message
        self._send_many(step, checked, handover)
        with self._stats_lock:
            self.stats.bytes_sent += sum(payload_nbytes(m) for m in checked.values())
            self.stats.messages_sent += len(checked)
            self._count_round(step)

    def _count_round(self, step: str) -> None:
        """Count `step` once, however many messages it sends (call under the stats lock)."""
        if step not in self._steps_sent:
            self._steps_sent.add(step)
            self.stats.rounds += 1

    def _send_many(self, step: str, payloads: Mapping[str, Payload], handover: bool) -> None:
        for to, payload in payloads.items():
            self._send(to, step, payload, handover)

    def recv(self, sender: str, step: str) -> Payload:
        """The next message from `sender` for this job's `step` (blocks up to the deadline)."""
        self._check_peer(sender)
        message = self._recv(sender, step)
        with self._stats_lock:
            nbytes = payload_nbytes(message)
            self.stats.bytes_received += nbytes
            self.stats.messages_received += 1
            self.stats.received_from[sender] = self.stats.received_from.get(sender, 0) + nbytes
        return message

    def recv_array(
        self,
        sender: str,
        step: str,
        dtype: np.dtype | type | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> np.ndarray:
        """Receive an array and check it has the dtype and shape the protocol expects."""
        message = self.recv(sender, step)
        if not isinstance(message, np.ndarray):
            raise ProtocolError(f"party '{sender}' sent bytes where step '{step}' expects an array")
        if dtype is not None and message.dtype != np.dtype(dtype):
            raise ProtocolError(
                f"party '{sender}' sent dtype {message.dtype} at step '{step}', "
                f"expected {np.dtype(dtype)}"
            )
        if shape is not None and message.shape != tuple(shape):
            raise ProtocolError(
                f"party '{sender}' sent shape {message.shape} at step '{step}', expected {shape}"
            )
        return message

    def recv_bytes(self, sender: str, step: str, length: int | None = None) -> bytes:
        """Receive a byte string, optionally of an exact length."""
        message = self.recv(sender, step)
        if not isinstance(message, bytes):
            raise ProtocolError(f"party '{sender}' sent an array where step '{step}' expects bytes")
        if length is not None and len(message) != length:
            raise ProtocolError(
                f"party '{sender}' sent {len(message)} bytes at step '{step}', expected {length}"
            )
        return message

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the channel holds for this job (undelivered messages)."""

    @abstractmethod
    def abort(self, spare: Collection[str] = ()) -> None:
        """Tell every peer but those in `spare` (e.g. the party whose abort we follow,
        which knows) that this party gave up on the job (best effort, bounded in time)."""

    @abstractmethod
    def interrupt(self, by: str) -> None:
        """Wake this party's own receivers of the job with an error naming `by`."""

    @abstractmethod
    def _send(self, to: str, step: str, payload: Payload, handover: bool) -> None:
        """Deliver one checked message; `handover`: a read-only array the caller gave away."""

    @abstractmethod
    def _recv(self, sender: str, step: str) -> Payload: ...
