"""A party's channel for one job over mutual-TLS gRPC.

Sending streams the message to the peer node's PeerExchange service (see
:mod:`invisible.net.client`); receiving takes it from this node's own
mailbox, where the node's servicer put it after verifying the sender's
certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Executor

from invisible.errors import InvisibleError
from invisible.net.client import NodeClient
from invisible.net.mailbox import Mailbox
from invisible.protocols.channel import Channel, Payload

log = logging.getLogger(__name__)


class GrpcChannel(Channel):
    def __init__(
        self,
        party_id: str,
        job_id: str,
        parties: Sequence[str],
        *,
        mailbox: Mailbox,
        clients: Mapping[str, NodeClient],
        timeout_s: float,
        pool: Executor | None = None,
    ) -> None:
        super().__init__(party_id, job_id, parties)
        self._pool = pool
        self._mailbox = mailbox
        self._clients = clients
        self.timeout_s = timeout_s
        mailbox.open_job(job_id, self.parties)  # only this job's parties may deliver to it

    def _send(self, to: str, step: str, payload: Payload, handover: bool = False) -> None:
        self._clients[to].deliver(self.job_id, step, payload, timeout_s=self.timeout_s,
                                  interrupted=lambda: self.interrupted_by)

    def _send_many(self, step: str, payloads: Mapping[str, Payload], handover: bool) -> None:
        if len(payloads) < 2 or self._pool is None:
            super()._send_many(step, payloads, handover)
            return
        futures = [self._pool.submit(self._send, to, step, p) for to, p in payloads.items()]
        for future in futures:
            future.result()  # the first failure is raised, naming its party

    def _recv(self, sender: str, step: str) -> Payload:
        return self._mailbox.get(self.job_id, step, sender, self.timeout_s)

    def close(self) -> None:
        self._mailbox.close_job(self.job_id)

    def abort(self, spare: Collection[str] = ()) -> None:
        peers = [p for p in self.peers if p not in spare]
        if self._pool is None or len(peers) < 2:
            for peer in peers:
                self._tell_aborted(peer)
            return
        try:
            futures = [self._pool.submit(self._tell_aborted, p) for p in peers]
        except RuntimeError:  # the node is stopping and its pool is shut: one by one
            futures = []
            for peer in peers:
                self._tell_aborted(peer)
        for future in futures:
            future.result()  # all at once: at most one notice's deadline in all

    def _tell_aborted(self, peer: str) -> None:
        try:
            self._clients[peer].abort_peer_job(self.job_id, timeout_s=min(2.0, self.timeout_s))
        except InvisibleError as exc:
            log.info("could not tell party '%s' that job %s was aborted: %s",
                     peer, self.job_id, exc)

    def interrupt(self, by: str) -> None:
        self.interrupted_by = by
        self._mailbox.abort_job(self.job_id, by)
