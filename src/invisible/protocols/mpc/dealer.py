"""Correlated randomness from a dealer: Beaver triples, matrix triples, truncation tuples.

The dealer is a separate endpoint of the job that is never a computing
party, never receives a share of a value, and never sees an opened value —
a dealer that also computed could unmask every Beaver opening.

PRG compression: at the start of a job the dealer sends every computing
party a 32-byte master seed. A tuple's leading components are uniformly
random (a and b of a triple, the mask of a truncation or comparison): every
party's shares of them are AES-CTR expansions of HKDF(master, t), so their
values are the sums of those expansions. The components that depend on
them (c = a b, the mask's bits, ...) are expansions too for every party but
one, which receives its shares of them, per tuple, in one message (tuple t
goes to party t - 1 mod n, so the dealer's traffic is spread over the links).
So a tuple costs the dealer one message of the size of its dependent
components, whatever the number of parties, and no party waits for the
dealer before it uses a tuple's random components (a product opens
x - a and y - b at once; it needs c only after that).

Steps, per tuple t (the computing parties run the same program, so they
agree on t and on the tuple's shapes):

1. The leader (first computing party) asks the dealer for tuple t: its
   kind and shapes.
2. The dealer expands every party's shares of the random components and
   adds them up, computes the dependent components from them (drawing any
   further randomness itself, e.g. the truncation mask inside c + r),
   expands the other parties' shares of those, and sends party t - 1 mod n the
   dependent values minus their sum.
3. Every party takes its shares; a tuple id taken twice is refused.

What each party learns: shares that are uniformly random on their own.
What the dealer learns: the shapes of the computation, nothing of the data.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from invisible.crypto.keyagree import SEED_BYTES, derive_indexed_key
from invisible.crypto.prg import Prg
from invisible.crypto.ring import ring_matmul
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel
from invisible.protocols.mpc.shared import RANGE_BITS

SEED_STEP = "dealer/seed"
REQUEST_STEP = "dealer/request"
MAX_TUPLE_ELEMENTS = 1 << 28
#: Comparison tuples share the low 62 bits of r one by one (values live below 2^62).
CMP_BITS = 62
_LOW_MASK = np.uint64((1 << 63) - 1)
Shape = tuple[int, ...]


def component_shapes(kind: str, shapes: Sequence[Shape]) -> list[Shape]:
    """The shapes of a tuple's components, checked (see `fill_dependent` for what they hold)."""
    if kind in ("triple", "triple-trunc") and len(shapes) == 1:
        return [shapes[0]] * (3 if kind == "triple" else 5)
    if kind in ("matrix", "matrix-trunc") and len(shapes) == 2 and len(shapes[0]) == 2 \
            and len(shapes[1]) == 2 and shapes[0][1] == shapes[1][0]:
        out: Shape = (shapes[0][0], shapes[1][1])
        return [shapes[0], shapes[1], out] + ([out, out] if kind == "matrix-trunc" else [])
    if kind == "trunc" and len(shapes) == 1:
        return [shapes[0]] * 3
    if kind == "cmp" and len(shapes) == 1:
        return [shapes[0]] * (3 + CMP_BITS)
    raise ProtocolError(f"unknown tuple kind or shapes: {kind} {list(shapes)}")


#: How many leading components of each kind are uniformly random on their own.
RANDOM_COMPONENTS = {"triple": 2, "matrix": 2, "triple-trunc": 2, "matrix-trunc": 2, "trunc": 1,
                     "cmp": 1}


def fill_dependent(kind: str, values: Sequence[np.ndarray], fractional_bits: int,
                   rng: Prg) -> None:
    """Compute a tuple's dependent components in place from its random ones.

    - triple: a, b, c = a b (elementwise); matrix: A, B, C = A @ B.
    - trunc (random: r + 2^62 for a uniform r; f fractional bits): msb(r) 2^(63-f),
      ((r mod 2^63) >> f) + 2^(62-f) — what exact truncation consumes
      (arithmetic.truncate), the constants folded in so the parties don't add them.
    - triple-trunc / matrix-trunc: a product's triple and a truncation tuple for
      its result in one, with c + r + 2^62 (r drawn here) in place of c and of the
      mask: the parties only ever use the product's share masked by r, so they get
      it directly; then the truncation components of r.
    - cmp (random: r): msb(r), (r mod 2^63) >> 62, and bits 0..61 of r, one by one.
    """
    if kind == "cmp":
        r = values[0]
        np.right_shift(r, np.uint64(63), out=values[1])
        np.right_shift(r & _LOW_MASK, np.uint64(CMP_BITS), out=values[2])
        for i in range(CMP_BITS):
            np.bitwise_and(r >> np.uint64(i), np.uint64(1), out=values[3 + i])
        return
    if kind == "trunc":
        _truncation_values(values[0] - np.uint64(1 << RANGE_BITS), values[1], values[2],
                           fractional_bits)
        return
    a, b, c = values[:3]
    if kind.startswith("matrix"):
        c[...] = ring_matmul(a, b)
    else:
        np.multiply(a, b, out=c)
    if kind.endswith("-trunc"):
        r = rng.random_uint64(c.shape)
        _truncation_values(r, values[3], values[4], fractional_bits)
        c += r
        c += np.uint64(1 << RANGE_BITS)


def _truncation_values(r: np.ndarray, high: np.ndarray, low: np.ndarray, f: int) -> None:
    """From r: high = msb(r) 2^(63-f), low = ((r mod 2^63) >> f) + 2^(62-f)."""
    np.right_shift(r, np.uint64(63), out=high)
    high <<= np.uint64(63 - f)
    np.bitwise_and(r, _LOW_MASK, out=low)
    low >>= np.uint64(f)
    low += np.uint64(1 << (RANGE_BITS - f))


