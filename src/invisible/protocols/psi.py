"""Private set intersection by ECDH over ristretto255 (RFC 9496), for two or more parties.

Parties P_1..P_n (in job order) each hold a column of distinct ids. The
group is ristretto255 through libsodium (the `rbcl` binding, which bundles
it): hash-to-group is ``crypto_core_ristretto255_from_hash`` of a 64-byte
SHA-512 digest (RFC 9496's one-way map: every point, never the twist), and
exponentiation is ``crypto_scalarmult_ristretto255``, which refuses
encodings that are not canonical points and the identity. No curve
arithmetic is done here.

Steps (every party i; n hops around the ring P_1 -> P_2 -> ... -> P_n -> P_1):

1. Encode every id canonically (:func:`canonical_id`) and map it to the
   group: H(x) = from_hash(SHA-512(tag || len(domain) || domain || id)),
   where the domain binds the job (its id and inputs, given by the kind).
2. Draw a fresh secret scalar k_i for this job, blind B_i = [H(x)^k_i] and
   put it in a random order of its own (a secret permutation pi_i).
3. Hops 1..n-1: send the set held to the next party, receive one from the
   previous, raise every element to k_i, keeping its order. After n-1
   hops every set carries all n keys: D_j = [H(x)^(k_1...k_n)], still in
   its owner's order. Hop n: send it back to its owner.
4. Matching. n = 2: each party sends its D, sorted, to the other and marks
   its own elements found there. n > 2: every party sends its D, sorted, to
   the leader P_1, which intersects them all and sends the intersection,
   sorted, to every party, which marks its own elements found there.
5. Each party's result: its own rows in the intersection, ordered by their
   D value (the same order at every party, and one that says nothing about
   any party's row order).

What each party learns, for semi-honest parties under the decisional
Diffie-Hellman assumption in ristretto255: every set it sees in steps 3-4
is a set of group elements blinded by a key it does not hold (for D, by
all keys together), so it learns the sizes of the other parties' sets and
which of its own rows are in the intersection (hence its size), and
nothing about the other ids. With n > 2 the leader also sees every party's
D: it learns the size of every sub-intersection (of any parties' sets) and,
for each of its own rows, which parties hold it; the other parties learn
only the intersection. A party that lies about its set changes the result
(as it could by changing its data); one that sends elements that are not
points is refused.

Communication: n hops of 32 bytes per element of one set per party, then
32 bytes per element of its set (n = 2), or to the leader and back the
intersection (n > 2). Computation per party: one hash-to-group per own id
and one exponentiation per element of each of the n sets, on every core.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import rbcl

from invisible.crypto.prg import Prg
from invisible.errors import ConfigError, ProtocolError
from invisible.protocols.channel import Channel

POINT_BYTES = 32
_TAG = b"invisible/psi/v1"
#: Elements per task given to a worker thread (libsodium runs without the GIL).
_CHUNK = 4096
RING_STEP = "psi/ring"
MATCH_STEP = "psi/match"
RESULT_STEP = "psi/intersection"


@dataclass(frozen=True)
class PsiOutput:
    """One party's result: its own row indices in the intersection, in the agreed order."""

    rows: np.ndarray
    #: The sizes of every party's set, in job order (each party learns them).
    set_sizes: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(self.rows.size)


def canonical_id(value: Any) -> bytes:
    """The bytes an id is hashed from: an integer as its decimal digits (so 42 and "42"
    match; "042" does not), a string as its UTF-8 in Unicode normal form C."""
    if isinstance(value, bool | np.bool_):
        raise ConfigError("an id must be an integer or a string, not a boolean")
    if isinstance(value, int | np.integer):
        return str(int(value)).encode()
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).encode("utf-8")
    raise ConfigError(f"an id must be an integer or a string, not {type(value).__name__}")


def encode_ids(ids: Sequence[Any]) -> list[bytes]:
    """Every id encoded canonically; refuses duplicates without saying how many or which."""
    encoded = [canonical_id(value) for value in ids]
    if len(set(encoded)) != len(encoded):
        raise ConfigError("the id column holds duplicate ids (after canonical encoding); "
                          "a set intersection needs distinct ids")
    return encoded


def _by_chunks(work: Callable[[int, int], bytes], count: int, workers: int) -> np.ndarray:
    """An (count, 32) array of points, `work(start, stop)` computing items start..stop-1, on
    `workers` threads (libsodium runs without the GIL); each chunk is written in place, so
    no copy of the whole input or output is ever held besides the result."""
    out = np.empty((count, POINT_BYTES), dtype=np.uint8)

    def fill(start: int) -> None:
        stop = min(start + _CHUNK, count)
        out[start:stop] = np.frombuffer(work(start, stop), dtype=np.uint8).reshape(-1, POINT_BYTES)

    starts = range(0, count, _CHUNK)
    if workers <= 1 or len(starts) <= 1:
        for start in starts:
            fill(start)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="invisible-psi") as pool:
            list(pool.map(fill, starts))
    return out


