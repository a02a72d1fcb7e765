"""Where a computing party gets its tuples: the provider interface and the dealer's.

A program asks its `TupleProvider` for a tuple of a kind from
:mod:`.tuples` and gets this party's shares of its components. The
`DealerProvider` is a computing party's end of the dealer protocol
(:mod:`.dealer`):

1. At the start of the job it receives its 32-byte master seed from the dealer.
2. `request`: the leader (first computing party) asks the dealer for tuple t,
   its kind and shapes; every party numbers its requests alike, as all run the
   same program.
3. `collect`: the party expands its shares of the random components from its
   seed; it expands its shares of the dependent components too, unless it is
   tuple t's explicit party, which receives them in the dealer's message (only
   when it first reads one of them). A tuple is collected once.

What each party learns: its shares, uniformly random on their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from invisible.crypto.keyagree import SEED_BYTES
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel
from invisible.protocols.mpc.dealer import (
    DONE,
    SEED_STEP,
    TupleRequest,
    encode_request,
    expand_shares,
    explicit_party,
    request_step,
    split_components,
    tuple_step,
)
from invisible.protocols.mpc.tuples import Shape, component_shapes, random_components


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
    """A computing party's end of the dealer protocol (steps in the module docstring)."""

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
        requested = tuple(tuple(s) for s in shapes)
        parts = tuple(component_shapes(kind, requested))
        if self._leader:
            self.channel.send(self.dealer, request_step(tuple_id), encode_request(
                TupleRequest(kind, tuple_id, requested, fractional_bits)))
        return Ticket(tuple_id, kind, parts)

    def collect(self, ticket: Ticket) -> TupleShares:
        if ticket.tuple_id in self._taken:
            raise ProtocolError(f"tuple {ticket.tuple_id} was already used")
        self._taken.add(ticket.tuple_id)
        if explicit_party(self.parties, ticket.tuple_id) != self.channel.party_id:
            return TupleShares(split_components(
                expand_shares(self._master, ticket.tuple_id, ticket.parts), ticket.parts))
        random = ticket.parts[:random_components(ticket.kind)]
        dependent = ticket.parts[len(random):]
        shares = split_components(expand_shares(self._master, ticket.tuple_id, random), random)

        def receive() -> list[np.ndarray]:
            flat = self.channel.recv_array(self.dealer, tuple_step(ticket.tuple_id), RING_DTYPE,
                                           (sum(prod(p) for p in dependent),))
            return split_components(flat, dependent)

        return TupleShares(shares, len(dependent), receive)

    def close(self) -> None:
        if self._leader:
            self.channel.send(self.dealer, request_step(self._next_id),
                              encode_request(TupleRequest(DONE, -1)))
