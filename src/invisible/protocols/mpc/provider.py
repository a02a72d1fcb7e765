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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
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


#: What `take` asks for: a tuple kind, its requested shapes, its fractional bits.
TupleSpec = tuple[str, tuple[Shape, ...], int]


class TupleProvider(ABC):
    """Where a computing party gets correlated randomness; the dealer, or later another.

    `request` asks early (the dealer can make the tuple while the parties
    compute); `collect` returns this party's shares; `take` is both at once,
    or collects a tuple `prefetch` asked for ahead, when it is the next one
    prefetched and of the same kind, shapes and bits. `record` lists what
    `take` asks for, so a program can prefetch a loop's next pass. Every
    party runs the same program, so all number, prefetch and take alike.
    """

    def __init__(self) -> None:
        self._ahead: deque[tuple[TupleSpec, Ticket]] = deque()
        self._recording: list[TupleSpec] | None = None

    @abstractmethod
    def request(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0) -> Ticket: ...

    @abstractmethod
    def collect(self, ticket: Ticket) -> TupleShares: ...

    def take(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0,
             ) -> TupleShares:
        spec: TupleSpec = (kind, tuple(tuple(s) for s in shapes), fractional_bits)
        if self._recording is not None:
            self._recording.append(spec)
        if self._ahead and self._ahead[0][0] == spec:
            return self.collect(self._ahead.popleft()[1])
        return self.collect(self.request(kind, shapes, fractional_bits))

    def prefetch(self, specs: Sequence[TupleSpec]) -> None:
        """Ask now for the tuples `take` will ask for next, in this order (a tuple asked for
        and never taken is only wasted work for the dealer)."""
        for spec in specs:
            self._ahead.append((spec, self.request(*spec)))

    @property
    def prefetched(self) -> int:
        """How many tuples asked for by `prefetch` are not taken yet."""
        return len(self._ahead)

    @contextmanager
    def record(self) -> Iterator[list[TupleSpec]]:
        """The specs `take` asks for inside the block, in order."""
        taken: list[TupleSpec] = []
        self._recording = taken
        try:
            yield taken
        finally:
            self._recording = None

    @abstractmethod
    def close(self) -> None: ...


class DealerProvider(TupleProvider):
    """A computing party's end of the dealer protocol (steps in the module docstring)."""

    def __init__(self, channel: Channel, parties: Sequence[str], dealer: str) -> None:
        super().__init__()
        self.channel = channel
        self.parties = tuple(parties)
        self.dealer = dealer
        self._next_id = 0
        self._taken: set[int] = set()
        me = channel.party_id
        self._leader = me == self.parties[0]
        self._master = channel.recv_bytes(dealer, SEED_STEP, SEED_BYTES)
        # The leader's requests go out from one thread of their own, in order: asking for a
        # tuple never waits for the dealer's node to acknowledge it.
        self._sender = ThreadPoolExecutor(1, "tuple-requests") if self._leader else None
        self._sent: deque[Future[None]] = deque()
        self._requests: dict[int, Future[None]] = {}  # the leader's, until collected

    def _send(self, step: str, message: bytes) -> Future[None]:
        self._check_sent()
        assert self._sender is not None
        sent = self._sender.submit(self.channel.send, self.dealer, step, message)
        self._sent.append(sent)
        return sent

    def _check_sent(self) -> None:
        """Raise the failure of a request sent before (the first one), if any."""
        while self._sent and self._sent[0].done():
            self._sent.popleft().result()

    def request(self, kind: str, shapes: Sequence[Shape], fractional_bits: int = 0) -> Ticket:
        tuple_id = self._next_id
        self._next_id += 1
        requested = tuple(tuple(s) for s in shapes)
        parts = tuple(component_shapes(kind, requested))
        if self._leader:
            self._requests[tuple_id] = self._send(request_step(tuple_id), encode_request(
                TupleRequest(kind, tuple_id, requested, fractional_bits)))
        return Ticket(tuple_id, kind, parts)

    def collect(self, ticket: Ticket) -> TupleShares:
        self._check_sent()
        request = self._requests.pop(ticket.tuple_id, None)
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
            if request is not None:  # a request that never reached the dealer fails here
                request.result()
            flat = self.channel.recv_array(self.dealer, tuple_step(ticket.tuple_id), RING_DTYPE,
                                           (sum(prod(p) for p in dependent),))
            return split_components(flat, dependent)

        return TupleShares(shares, len(dependent), receive)

    def close(self) -> None:
        if self._sender is None:
            return
        try:
            self._send(request_step(self._next_id), encode_request(TupleRequest(DONE, -1)))
            while self._sent:
                self._sent.popleft().result()
        finally:
            self._sender.shutdown(wait=True, cancel_futures=True)
