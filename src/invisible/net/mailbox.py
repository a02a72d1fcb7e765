"""Where a party's incoming protocol messages wait until a protocol asks for them.

Keyed by (job id, step, sender): messages from one sender for one step stay
in arrival order, and jobs never mix. Both transports deliver into a mailbox;
the gRPC servicer does so only after the sender's certificate was verified.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict

from invisible.errors import MessageTooLargeError, PartyUnavailableError
from invisible.protocols.channel import Payload, payload_nbytes

DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
_CLOSED_JOBS_REMEMBERED = 4096


class Mailbox:
    """Thread-safe queues of received messages, one per (job, step, sender)."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self._queues: dict[tuple[str, str, str], queue.Queue[Payload]] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def check_size(self, sender: str, nbytes: int) -> None:
        """Refuse a message over the cap, before anything is allocated for it."""
        if nbytes > self.max_message_bytes:
            raise MessageTooLargeError(
                f"message from party '{sender}' declares {nbytes} bytes, "
                f"over the cap of {self.max_message_bytes} bytes"
            )

    def _queue(self, job_id: str, step: str, sender: str) -> queue.Queue[Payload]:
        key = (job_id, step, sender)
        with self._lock:
            found = self._queues.get(key)
            if found is None:
                found = self._queues[key] = queue.Queue()
            return found

    def is_closed(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._closed

    def put(self, job_id: str, step: str, sender: str, payload: Payload) -> None:
        self.check_size(sender, payload_nbytes(payload))
        if self.is_closed(job_id):
            return  # a late message for a finished job is dropped, never kept
        self._queue(job_id, step, sender).put(payload)

    def get(self, job_id: str, step: str, sender: str, timeout_s: float) -> Payload:
        try:
            return self._queue(job_id, step, sender).get(timeout=timeout_s)
        except queue.Empty:
            raise PartyUnavailableError(
                sender, f"no message for job '{job_id}' step '{step}' within {timeout_s:g} s"
            ) from None

    def close_job(self, job_id: str) -> None:
        """Drop every queued message of a job and ignore later ones."""
        with self._lock:
            for key in [k for k in self._queues if k[0] == job_id]:
                del self._queues[key]
            self._closed[job_id] = None
            while len(self._closed) > _CLOSED_JOBS_REMEMBERED:
                self._closed.popitem(last=False)

    def pending_jobs(self) -> set[str]:
        with self._lock:
            return {key[0] for key, q in self._queues.items() if not q.empty()}
