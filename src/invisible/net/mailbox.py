"""Where a party's incoming protocol messages wait until a protocol asks for them.

Keyed by (job id, step, sender), and bound to jobs: a message is accepted
only for a job this node has prepared (its channel is open here), only
from one of that job's parties, and at most once per (job, step, sender).
Anything else is refused to its sender; a second message on the same step
is an error for the job (it is aborted), never silently dropped or
preferred to the first. What one peer may have waiting here is bounded in
bytes and in messages, and a job's messages go when its channel closes.
A delivery is admitted from its header alone (:meth:`Mailbox.reserve`),
atomically, before its body is read: a message for no job, from no party
of it, a duplicate or one over the caps costs the node no memory. Both transports
deliver into a mailbox; the gRPC servicer does so only after the sender's
certificate was verified.

A job can be aborted (one of its parties or the coordinator gave up on
it): every receiver waiting for that job wakes at once with a
:class:`ProtocolError` naming who aborted, instead of waiting for its deadline.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass

from invisible.errors import (
    JobAbortedError,
    MessageTooLargeError,
    PartyUnavailableError,
    ProtocolError,
)
from invisible.protocols.channel import Payload, payload_nbytes

DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
#: Reserved step: a message on it aborts the job at the receiver. Protocol steps never start with "!".
ABORT_STEP = "!abort"
_REMEMBERED_JOBS = 4096
DEFAULT_MAX_WAITING_MESSAGES = 4096


@dataclass(frozen=True)
class Reservation:
    """A message admitted from its header: its step is taken and its bytes counted."""

    job_id: str
    step: str
    sender: str
    nbytes: int


class _Abort:
    """Put into a job's queues to wake its receivers."""


_ABORT = _Abort()