def _expand_flat(master: bytes, tuple_id: int, parts: Sequence[Shape]) -> np.ndarray:
    return Prg(derive_indexed_key(master, "dealer-tuple", tuple_id)).random_uint64(
        sum(prod(p) for p in parts))


def _split(flat: np.ndarray, parts: Sequence[Shape]) -> list[np.ndarray]:
    out, start = [], 0
    for shape in parts:
        size = prod(shape)
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def explicit_party(parties: Sequence[str], tuple_id: int) -> str:
    """The party that receives tuple `tuple_id`'s dependent shares: each in turn, so the
    dealer's traffic is spread over the parties' links; the last party first (the first
    is the leader, which has a little more to do)."""
    return parties[(tuple_id - 1) % len(parties)]


def run_dealer(channel: Channel, parties: Sequence[str], rng: Prg) -> int:
    """The dealer's side of a job: serve tuple requests until the leader says done.

    Returns the number of tuples served.
    """
    if channel.party_id in parties:
        raise ProtocolError("the dealer cannot be a computing party")
    masters = {p: rng.random_bytes(SEED_BYTES) for p in parties}
    channel.send_to_each(SEED_STEP, masters)
    leader = parties[0]
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
        f = request.get("f", 0)
        if not isinstance(f, int) or not 0 <= f < RANGE_BITS:
            raise ProtocolError(f"party '{leader}' asked for {f} fractional bits")
        random = sum(prod(p) for p in parts[:RANDOM_COMPONENTS[kind]])
        receiver = explicit_party(parties, tuple_id)
        expanding = [p for p in parties if p != receiver]
        # The sum of the other parties' shares of every component, then the values.
        values = _expand_flat(masters[expanding[0]], tuple_id, parts)
        for party in expanding[1:]:
            values += _expand_flat(masters[party], tuple_id, parts)
        others = values[random:].copy()
        values[:random] += _expand_flat(masters[receiver], tuple_id,
                                        parts[:RANDOM_COMPONENTS[kind]])
        fill_dependent(kind, _split(values, parts), f, rng)
        values[random:] -= others  # the receiver's shares of the dependent components
        channel.send(receiver, f"dealer/tuple/{tuple_id}", values[random:], handover=True)
        served.add(tuple_id)


@dataclass(frozen=True)
class Ticket:
    """A tuple asked for and not yet collected (see TupleProvider.request)."""

    tuple_id: int
    kind: str
    parts: tuple[Shape, ...]


class TupleShares:
    """One party's shares of a tuple's components, by index.

    Shares that come in a message (one party's dependent components) are
    received when one of them is first asked for, so a party can use the
    random components before the dealer's message arrives.
    """

    def __init__(self, parts: Sequence[np.ndarray], pending: int = 0,
                 receive: Callable[[], list[np.ndarray]] | None = None) -> None:
        self._parts = list(parts)
        self._pending = pending  # how many components `receive` supplies, after `parts`
        self._receive = receive

    def __len__(self) -> int:
        return len(self._parts) + self._pending

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index >= len(self._parts) and self._receive is not None:
            self._parts += self._receive()
            self._receive, self._pending = None, 0
        return self._parts[index]

    def all(self) -> list[np.ndarray]:
        return [self[i] for i in range(len(self))]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.all())


class TupleProvider(ABC):
    """Where a computing party gets correlated randomness; the dealer, or later another.

    `request` asks early (the dealer can make the tuple while the parties
    compute); `collect` returns this party's shares; `take` is both at once.
    """

    @abstractmethod
    def request(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0) -> Ticket: ...

    @abstractmethod
    def collect(self, ticket: Ticket) -> TupleShares: ...

    def take(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0,
             ) -> TupleShares:
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
        self._master = channel.recv_bytes(dealer, SEED_STEP, SEED_BYTES)

    def request(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0) -> Ticket:
        tuple_id = self._next_id
        self._next_id += 1
        parts = tuple(component_shapes(kind, [tuple(s) for s in shapes]))
        if self._leader:
            self.channel.send(self.dealer, REQUEST_STEP, json.dumps(
                {"kind": kind, "id": tuple_id, "shapes": [list(s) for s in shapes],
                 "f": fractional_bits}).encode())
        return Ticket(tuple_id, kind, parts)

    def collect(self, ticket: Ticket) -> TupleShares:
        if ticket.tuple_id in self._taken:
            raise ProtocolError(f"tuple {ticket.tuple_id} was already used")
        self._taken.add(ticket.tuple_id)
        if explicit_party(self.parties, ticket.tuple_id) != self.channel.party_id:
            return TupleShares(_split(_expand_flat(self._master, ticket.tuple_id, ticket.parts),
                                      ticket.parts))
        random = ticket.parts[:RANDOM_COMPONENTS[ticket.kind]]
        dependent = ticket.parts[len(random):]
        shares = _split(_expand_flat(self._master, ticket.tuple_id, random), random)

        def receive() -> list[np.ndarray]:
            flat = self.channel.recv_array(
                self.dealer, f"dealer/tuple/{ticket.tuple_id}", RING_DTYPE,
                (sum(prod(p) for p in dependent),))
            return _split(flat, dependent)

        return TupleShares(shares, len(dependent), receive)

    def close(self) -> None:
        if self._leader:
            self.channel.send(self.dealer, REQUEST_STEP, json.dumps({"kind": "done", "id": -1})
                              .encode())
