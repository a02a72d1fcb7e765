"""Whether any party holds values beyond a job's declared bound: one bit, and nothing else.

Used when a data owner's policy refuses out-of-bound values instead of
clipping them (``out_of_bound = "refuse"``). The job must then fail at every
party alike, saying neither which party nor which direction, so every party
learns the same single bit: "some party has a value beyond the bound".

Parties P_1..P_n (the job's data holders) each hold a flag f_i. In Z_2^64:

1. P_i sets v_i = r_i, a uniformly random non-zero element, if f_i, else 0.
2. P_i splits v_i into n uniformly random additive shares s_i1..s_in, keeps
   s_ii and sends s_ij to P_j (step ``bound-check/shares``).
3. P_j adds what it holds, t_j = sum_i s_ij, and sends t_j to every other
   party (step ``bound-check/sums``).
4. Every party computes V = sum_j t_j = sum_i v_i and outputs V != 0.

What each party learns: the shares it receives are uniformly random, so
before step 4 it has learned nothing; V is 0 if no flag was set, and
otherwise uniformly distributed (over the non-zero elements if one flag was
set, over the whole ring if more were), so V tells whether some flag was
set and neither which nor how many. With more than one flag the output is
wrong with probability 2^-64 (the r_i cancel). Semi-honest parties, as for
the secure sum; a party may lie about its own flag, which it could do by
changing its data anyway.

Communication: two rounds; 8 bytes to every other party in each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel

SHARES_STEP = "bound-check/shares"
SUMS_STEP = "bound-check/sums"


def any_party_flagged(channel: Channel, parties: Sequence[str], flagged: bool,
                      rng: Prg, tag: str = "") -> bool:
    """Run the protocol among `parties` (this party among them); whether any flag was set.
    A job that runs it more than once gives each run its own `tag`."""
    return opened_total(channel, parties, flagged, rng, tag) != 0


def opened_total(channel: Channel, parties: Sequence[str], flagged: bool, rng: Prg,
                 tag: str = "") -> int:
    """Steps 1-4: V, which every party learns (0, or uniformly random if a flag was set)."""
    me = channel.party_id
    if me not in parties or len(set(parties)) != len(parties):
        raise ProtocolError("the bound check needs distinct parties, this one among them")
    others = [p for p in parties if p != me]
    value = np.zeros(1, dtype=RING_DTYPE)
    if flagged:
        while not value[0]:
            rng.fill_uint64(value)
    shares = rng.random_uint64(len(others)).astype(RING_DTYPE)
    mine = value - shares.sum(dtype=RING_DTYPE)
    shares_step, sums_step = SHARES_STEP + tag, SUMS_STEP + tag
    channel.send_to_each(shares_step, {p: shares[i:i + 1] for i, p in enumerate(others)})
    for sender in others:
        mine = mine + channel.recv_array(sender, shares_step, RING_DTYPE, (1,))
    channel.send_to_each(sums_step, {p: mine for p in others})
    total = mine.copy()
    for sender in others:
        total += channel.recv_array(sender, sums_step, RING_DTYPE, (1,))
    return int(total[0])
