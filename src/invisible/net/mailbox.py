"""Where a party's incoming protocol messages wait until a protocol asks for them.

Keyed by (job id, step, sender): messages from one sender for one step stay
in arrival order, and jobs never mix. Both transports deliver into a mailbox;
the gRPC servicer does so only after the sender's certificate was verified.

A job can be aborted (a peer or the coordinator gave up on it): every
receiver waiting for that job wakes at once with a :class:`ProtocolError`
naming who aborted, instead of waiting for its deadline.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict

from invisible.errors import (
    JobAbortedError,
    MessageTooLargeError,
    PartyUnavailableError,
)
from invisible.protocols.channel import Payload, payload_nbytes

DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
#: Reserved step: a message on it aborts the job at the receiver. Protocol steps never start with "!".
ABORT_STEP = "!abort"
_REMEMBERED_JOBS = 4096


class _Abort:
    """Put into a job's queues to wake its receivers."""


_ABORT = _Abort()


class Mailbox:
    """Thread-safe queues of received messages, one per (job, step, sender)."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self._queues: dict[tuple[str, str, str], queue.Queue[Payload | _Abort]] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._aborted: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def check_size(self, sender: str, nbytes: int) -> None:
        """Refuse a message over the cap, before anything is allocated for it."""
        if nbytes > self.max_message_bytes:
            raise MessageTooLargeError(
                f"message from party '{sender}' declares {nbytes} bytes, "
                f"over the cap of {self.max_message_bytes} bytes"
            )

    def _aborted_error(self, job_id: str) -> JobAbortedError:
        by = self._aborted[job_id]
        return JobAbortedError(f"job '{job_id}' was aborted by '{by}'", by)

    def put(self, job_id: str, step: str, sender: str, payload: Payload) -> None:
        self.check_size(sender, payload_nbytes(payload))
        key = (job_id, step, sender)
        with self._lock:
            if job_id in self._closed or job_id in self._aborted:
                return  # a late message for a finished job is dropped, never kept
            found = self._queues.get(key)
            if found is None:
                found = self._queues[key] = queue.Queue()
        found.put(payload)

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
        return item

    def abort_job(self, job_id: str, by: str) -> None:
        """Wake every receiver of the job with an error naming `by`; drop its messages."""
        with self._lock:
            if job_id in self._aborted:
                return
            self._aborted[job_id] = by
            while len(self._aborted) > _REMEMBERED_JOBS:
                self._aborted.popitem(last=False)
            for key in [k for k in self._queues if k[0] == job_id]:
                self._queues.pop(key).put(_ABORT)

    def close_job(self, job_id: str) -> None:
        """Drop every queued message of a job and ignore later ones."""
        with self._lock:
            for key in [k for k in self._queues if k[0] == job_id]:
                del self._queues[key]
            self._closed[job_id] = None
            while len(self._closed) > _REMEMBERED_JOBS:
                self._closed.popitem(last=False)

    def pending_jobs(self) -> set[str]:
        with self._lock:
            return {key[0] for key, q in self._queues.items() if not q.empty()}
