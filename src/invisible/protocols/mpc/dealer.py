"""Correlated randomness from a dealer: Beaver triples, matrix triples, truncation tuples.

The dealer is a separate endpoint of the job that is never a computing
party, never receives a share of a value, and never sees an opened value —
a dealer that also computed could unmask every Beaver opening.

PRG compression: at the start of a job the dealer sends each computing
party but the last a 32-byte master seed. Every share those parties hold
of tuple t is the AES-CTR expansion of HKDF(master, t): they need no
further message. The last party receives, per tuple, the one share that
makes the shares add up to the tuple's values. So a tuple costs the dealer
one message of its size, whatever the number of parties.

Steps, per tuple t (the computing parties run the same program, so they
agree on t and on the tuple's shapes):

1. The leader (first computing party) asks the dealer for tuple t: its
   kind and shapes.
2. The dealer draws the values (e.g. a, b and c = a b), expands the shares
   of parties 0..n-2 from their master seeds, and sends the last party
   values - sum(those shares).
3. Every party takes its shares; a tuple id taken twice is refused.

What each party learns: shares that are uniformly random on their own.
What the dealer learns: the shapes of the computation, nothing of the data.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from invisible.crypto.keyagree import SEED_BYTES, derive_indexed_key
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel

SEED_STEP = "dealer/seed"
REQUEST_STEP = "dealer/request"
MAX_TUPLE_ELEMENTS = 1 << 28
#: Comparison tuples share the low 62 bits of r one by one (values live below 2^62).
CMP_BITS = 62
Shape = tuple[int, ...]


def component_shapes(kind: str, shapes: Sequence[Shape]) -> list[Shape]:
    """The shapes of a tuple's components, checked."""
    if kind == "triple" and len(shapes) == 1:
        return [shapes[0]] * 3  # a, b, c = a * b
    if kind == "matrix" and len(shapes) == 2 and len(shapes[0]) == 2 and len(shapes[1]) == 2 \
            and shapes[0][1] == shapes[1][0]:
        return [shapes[0], shapes[1], (shapes[0][0], shapes[1][1])]  # A, B, C = A @ B
    if kind == "trunc" and len(shapes) == 1:
        return [shapes[0]] * 3  # r, msb(r), (r mod 2^63) >> f
    if kind == "cmp" and len(shapes) == 1:
        return [shapes[0]] * (3 + CMP_BITS)  # r, msb(r), (r mod 2^63) >> 62, bits 0..61 of r
    raise ProtocolError(f"unknown tuple kind or shapes: {kind} {list(shapes)}")


def tuple_values(kind: str, shapes: Sequence[Shape], fractional_bits: int,
                 rng: Prg) -> list[np.ndarray]:
    """What the dealer draws for one tuple."""
    parts = component_shapes(kind, shapes)
    if kind == "triple":
        a, b = rng.random_uint64(parts[0]), rng.random_uint64(parts[1])
        return [a, b, a * b]
    if kind == "matrix":
        a, b = rng.random_uint64(parts[0]), rng.random_uint64(parts[1])
        return [a, b, np.matmul(a, b)]
    r = rng.random_uint64(parts[0])
    low = r & np.uint64((1 << 63) - 1)
    if kind == "cmp":
        bits = [(r >> np.uint64(i)) & np.uint64(1) for i in range(CMP_BITS)]
        return [r, r >> np.uint64(63), low >> np.uint64(CMP_BITS), *bits]
    return [r, r >> np.uint64(63), low >> np.uint64(fractional_bits)]


def _expand(master: bytes, tuple_id: int, parts: Sequence[Shape]) -> list[np.ndarray]:
    flat = Prg(derive_indexed_key(master, "dealer-tuple", tuple_id)).random_uint64(
        sum(prod(p) for p in parts))
    return _split(flat, parts)


