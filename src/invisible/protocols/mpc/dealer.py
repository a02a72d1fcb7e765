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

The kinds of tuple, their components and how the dependent ones are
computed: :mod:`.tuples`. A computing party's end: :mod:`.provider`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from invisible.crypto.keyagree import SEED_BYTES, derive_indexed_key
from invisible.crypto.prg import Prg
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel
from invisible.protocols.mpc.shared import RANGE_BITS
from invisible.protocols.mpc.tuples import CATALOGUE, Shape, component_shapes, random_components

SEED_STEP = "dealer/seed"
REQUEST_STEP = "dealer/request"
#: The request kind that ends the dealer's loop.
DONE = "done"
MAX_TUPLE_ELEMENTS = 1 << 28


@dataclass(frozen=True)
class TupleRequest:
    """The leader's request for tuple `tuple_id` (of kind `DONE`: no more tuples)."""

    kind: str
    tuple_id: int
    shapes: tuple[Shape, ...] = ()
    fractional_bits: int = 0


def encode_request(request: TupleRequest) -> bytes:
    """JSON: kind and id, then (unless done) the requested shapes and fractional bits."""
    message: dict[str, object] = {"kind": request.kind, "id": request.tuple_id}
    if request.kind != DONE:
        message |= {"shapes": [list(s) for s in request.shapes], "f": request.fractional_bits}
    return json.dumps(message).encode()


def decode_request(data: bytes, sender: str) -> TupleRequest:
    """The request `sender` sent; refused unless every field has its type."""
    try:
        message = json.loads(data)
        kind, tuple_id = message["kind"], message["id"]
        shapes = tuple(tuple(s) for s in message.get("shapes", []))
        f = message.get("f", 0)
    except (ValueError, KeyError, TypeError):
        raise ProtocolError(f"party '{sender}' sent a malformed tuple request") from None
    if not isinstance(kind, str) or not isinstance(tuple_id, int) or not isinstance(f, int) \
            or not all(isinstance(d, int) and d >= 0 for s in shapes for d in s):
        raise ProtocolError(f"party '{sender}' sent a malformed tuple request")
    return TupleRequest(kind, tuple_id, shapes, f)


def request_step(index: int) -> str:
    """The step of the leader's `index`-th request (tuple `index`, or done after the last):
    every message of a job has a step of its own."""
    return f"{REQUEST_STEP}/{index}"


def tuple_step(tuple_id: int) -> str:
    """The step of the message carrying tuple `tuple_id`'s dependent shares."""
    return f"dealer/tuple/{tuple_id}"


def explicit_party(parties: Sequence[str], tuple_id: int) -> str:
    """The party that receives tuple `tuple_id`'s dependent shares: each in turn, so the
    dealer's traffic is spread over the parties' links; the last party first (the first
    is the leader, which has a little more to do)."""
    return parties[(tuple_id - 1) % len(parties)]


def expand_shares(master: bytes, tuple_id: int, parts: Sequence[Shape]) -> np.ndarray:
    """One party's shares of the components `parts` of tuple `tuple_id`, flat, from its seed."""
    return Prg(derive_indexed_key(master, "dealer-tuple", tuple_id)).random_uint64(
        sum(prod(p) for p in parts))


def split_components(flat: np.ndarray, parts: Sequence[Shape]) -> list[np.ndarray]:
    """Views of `flat` as consecutive components of shapes `parts`."""
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
    masters = {p: rng.random_bytes(SEED_BYTES) for p in parties}
    channel.send_to_each(SEED_STEP, masters)
    leader = parties[0]
    served: set[int] = set()
    while True:
        index = len(served)
        request = decode_request(channel.recv_bytes(leader, request_step(index)), leader)
        if request.kind == DONE:
            return len(served)
        tuple_id, f = request.tuple_id, request.fractional_bits
        if tuple_id in served or tuple_id != index:
            raise ProtocolError(f"party '{leader}' asked for tuple {tuple_id} as request "
                                f"{index}; tuples are issued once each, in order")
        parts = component_shapes(request.kind, request.shapes)
        if sum(prod(p) for p in parts) > MAX_TUPLE_ELEMENTS:
            raise ProtocolError("a tuple request is larger than the dealer serves")
        if not 0 <= f < RANGE_BITS:
            raise ProtocolError(f"party '{leader}' asked for {f} fractional bits")
        random_parts = parts[:random_components(request.kind)]
        random = sum(prod(p) for p in random_parts)
        receiver = explicit_party(parties, tuple_id)
        expanding = [p for p in parties if p != receiver]
        # The sum of the other parties' shares of every component, then the values.
        values = expand_shares(masters[expanding[0]], tuple_id, parts)
        for party in expanding[1:]:
            values += expand_shares(masters[party], tuple_id, parts)
        others = values[random:].copy()
        values[:random] += expand_shares(masters[receiver], tuple_id, random_parts)
        CATALOGUE[request.kind].fill(split_components(values, parts), f, rng)
        values[random:] -= others  # the receiver's shares of the dependent components
        channel.send(receiver, tuple_step(tuple_id), values[random:], handover=True)
        served.add(tuple_id)
