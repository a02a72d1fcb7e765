"""Channels between parties in one process: for tests and simulation.

Each party has a :class:`~invisible.net.mailbox.Mailbox`; sending copies the
payload into the recipient's mailbox, so a sender that later mutates its
array cannot change what was delivered, unless the sender hands the array
over (`handover=True`): then the recipient gets it read-only, without a copy. Same semantics and checks as the
gRPC channel, without sockets.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from invisible.net.mailbox import DEFAULT_MAX_MESSAGE_BYTES, Mailbox
from invisible.protocols.channel import Channel, Payload, payload_nbytes

DEFAULT_TIMEOUT_S = 30.0


class InProcessHub:
    """The mailboxes of a set of parties living in one process."""

    def __init__(
        self,
        parties: Sequence[str],
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.parties = tuple(parties)
        self.timeout_s = timeout_s
        self.mailboxes = {p: Mailbox(max_message_bytes) for p in self.parties}

    def channel(self, party_id: str, job_id: str, parties: Sequence[str] | None = None) -> Channel:
        return InProcessChannel(self, party_id, job_id, parties or self.parties)

    def channels(self, job_id: str) -> dict[str, Channel]:
        """One channel per party for a job over all of the hub's parties."""
        return {p: self.channel(p, job_id) for p in self.parties}


class InProcessChannel(Channel):
    def __init__(
        self, hub: InProcessHub, party_id: str, job_id: str, parties: Sequence[str]
    ) -> None:
        super().__init__(party_id, job_id, parties)
        self._hub = hub
        hub.mailboxes[party_id].open_job(job_id, self.parties)

    def _send(self, to: str, step: str, payload: Payload, handover: bool) -> None:
        mailbox = self._hub.mailboxes[to]
        mailbox.check_size(self.party_id, payload_nbytes(payload))
        if isinstance(payload, np.ndarray) and not handover:
            payload = payload.copy()
        mailbox.put(self.job_id, step, self.party_id, payload)

    def _recv(self, sender: str, step: str) -> Payload:
        mailbox = self._hub.mailboxes[self.party_id]
        return mailbox.get(self.job_id, step, sender, self._hub.timeout_s)

    def close(self) -> None:
        self._hub.mailboxes[self.party_id].close_job(self.job_id)

    def abort(self, spare: Collection[str] = ()) -> None:
        for peer in self.peers:
            if peer not in spare and self._hub.mailboxes[peer].may_abort(self.job_id, self.party_id):
                self._hub.mailboxes[peer].abort_job(self.job_id, self.party_id)

    def interrupt(self, by: str) -> None:
        self.interrupted_by = by
        self._hub.mailboxes[self.party_id].abort_job(self.job_id, by)