def _split(flat: np.ndarray, parts: Sequence[Shape]) -> list[np.ndarray]:
    out, start = [], 0
    for shape in parts:
        size = prod(shape)
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def run_dealer(channel: Channel, parties: Sequence[str], rng: Prg) -> int:
    """The dealer's side of a job: serve tuple requests until the leader says done.

    Returns the number of tuples served.
    """
    if channel.party_id in parties:
        raise ProtocolError("the dealer cannot be a computing party")
    masters = {p: rng.random_bytes(SEED_BYTES) for p in parties[:-1]}
    channel.send_to_each(SEED_STEP, masters)
    last, leader = parties[-1], parties[0]
    served: set[int] = set()
    while True:
        try:
            request = json.loads(channel.recv_bytes(leader, REQUEST_STEP))
            kind, tuple_id = request["kind"], request["id"]
        except (ValueError, KeyError, TypeError):
            raise ProtocolError(f"party '{leader}' sent a malformed tuple request") from None
        if kind == "done":
            return len(served)
        if not isinstance(tuple_id, int) or tuple_id in served:
            raise ProtocolError(f"tuple {tuple_id} was already issued; tuples are never reused")
        shapes = [tuple(int(d) for d in s) for s in request.get("shapes", [])]
        parts = component_shapes(kind, shapes)
        if sum(prod(p) for p in parts) > MAX_TUPLE_ELEMENTS:
            raise ProtocolError("a tuple request is larger than the dealer serves")
        values = tuple_values(kind, shapes, int(request.get("f", 0)), rng)
        for master in masters.values():
            for value, share in zip(values, _expand(master, tuple_id, parts), strict=True):
                value -= share
        channel.send(last, f"dealer/tuple/{tuple_id}",
                     np.concatenate([v.reshape(-1) for v in values]), handover=True)
        served.add(tuple_id)


@dataclass(frozen=True)
class Ticket:
    """A tuple asked for and not yet collected (see TupleProvider.request)."""

    tuple_id: int
    kind: str
    parts: tuple[Shape, ...]


class TupleProvider(ABC):
    """Where a computing party gets correlated randomness; the dealer, or later another.

    `request` asks early (the dealer can make the tuple while the parties
    compute); `collect` returns this party's shares; `take` is both at once.
    """

    @abstractmethod
    def request(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0) -> Ticket: ...

    @abstractmethod
    def collect(self, ticket: Ticket) -> list[np.ndarray]: ...

    def take(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0,
             ) -> list[np.ndarray]:
        return self.collect(self.request(kind, shapes, fractional_bits))

    @abstractmethod
    def close(self) -> None: ...


class DealerProvider(TupleProvider):
    """A computing party's end of the dealer protocol above."""

    def __init__(self, channel: Channel, parties: Sequence[str], dealer: str) -> None:
        self.channel = channel
        self.parties = tuple(parties)
        self.dealer = dealer
        self._next_id = 0
        self._taken: set[int] = set()
        me = channel.party_id
        self._leader = me == self.parties[0]
        self._last = me == self.parties[-1]
        self._master = None if self._last else channel.recv_bytes(dealer, SEED_STEP, SEED_BYTES)

    def request(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0) -> Ticket:
        tuple_id = self._next_id
        self._next_id += 1
        parts = tuple(component_shapes(kind, [tuple(s) for s in shapes]))
        if self._leader:
            self.channel.send(self.dealer, REQUEST_STEP, json.dumps(
                {"kind": kind, "id": tuple_id, "shapes": [list(s) for s in shapes],
                 "f": fractional_bits}).encode())
        return Ticket(tuple_id, kind, parts)

    def collect(self, ticket: Ticket) -> list[np.ndarray]:
        if ticket.tuple_id in self._taken:
            raise ProtocolError(f"tuple {ticket.tuple_id} was already used")
        self._taken.add(ticket.tuple_id)
        if self._master is not None:
            return _expand(self._master, ticket.tuple_id, ticket.parts)
        flat = self.channel.recv_array(self.dealer, f"dealer/tuple/{ticket.tuple_id}", RING_DTYPE,
                                       (sum(prod(p) for p in ticket.parts),))
        return _split(flat, ticket.parts)

    def close(self) -> None:
        if self._leader:
            self.channel.send(self.dealer, REQUEST_STEP, json.dumps({"kind": "done", "id": -1})
                              .encode())
