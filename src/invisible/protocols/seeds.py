"""Agreeing on pairwise seeds for one job, over any channel.

Steps (every party i, in parallel):

1. Make a fresh ephemeral X25519 key pair for this job.
2. Send its 32-byte public key to every peer j (step ``<step>/x25519``).
3. Receive each peer's public key and compute the shared secret s_ij.

Afterwards :meth:`PairwiseSecrets.seed` derives, for any protocol step, the
seed HKDF(s_ij, job id, step, {i, j}) (see :mod:`invisible.crypto.keyagree`).

What each party learns: its peers' ephemeral public keys, which are random
and independent of any data. The channel is mutually authenticated, so a
public key really comes from the party it claims to.
"""

from __future__ import annotations

from invisible.crypto.keyagree import (
    PUBLIC_KEY_BYTES,
    EphemeralKeyPair,
    derive_pairwise_seed,
)
from invisible.crypto.prg import Prg
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel


class PairwiseSecrets:
    """A party's X25519 shared secrets with each peer of one job."""

    def __init__(self, party_id: str, job_id: str, secrets: dict[str, bytes]) -> None:
        self.party_id = party_id
        self.job_id = job_id
        self._secrets = secrets
        self._used_steps: set[str] = set()

    def __repr__(self) -> str:  # never show a secret
        return f"PairwiseSecrets(party={self.party_id!r}, peers={sorted(self._secrets)})"

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(self._secrets)

    def seed(self, peer: str, step: str) -> bytes:
        """The 32-byte seed this party shares with `peer` for `step` of this job."""
        if peer not in self._secrets:
            raise ProtocolError(f"no pairwise secret with party '{peer}'")
        return derive_pairwise_seed(
            self._secrets[peer], job_id=self.job_id, step=step,
            party_a=self.party_id, party_b=peer,
        )

    def prgs(self, step: str) -> dict[str, Prg]:
        """One generator per peer for `step`; a step's seeds may be taken once only."""
        if step in self._used_steps:
            raise ProtocolError(f"pairwise seeds for step '{step}' were already used")
        self._used_steps.add(step)
        return {peer: Prg(self.seed(peer, step)) for peer in self._secrets}


def agree_pairwise_secrets(channel: Channel, step: str = "pairwise") -> PairwiseSecrets:
    """Run steps 1-3 above with every peer of the channel's job."""
    key_pair = EphemeralKeyPair.generate()
    tag = f"{step}/x25519"
    channel.send_to_each(tag, {peer: key_pair.public_bytes for peer in channel.peers})
    secrets: dict[str, bytes] = {}
    for peer in channel.peers:
        peer_public = channel.recv_bytes(peer, tag, length=PUBLIC_KEY_BYTES)
        try:
            secrets[peer] = key_pair.shared_secret(peer_public)
        except ValueError:
            raise ProtocolError(f"party '{peer}' sent an invalid X25519 public key") from None
    # The job as this party was given it is bound into every seed (see Channel.binding).
    bound_id = f"{channel.job_id}#{channel.binding}" if channel.binding else channel.job_id
    return PairwiseSecrets(channel.party_id, bound_id, secrets)
