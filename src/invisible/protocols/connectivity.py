"""Connectivity check: every pair of parties proves it can talk and agree on keys.

Steps (every party i, in parallel):

1. Agree pairwise secrets with every peer (:func:`agree_pairwise_secrets`).
2. For each peer j, derive the seed for step ``confirm`` and send the tag
   HKDF(seed_ij, "i -> j") to j.
3. Receive j's tag and compare it, in constant time, with the tag expected
   from j. A mismatch means the two parties do not hold the same secret.

What each party learns: that each peer is reachable over mutual TLS and
holds the matching secret, and the round-trip time. Tags are one-way
functions of a fresh per-job secret and reveal nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from invisible.crypto.keyagree import SEED_BYTES, confirmation_tag, tags_equal
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel
from invisible.protocols.seeds import agree_pairwise_secrets


@dataclass(frozen=True)
class ConnectivityResult:
    party_id: str
    peers_confirmed: tuple[str, ...]
    seconds: float


def run_connectivity_check(channel: Channel) -> ConnectivityResult:
    started = time.perf_counter()
    secrets = agree_pairwise_secrets(channel, step="connectivity")
    me = channel.party_id
    channel.send_to_each("confirm", {
        peer: confirmation_tag(secrets.seed(peer, "confirm"), sender=me, receiver=peer)
        for peer in channel.peers
    })
    for peer in channel.peers:
        received = channel.recv_bytes(peer, "confirm", length=SEED_BYTES)
        expected = confirmation_tag(secrets.seed(peer, "confirm"), sender=peer, receiver=me)
        if not tags_equal(received, expected):
            raise ProtocolError(f"key confirmation with party '{peer}' failed")
    return ConnectivityResult(me, channel.peers, time.perf_counter() - started)
