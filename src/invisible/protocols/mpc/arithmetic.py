"""Opening, Beaver products and exact truncation over the computing parties.

Opening (each party sends its share to every other: one round) is the only
way a value is revealed, and every opening is recorded with what it was,
to whom, and how many values (:class:`~.context.OpenRecord`). The openings
here reveal only uniformly masked values: Beaver differences x - a and
y - b, and the truncation input masked by r. Declared outputs are opened
with :func:`reveal`.

Product x * y (elementwise; matrices with a matrix triple), one round:
  1. take a triple (a, b, c = a b) from the provider;
  2. open d = x - a and e = y - b together;
  3. z = c + d b + e a + d e (the leader adds the public d e).
The ring product carries 2f fractional bits; :func:`truncate` brings it
back to f.

Exact truncation of z with |z| < 2^62 (Escudero et al., CRYPTO 2020: the
most significant bit of z + 2^62 is known to be 0), one round:
  1. take (r, r_msb = r >> 63, r_low' = (r mod 2^63) >> f) from the provider;
  2. open c = z + 2^62 + r; it is uniform, so reveals nothing;
  3. the carry out of the low 63 bits is b = c_msb XOR r_msb
     = c_msb + r_msb (1 - 2 c_msb), linear in the shared r_msb;
  4. y = (c_low >> f) - r_low' + 2^(63-f) b - 2^(62-f).
y is floor(z / 2^f) or one more: correct to 1 ulp for every z in range,
where probabilistic truncation fails with probability about |z| / 2^63.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from invisible.crypto.fixedpoint import BoundError, encode
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE, share
from invisible.errors import ProtocolError
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.dealer import Ticket, TupleProvider
from invisible.protocols.mpc.shared import RANGE_BITS, SharedArray, check_range

_LOW_MASK = np.uint64((1 << 63) - 1)


def open_all(ctx: MpcContext, shares: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """Open several masked arrays to every computing party in one round."""
    flat = np.concatenate([s.reshape(-1) for s in shares]) if shares else np.zeros(0, RING_DTYPE)
    total = open_flat(ctx, flat, what)
    out, start = [], 0
    for part in shares:
        out.append(total[start:start + part.size].reshape(part.shape))
        start += part.size
    return out


def open_flat(ctx: MpcContext, flat: np.ndarray, what: str) -> np.ndarray:
    """Open one flat masked array to every computing party in one round.

    `flat` is handed over to the channel: the caller must not write to it again.
    """
    step = ctx.next_step(f"open/{what}")
    ctx.channel.send_to_each(step, {peer: flat for peer in ctx.peers}, handover=True)
    total: np.ndarray | None = None
    for peer in ctx.peers:
        theirs = ctx.channel.recv_array(peer, step, RING_DTYPE, flat.shape)
        if total is None:
            total = np.add(flat, theirs)
        else:
            total += theirs
    ctx.record.add(what, ctx.parties, int(flat.size))
    return flat.copy() if total is None else total


def input_from(ctx: MpcContext, owner: str, values: np.ndarray | None, bound: float,
               shape: tuple[int, ...], rng: Prg) -> SharedArray:
    """Secret-share the owner's real values (|v| <= bound, public) among the computing parties.

    The owner encodes and splits them and sends each party one share (one
    message each); every other party learns a uniformly random array.
    """
    f = ctx.fractional_bits
    check_range(bound, f, "input")
    step = ctx.next_step(f"input/{owner}")
    if ctx.me == owner:
        if values is None or np.shape(values) != shape:
            raise ProtocolError(f"the owner's input must have shape {shape}")
        try:
            encoded = encode(np.asarray(values), bound, f)
        except BoundError:
            raise ProtocolError(f"an input of '{owner}' exceeds its declared bound") from None
        shares = share(encoded, len(ctx.parties), rng)
        ctx.channel.send_to_each(step, {p: shares[ctx.parties.index(p)] for p in ctx.peers},
                                 handover=True)
        mine = shares[ctx.index]
    else:
        mine = ctx.channel.recv_array(owner, step, RING_DTYPE, shape)
    return SharedArray(np.ascontiguousarray(mine), bound, f, ctx.is_leader)


def reveal(ctx: MpcContext, x: SharedArray, to: str, what: str) -> np.ndarray | None:
    """Open a declared output to one computing party; others get None."""
    if to not in ctx.parties:
        raise ProtocolError(f"'{to}' is not a computing party; outputs go to a party")
    step = ctx.next_step(f"reveal/{what}")
    ctx.record.add(what, (to,), int(x.share.size))
    if ctx.me != to:
        ctx.channel.send(to, step, x.share)
        return None
    total = x.share.copy()
    for peer in ctx.peers:
        total += ctx.channel.recv_array(peer, step, RING_DTYPE, x.shape)
    return total


def _beaver(ctx: MpcContext, provider: TupleProvider, x: SharedArray, y: SharedArray,
            matrix: bool, then: tuple[str, Sequence[tuple[int, ...]], int] | None = None,
            ) -> tuple[np.ndarray, Ticket | None]:
    """Steps 1-3 of a product: this party's share of the ring product (2f fractional bits).

    `then` asks the provider for the next tuple (kind, shapes, f) right after
    this one, so that the dealer makes it while the parties open d and e.
    """
    kind = "matrix" if matrix else "triple"
    shapes = [x.shape, y.shape] if matrix else [x.shape]
    triple = provider.request(kind, shapes)
    following = provider.request(*then) if then is not None else None
    a, b, c = provider.collect(triple)
    masked = np.empty(x.share.size + y.share.size, RING_DTYPE)
    np.subtract(x.share, a, out=masked[:x.share.size].reshape(x.shape))
    np.subtract(y.share, b, out=masked[x.share.size:].reshape(y.shape))
    opened = open_flat(ctx, masked, "beaver-differences")
    d = opened[:x.share.size].reshape(x.shape)
    e = opened[x.share.size:].reshape(y.shape)
    if matrix:
        z = c + np.matmul(d, b) + np.matmul(a, e)
        return (z + np.matmul(d, e) if ctx.is_leader else z), following
    z = c + d * b + e * a
    return (z + d * e if ctx.is_leader else z), following


def mul_ring(ctx: MpcContext, provider: TupleProvider, x: np.ndarray, y: np.ndarray,
             ) -> np.ndarray:
    """The exact ring product of two shared uint64 arrays (no fixed point, no truncation)."""
    fx = SharedArray(x, 0.0, 0, ctx.is_leader)
    fy = SharedArray(y, 0.0, 0, ctx.is_leader)
    return _beaver(ctx, provider, fx, fy, matrix=False)[0]


def matmul_ring(ctx: MpcContext, provider: TupleProvider, x: np.ndarray, y: np.ndarray,
                ) -> np.ndarray:
    """The exact ring matrix product of two shared uint64 matrices (no fixed point)."""
    fx = SharedArray(x, 0.0, 0, ctx.is_leader)
    fy = SharedArray(y, 0.0, 0, ctx.is_leader)
    return _beaver(ctx, provider, fx, fy, matrix=True)[0]


def mul(ctx: MpcContext, provider: TupleProvider, x: SharedArray, y: SharedArray) -> SharedArray:
    """Elementwise fixed-point product, truncated back to f fractional bits (2 rounds)."""
    if x.shape != y.shape:
        raise ProtocolError(f"elementwise product of shapes {x.shape} and {y.shape}")
    f = _same_f(x, y)
    check_range(x.bound * y.bound * 2.0**f, f, "product")
    z, ticket = _beaver(ctx, provider, x, y, False, then=("trunc", [x.shape], f))
    return SharedArray(truncate(ctx, provider, z, f, ticket), x.bound * y.bound, f,
                       ctx.is_leader)


def matmul(ctx: MpcContext, provider: TupleProvider, x: SharedArray, y: SharedArray,
           ) -> SharedArray:
    """Matrix product with a matrix triple, truncated (2 rounds)."""
    if len(x.shape) != 2 or len(y.shape) != 2 or x.shape[1] != y.shape[0]:
        raise ProtocolError(f"matrix product of shapes {x.shape} and {y.shape}")
    f = _same_f(x, y)
    bound = x.shape[1] * x.bound * y.bound
    check_range(bound * 2.0**f, f, "matrix product")
    z, ticket = _beaver(ctx, provider, x, y, True, then=("trunc", [(x.shape[0], y.shape[1])], f))
    return SharedArray(truncate(ctx, provider, z, f, ticket), bound, f, ctx.is_leader)


def mul_public(ctx: MpcContext, provider: TupleProvider, x: SharedArray,
               value: float | np.ndarray) -> SharedArray:
    """Multiply by a public real (encoded with f bits), truncated (1 round)."""
    array = np.broadcast_to(np.asarray(value, dtype=np.float64), x.shape)
    factor = np.rint(array * 2.0**x.fractional_bits).astype(np.int64).view(RING_DTYPE)
    bound = x.bound * (float(np.abs(array).max()) if array.size else 0.0)
    check_range(bound * 2.0**x.fractional_bits, x.fractional_bits, "public product")
    return SharedArray(truncate(ctx, provider, x.share * factor, x.fractional_bits), bound,
                       x.fractional_bits, ctx.is_leader)


def truncate(ctx: MpcContext, provider: TupleProvider, z: np.ndarray, f: int,
             ticket: Ticket | None = None) -> np.ndarray:
    """Shares of z >> f (to 1 ulp) for a shared z with |z| < 2^62 (steps above); `ticket`:
    a truncation tuple requested earlier."""
    if ticket is None:
        ticket = provider.request("trunc", [tuple(z.shape)], f)
    r, r_msb, r_low = provider.collect(ticket)
    shift = np.uint64(1 << RANGE_BITS)
    masked = z + r + shift if ctx.is_leader else z + r
    c = open_flat(ctx, masked.reshape(-1), "masked-truncation-input").reshape(z.shape)
    c_msb = c >> np.uint64(63)
    carry = r_msb * (np.uint64(1) - np.uint64(2) * c_msb)  # r_msb (1 - 2 c_msb), mod 2^64
    if ctx.is_leader:
        carry = carry + c_msb
    y = carry * np.uint64(1 << (63 - f)) - r_low
    if ctx.is_leader:
        y = y + ((c & _LOW_MASK) >> np.uint64(f)) - np.uint64(1 << (RANGE_BITS - f))
    return y


def _same_f(x: SharedArray, y: SharedArray) -> int:
    if x.fractional_bits != y.fractional_bits:
        raise ProtocolError("operands have different fractional bits")
    return x.fractional_bits