class Mailbox:
    """Thread-safe queues of received messages, one per (job, step, sender)."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 max_waiting_bytes: int | None = None,
                 max_waiting_messages: int = DEFAULT_MAX_WAITING_MESSAGES) -> None:
        if max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        #: What one sender may have waiting here, over all its jobs.
        self.max_waiting_bytes = max_waiting_bytes or 2 * max_message_bytes
        #: And in messages: an empty message still costs a queue here.
        self.max_waiting_messages = max_waiting_messages
        self._queues: dict[tuple[str, str, str], queue.Queue[Payload | _Abort]] = {}
        self._open: dict[str, frozenset[str]] = {}
        self._delivered: dict[str, set[tuple[str, str]]] = {}
        #: What each sender has waiting here: bytes, and messages.
        self._waiting: dict[str, int] = {}
        self._messages: dict[str, int] = {}
        #: The bytes counted for each reserved message until it is taken or dropped.
        self._held: dict[tuple[str, str, str], int] = {}
        #: Jobs whose channel closed here, with their parties (a late message is dropped).
        self._closed: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._aborted: OrderedDict[str, str] = OrderedDict()
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def check_size(self, sender: str, nbytes: int) -> None:
        """Refuse a message over the per-message cap (what the sender may ever send)."""
        if nbytes > self.max_message_bytes:
            raise MessageTooLargeError(
                f"message from party '{sender}' declares {nbytes} bytes, "
                f"over the cap of {self.max_message_bytes} bytes"
            )

    def open_job(self, job_id: str, parties: frozenset[str] | set[str] | tuple[str, ...]) -> None:
        """Accept messages for a prepared job from its parties (its channel opens)."""
        with self._lock:
            self._open[job_id] = frozenset(parties)
            self._delivered.setdefault(job_id, set())

    def _aborted_error(self, job_id: str) -> JobAbortedError:
        by = self._aborted[job_id]
        reason = self._reasons.get(job_id)
        return JobAbortedError(f"job '{job_id}' was aborted by '{by}'"
                               + (f": {reason}" if reason else ""), by)

    def reserve(self, job_id: str, step: str, sender: str, nbytes: int) -> Reservation | None:
        """Admit a message from its header alone, before a byte of its body is read.

        In one step under the lock: the job is prepared here, the sender is
        one of its parties, the step is new for that sender, and the bytes
        and message count fit what the sender may have waiting. The step is
        then taken and the bytes counted; :meth:`fill` delivers the body and
        :meth:`cancel` gives both back if the body never arrives whole.
        None: the job has ended here, the message is to be dropped.
        """
        self.check_size(sender, nbytes)
        with self._lock:
            parties = self._open.get(job_id, self._closed.get(job_id))
            if parties is None:
                raise ProtocolError(f"no job {job_id!r} is prepared on this node; a message "
                                    f"from party '{sender}' for it is refused")
            if sender not in parties:
                raise ProtocolError(f"party '{sender}' is not a party of job {job_id!r}")
            if job_id in self._closed or job_id in self._aborted:
                return None  # a late message of an ended job: its body is never read
            delivered = self._delivered[job_id]
            duplicate = (step, sender) in delivered
            if not duplicate:
                self._check_room(sender, nbytes)
                delivered.add((step, sender))
                self._waiting[sender] = self._waiting.get(sender, 0) + nbytes
                self._messages[sender] = self._messages.get(sender, 0) + 1
                self._held[(job_id, step, sender)] = nbytes
                self._queues.setdefault((job_id, step, sender), queue.Queue())
        if duplicate:
            self.abort_job(job_id, sender, f"party '{sender}' sent step {step!r} twice")
            raise ProtocolError(f"party '{sender}' sent step {step!r} of job {job_id!r} twice; "
                                "the job is aborted")
        return Reservation(job_id, step, sender, nbytes)

    def _check_room(self, sender: str, nbytes: int) -> None:
        """Refuse what would pass the sender's waiting caps (call under the lock)."""
        if self._waiting.get(sender, 0) + nbytes > self.max_waiting_bytes:
            raise MessageTooLargeError(
                f"party '{sender}' already has messages waiting here; with {nbytes} more bytes "
                f"they would pass the cap of {self.max_waiting_bytes} bytes")
        if self._messages.get(sender, 0) >= self.max_waiting_messages:
            raise MessageTooLargeError(
                f"party '{sender}' already has {self.max_waiting_messages} messages waiting "
                "here, the cap")

    def fill(self, reservation: Reservation, payload: Payload) -> None:
        """Deliver the body of a reserved message (dropped if its job ended meanwhile)."""
        if payload_nbytes(payload) != reservation.nbytes:
            self.cancel(reservation)
            raise ProtocolError("a message's body does not match the size its header declared")
        key = (reservation.job_id, reservation.step, reservation.sender)
        with self._lock:
            if key in self._held:  # else the job closed or aborted: its counts are gone
                self._queues[key].put(payload)

    def cancel(self, reservation: Reservation) -> None:
        """The body of a reserved message did not arrive whole: the step may be sent again."""
        key = (reservation.job_id, reservation.step, reservation.sender)
        with self._lock:
            if key in self._held:
                self._release(reservation.sender, self._held.pop(key))
                self._delivered[reservation.job_id].discard((reservation.step, reservation.sender))

    def put(self, job_id: str, step: str, sender: str, payload: Payload) -> None:
        """Reserve and deliver a message already whole in memory (the in-process channel)."""
        reservation = self.reserve(job_id, step, sender, payload_nbytes(payload))
        if reservation is not None:
            self.fill(reservation, payload)

    def get(self, job_id: str, step: str, sender: str, timeout_s: float) -> Payload:
        key = (job_id, step, sender)
        with self._lock:
            if job_id in self._aborted:
                raise self._aborted_error(job_id)
            found = self._queues.get(key)
            if found is None:
                found = self._queues[key] = queue.Queue()
        try:
            item = found.get(timeout=timeout_s)
        except queue.Empty:
            raise PartyUnavailableError(
                sender, f"no message for job '{job_id}' step '{step}' within {timeout_s:g} s"
            ) from None
        if isinstance(item, _Abort):
            found.put(item)  # wake any other receiver of the same queue too
            with self._lock:
                raise self._aborted_error(job_id)
        with self._lock:
            self._queues.pop(key, None)  # one message per (job, step, sender): done with it
            if key in self._held:
                self._release(sender, self._held.pop(key))
        return item

    def _release(self, sender: str, nbytes: int) -> None:
        """One message of `sender` no longer waits here (call under the lock)."""
        left = self._waiting.get(sender, 0) - nbytes
        if left > 0:
            self._waiting[sender] = left
        else:
            self._waiting.pop(sender, None)
        count = self._messages.get(sender, 0) - 1
        if count > 0:
            self._messages[sender] = count
        else:
            self._messages.pop(sender, None)

    def _drop_queues(self, job_id: str) -> list[queue.Queue[Payload | _Abort]]:
        """Remove a job's queues, giving back what they held; the queues removed."""
        for key in [k for k in self._held if k[0] == job_id]:
            self._release(key[2], self._held.pop(key))
        dropped = []
        for key in [k for k in self._queues if k[0] == job_id]:
            found = self._queues.pop(key)
            while not found.empty():
                found.get_nowait()
            dropped.append(found)
        return dropped

    def may_abort(self, job_id: str, sender: str) -> bool:
        """Only a party of a job prepared here may abort it."""
        with self._lock:
            parties = self._open.get(job_id)
        return parties is not None and sender in parties

    def abort_job(self, job_id: str, by: str, reason: str = "") -> None:
        """Wake every receiver of the job with an error naming `by`; drop its messages."""
        with self._lock:
            if job_id in self._aborted:
                return
            self._aborted[job_id] = by
            if reason:
                self._reasons[job_id] = reason
            while len(self._aborted) > _REMEMBERED_JOBS:
                self._reasons.pop(self._aborted.popitem(last=False)[0], None)
            for found in self._drop_queues(job_id):
                found.put(_ABORT)

    def close_job(self, job_id: str) -> None:
        """Drop every queued message of a job and ignore later ones."""
        with self._lock:
            self._drop_queues(job_id)
            # a second close keeps the parties: a late message of theirs is still dropped
            parties = self._open.pop(job_id, self._closed.get(job_id, frozenset()))
            self._delivered.pop(job_id, None)
            self._closed[job_id] = parties
            while len(self._closed) > _REMEMBERED_JOBS:
                self._closed.popitem(last=False)

    def pending_jobs(self) -> set[str]:
        with self._lock:
            return {key[0] for key, q in self._queues.items() if not q.empty()}
