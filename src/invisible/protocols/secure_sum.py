"""Secure sum by pairwise zero-sharing: each party sends one masked vector.

Parties P_1..P_n each hold a vector x_i in Z_2^64 (fixed-point encoded, of
one agreed length L). The output, sum_i x_i, goes to one recipient: either
one of the parties, or the requester (the coordinator that started the job).

Steps (every party i):

1. Agree pairwise secrets with every peer over the mutually authenticated
   channel (:func:`agree_pairwise_secrets`: ephemeral X25519, one round).
2. For every peer j, expand the seed for step ``secure-sum/mask`` into a
   mask m_ij of L ring elements (AES-CTR). The masks form a sharing of
   zero: party i adds m_ij for j after it in job order and subtracts it
   for j before it, so the masks cancel in the sum over all parties.
3. y_i = x_i + sum_{j > i} m_ij - sum_{j < i} m_ij  (mod 2^64).
4. If the recipient is a party r, every other party sends y_i to r, and r
   outputs sum_i y_i = sum_i x_i. If the recipient is the requester, every
   party releases y_i to it and the requester adds them.

What each party learns: a non-recipient party learns nothing but its peers'
ephemeral public keys. The recipient learns the total: every y_i it
receives is masked by at least one seed it does not hold (for n >= 3, or
n = 2 with the requester as recipient), so the y_i's are uniformly random
subject to their sum. With n = 2 and a party as recipient, the total
reveals the other party's input by subtraction; that is the function's
output, not a leak of the protocol.

Communication: one round of 32-byte keys between every pair, then 8 * L
bytes per party to the recipient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel
from invisible.protocols.seeds import PairwiseSecrets, agree_pairwise_secrets

MASK_STEP = "secure-sum/mask"
SEND_STEP = "secure-sum/masked-input"


@dataclass(frozen=True)
class SecureSumOutput:
    """What one party ends the protocol with.

    ``total`` is set only at a recipient party; ``released`` (the masked
    input y_i) only when the requester is the recipient.
    """

    total: np.ndarray | None = None
    released: np.ndarray | None = None
    values_opened: int = 0


def masked_input(channel: Channel, values: np.ndarray) -> np.ndarray:
    """Steps 1-3: this party's input plus its share of a pairwise zero-sharing."""
    if values.dtype != RING_DTYPE or values.ndim != 1:
        raise ProtocolError("secure sum input must be a 1-D uint64 vector")
    secrets = agree_pairwise_secrets(channel, step="secure-sum")
    return mask_with(channel, secrets, values, MASK_STEP)


def mask_with(channel: Channel, secrets: PairwiseSecrets, values: np.ndarray,
              step: str) -> np.ndarray:
    """Steps 2-3 for `step` (each step's masks are fresh; a step is used once)."""
    masked = values.copy()
    mask = np.empty_like(masked)
    my_position = channel.parties.index(channel.party_id)
    for peer, prg in secrets.prgs(step).items():
        prg.fill_uint64(mask)
        if channel.parties.index(peer) > my_position:
            masked += mask
        else:
            masked -= mask
    return masked


def secure_sum(channel: Channel, values: np.ndarray, recipient: str | None) -> SecureSumOutput:
    """Run the protocol; `recipient` is a party id, or None for the requester."""
    if recipient is not None and recipient not in channel.parties:
        raise ProtocolError(f"recipient '{recipient}' is not a party of the job")
    masked = masked_input(channel, values)
    if recipient is None:
        return SecureSumOutput(released=masked)
    if channel.party_id != recipient:
        channel.send(recipient, SEND_STEP, masked)
        return SecureSumOutput()
    total = masked
    for peer in channel.peers:
        total = total + channel.recv_array(peer, SEND_STEP, dtype=RING_DTYPE, shape=values.shape)
    return SecureSumOutput(total=total, values_opened=int(values.shape[0]))