def hash_to_group(encoded: Sequence[bytes], domain: bytes, workers: int = 1) -> np.ndarray:
    """H(x) for every encoded id, as an (n, 32) uint8 array of ristretto255 points."""
    prefix = _TAG + len(domain).to_bytes(4, "big") + domain

    def points(start: int, stop: int) -> bytes:
        return b"".join(rbcl.crypto_core_ristretto255_from_hash(
            hashlib.sha512(prefix + value).digest()) for value in encoded[start:stop])

    return _by_chunks(points, len(encoded), workers)


def exponentiate(points: np.ndarray, scalar: bytes, workers: int = 1) -> np.ndarray:
    """Every point raised to `scalar`; a ProtocolError if any is not a valid point (or
    the result is the identity), as libsodium decides."""

    def work(start: int, stop: int) -> bytes:
        chunk = points[start:stop].tobytes()
        try:
            return b"".join(rbcl.crypto_scalarmult_ristretto255(scalar, chunk[i:i + POINT_BYTES])
                            for i in range(0, len(chunk), POINT_BYTES))
        except Exception:  # rbcl raises on an invalid encoding; never echo the bytes
            raise ProtocolError("a set element is not a valid ristretto255 point") from None

    return _by_chunks(work, len(points), workers)


def _keys(points: np.ndarray) -> np.ndarray:
    """The points as 32-byte strings, for sorting and set membership."""
    return np.ascontiguousarray(points).view(f"S{POINT_BYTES}").reshape(-1)


def _points(keys: np.ndarray) -> np.ndarray:
    """32-byte strings back as an (n, 32) uint8 array, for the channel."""
    return np.ascontiguousarray(keys).view(np.uint8).reshape(-1, POINT_BYTES)


def _recv_points(channel: Channel, sender: str, step: str, count: int | None = None,
                 ) -> np.ndarray:
    received = channel.recv_array(sender, step, np.uint8)
    if received.ndim != 2 or received.shape[1] != POINT_BYTES or (
            count is not None and received.shape[0] != count):
        raise ProtocolError(f"party '{sender}' sent a set of the wrong shape at step '{step}'")
    return received


def psi(channel: Channel, ids: Sequence[Any], domain: bytes, rng: Prg,
        workers: int | None = None) -> PsiOutput:
    """Run the protocol (module docstring) with this party's ids; its result."""
    workers = workers or os.cpu_count() or 1
    parties = channel.parties
    me = parties.index(channel.party_id)
    n = len(parties)
    if n < 2:
        raise ProtocolError("a set intersection needs at least two parties")
    encoded = encode_ids(ids)
    order = np.argsort(rng.random_uint64(len(encoded)), kind="stable")  # the secret pi_i
    scalar = rbcl.crypto_core_ristretto255_scalar_random()
    mine = exponentiate(hash_to_group([encoded[i] for i in order], domain, workers), scalar,
                        workers)
    after, before = parties[(me + 1) % n], parties[(me - 1) % n]
    sizes = [0] * n
    sizes[me] = len(encoded)
    held = mine
    for hop in range(1, n):  # step 3: each set passes every other party once, in order
        channel.send(after, f"{RING_STEP}/{hop}", held)
        held = _recv_points(channel, before, f"{RING_STEP}/{hop}")
        sizes[(me - hop) % n] = held.shape[0]
        held = exponentiate(held, scalar, workers)
    channel.send(after, f"{RING_STEP}/{n}", held)  # back to its owner
    doubled = _recv_points(channel, before, f"{RING_STEP}/{n}", len(encoded))
    keys = _keys(doubled)
    in_order = np.flatnonzero(_match(channel, keys, me))
    agreed = in_order[np.argsort(keys[in_order], kind="stable")]
    return PsiOutput(order[agreed].astype(np.int64), tuple(sizes))


def _match(channel: Channel, keys: np.ndarray, me: int) -> np.ndarray:
    """Step 4: which of this party's fully blinded elements are in every party's set."""
    parties = channel.parties
    mine = np.sort(keys)
    if len(parties) == 2:
        other = parties[1 - me]
        channel.send(other, MATCH_STEP, _points(mine))
        theirs = _keys(_recv_points(channel, other, MATCH_STEP))
        return np.isin(keys, theirs)
    leader = parties[0]
    if me != 0:
        channel.send(leader, MATCH_STEP, _points(mine))
        common = _keys(_recv_points(channel, leader, RESULT_STEP))
        return np.isin(keys, common)
    common = mine
    for sender in parties[1:]:
        common = np.intersect1d(common, _keys(_recv_points(channel, sender, MATCH_STEP)),
                                assume_unique=True)
    result = _points(common)
    channel.send_to_each(RESULT_STEP, {p: result for p in parties[1:]})
    return np.isin(keys, common)
