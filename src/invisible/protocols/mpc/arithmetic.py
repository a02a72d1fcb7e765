"""Opening, Beaver products and exact truncation over the computing parties.

Opening (every party sends its share to every other: one round) is the
only way a value is revealed, and every opening is recorded with what it was,
to whom, and how many values (:class:`~.context.OpenRecord`). The openings
here reveal only uniformly masked values: Beaver differences x - a and
y - b, and the truncation input masked by r. Declared outputs are opened
with :func:`reveal`.

Product x * y (elementwise; matrices with a matrix triple), one opening:
  1. take a triple (a, b, c = a b) from the provider;
  2. open d = x - a and e = y - b together;
  3. z = c + d b + e a + d e (the leader adds the public d e).
The ring product carries 2f fractional bits; :func:`truncate` brings it
back to f.

Exact truncation of z with |z| < 2^62 (Escudero et al., CRYPTO 2020: the
most significant bit of z + 2^62 is known to be 0), one opening:
  1. take (r + 2^62, H = msb(r) 2^(63-f), L = ((r mod 2^63) >> f) + 2^(62-f))
     for a uniform r from the provider;
  2. open c = z + 2^62 + r; it is uniform, so reveals nothing;
  3. the carry out of the low 63 bits of (z + 2^62) + r is
     b = c_msb XOR msb(r) = c_msb + msb(r) (1 - 2 c_msb), linear in the shared msb(r);
  4. y = (c_low >> f) + 2^(63-f) b - (r_low >> f) - 2^(62-f)
       = (c >> f) + H (1 - 2 c_msb) - L   (the leader adds the public c >> f).
y is floor(z / 2^f) or one more: correct to 1 ulp for every z in range,
where probabilistic truncation fails with probability about |z| / 2^63.

A fixed-point product takes its triple and truncation tuple as one
(triple-trunc): the dealer hands out c + r + 2^62 in place of c and r, so
step 3 of the product directly gives the share of z + r + 2^62 that
truncation opens: 5 components instead of 6, and one addition fewer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from invisible.crypto.fixedpoint import BoundError, encode
from invisible.crypto.keyagree import SEED_BYTES
from invisible.crypto.prg import Prg
from invisible.crypto.ring import ring_matmul
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import TupleProvider, TupleShares
from invisible.protocols.mpc.shared import SharedArray, check_range


def open_all(ctx: MpcContext, shares: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """Open several masked arrays to every computing party at once (see `open_flat`)."""
    flat = np.concatenate([s.reshape(-1) for s in shares]) if shares else np.zeros(0, RING_DTYPE)
    total = open_flat(ctx, flat, what)
    out, start = [], 0
    for part in shares:
        out.append(total[start:start + part.size].reshape(part.shape))
        start += part.size
    return out


def open_flat(ctx: MpcContext, flat: np.ndarray, what: str) -> np.ndarray:
    """Open one flat masked array to every computing party, in one round; returned read-only.

    Every party sends its share to every other and adds what it receives.
    (Sending the shares to one party that returns the sum moves a third
    fewer bytes with three parties, but on separate machines it takes two
    message delays and twice the time on full-duplex links: that party
    must receive everything before it can send. It only paid off with all
    parties on the same cores.) `flat` is handed over to the channel: the
    caller must not write to it again.
    """
    step = ctx.next_step(f"open/{what}")
    ctx.record.add(what, ctx.parties, int(flat.size))
    ctx.channel.send_to_each(step, {peer: flat for peer in ctx.peers}, handover=True)
    total = np.add(flat, ctx.channel.recv_array(ctx.peers[0], step, RING_DTYPE, flat.shape))
    for peer in ctx.peers[1:]:
        total += ctx.channel.recv_array(peer, step, RING_DTYPE, flat.shape)
    total.flags.writeable = False
    return total


def input_from(ctx: MpcContext, owner: str, values: np.ndarray | None, bound: float,
               shape: tuple[int, ...], rng: Prg) -> SharedArray:
    """Secret-share the owner's real values (|v| <= bound, public) among the computing parties.

    1. The owner draws a fresh 32-byte seed for every other party and sends
       it (over the job's authenticated, encrypted channel).
    2. Each other party's share is its seed's AES-CTR expansion; the owner
       keeps the encoded values minus all of them.
    Every other party learns a pseudorandom array, independent of the values.
    A share costs 32 bytes on the wire instead of 8 per element.
    """
    def encoded() -> np.ndarray:
        if values is None or np.shape(values) != shape:
            raise ProtocolError(f"the owner's input must have shape {shape}")
        try:
            return encode(np.asarray(values), bound, ctx.fractional_bits)
        except BoundError:
            raise ProtocolError(f"an input of '{owner}' exceeds its declared bound") from None

    return _shared_input(ctx, owner, encoded, bound, shape, rng)


def input_encoded(ctx: MpcContext, owner: str, encoded: np.ndarray | None, bound: float,
                  shape: tuple[int, ...], rng: Prg) -> SharedArray:
    """:func:`input_from` for values the owner already holds on the fixed-point grid (ring
    elements whose reals are within `bound`, which the owner vouches for)."""
    def checked() -> np.ndarray:
        if encoded is None or np.shape(encoded) != shape or encoded.dtype != RING_DTYPE:
            raise ProtocolError(f"the owner's input must be ring elements of shape {shape}")
        return encoded.copy()

    return _shared_input(ctx, owner, checked, bound, shape, rng)


def _shared_input(ctx: MpcContext, owner: str, owned: Callable[[], np.ndarray], bound: float,
                  shape: tuple[int, ...], rng: Prg) -> SharedArray:
    """Steps 1-2: the other parties' shares are expansions of the owner's seeds; the owner
    keeps `owned()` (a fresh ring array, called at the owner only) minus all of them."""
    f = ctx.fractional_bits
    check_range(bound, f, "input")
    step = ctx.next_step(f"input/{owner}")
    if ctx.me != owner:
        return SharedArray(Prg(ctx.channel.recv_bytes(owner, step, SEED_BYTES))
                           .random_uint64(shape), bound, f, ctx.is_leader)
    mine = owned()
    seeds = {peer: rng.random_bytes(SEED_BYTES) for peer in ctx.peers}
    ctx.channel.send_to_each(step, seeds)
    for seed in seeds.values():
        mine -= Prg(seed).random_uint64(shape)
    # (not ascontiguousarray: a 0-d share stays 0-d)
    return SharedArray(mine, bound, f, ctx.is_leader)


def rerandomise(ctx: MpcContext, x: SharedArray, rng: Prg) -> SharedArray:
    """`x` with fresh shares no one outside the computing parties can tell apart (1 round of
    32-byte seeds): for each pair, the earlier party sends the later one a seed, adds its
    stream and the later one subtracts it. The dealer, which made the tuples the shares
    came from, can then no longer compute any party's share from them."""
    step = ctx.next_step("rerandomise")
    me = ctx.parties.index(ctx.me)
    later = ctx.parties[me + 1:]
    seeds = {peer: rng.random_bytes(SEED_BYTES) for peer in later}
    if seeds:
        ctx.channel.send_to_each(step, seeds)
    share = x.share.copy()
    for seed in seeds.values():
        share += Prg(seed).random_uint64(x.shape)
    for peer in ctx.parties[:me]:
        share -= Prg(ctx.channel.recv_bytes(peer, step, SEED_BYTES)).random_uint64(x.shape)
    return SharedArray(share, x.bound, x.fractional_bits, ctx.is_leader)


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


def _beaver(ctx: MpcContext, x: np.ndarray, y: np.ndarray, shares: TupleShares,
            matrix: bool) -> np.ndarray:
    """Steps 2-3 of a product: this party's share of c + x y, for a triple (a, b, c).

    c is asked for only once d and e are open: the dealer's message can still be
    on its way while they are.
    """
    a, b = shares[0], shares[1]
    masked = np.empty(x.size + y.size, RING_DTYPE)
    np.subtract(x, a, out=masked[:x.size].reshape(x.shape))
    np.subtract(y, b, out=masked[x.size:].reshape(y.shape))
    opened = open_flat(ctx, masked, "beaver-differences")
    d, e = opened[:x.size].reshape(x.shape), opened[x.size:].reshape(y.shape)
    c = shares[2]
    if matrix:
        z = ring_matmul(d, np.add(b, e) if ctx.is_leader else b)
        z += c
        z += ring_matmul(a, e)
        return z
    z = np.multiply(d, np.add(b, e) if ctx.is_leader else b)  # d (b + e) = d b + d e
    z += c
    z += np.multiply(e, a)
    return z


def mul_ring(ctx: MpcContext, provider: TupleProvider, x: np.ndarray, y: np.ndarray,
             ) -> np.ndarray:
    """The exact ring product of two shared uint64 arrays (no fixed point, no truncation)."""
    if x.shape != y.shape:
        raise ProtocolError(f"elementwise product of shapes {x.shape} and {y.shape}")
    return _beaver(ctx, x, y, provider.take("triple", [x.shape]), matrix=False)


def matmul_ring(ctx: MpcContext, provider: TupleProvider, x: np.ndarray, y: np.ndarray,
                ) -> np.ndarray:
    """The exact ring matrix product of two shared uint64 matrices (no fixed point)."""
    _check_matmul(x.shape, y.shape)
    return _beaver(ctx, x, y, provider.take("matrix", [x.shape, y.shape]), matrix=True)


def mul(ctx: MpcContext, provider: TupleProvider, x: SharedArray, y: SharedArray) -> SharedArray:
    """Elementwise fixed-point product, truncated back to f fractional bits (2 rounds)."""
    if x.shape != y.shape:
        raise ProtocolError(f"elementwise product of shapes {x.shape} and {y.shape}")
    f = _same_f(x, y)
    check_range(x.bound * y.bound * 2.0**f, f, "product")
    shares = provider.take("triple-trunc", [x.shape], f)
    masked = _beaver(ctx, x.share, y.share, shares, matrix=False)  # z + r + 2^62
    return SharedArray(_finish_truncation(ctx, masked, shares, f), x.bound * y.bound, f,
                       ctx.is_leader)


def matmul(ctx: MpcContext, provider: TupleProvider, x: SharedArray, y: SharedArray,
           ) -> SharedArray:
    """Matrix product with a matrix triple, truncated (2 rounds)."""
    _check_matmul(x.shape, y.shape)
    f = _same_f(x, y)
    bound = x.shape[1] * x.bound * y.bound
    check_range(bound * 2.0**f, f, "matrix product")
    shares = provider.take("matrix-trunc", [x.shape, y.shape], f)
    masked = _beaver(ctx, x.share, y.share, shares, matrix=True)  # Z + R + 2^62
    return SharedArray(_finish_truncation(ctx, masked, shares, f), bound, f, ctx.is_leader)


def gram(ctx: MpcContext, provider: TupleProvider, x: SharedArray,
         result_bound: float | None = None) -> SharedArray:
    """The Gram matrix X^T X of a shared (k, m) matrix X, truncated (2 rounds).

    With a gram tuple (B uniform, C = B^T B) only E = X - B is opened (k m
    values; `matmul(X^T, X)` would open 2 k m), then
    X^T X = E^T E + E^T B + B^T E + B^T B: each party adds E^T B_i, its
    transpose and C_i, and the leader the public E^T E.

    `result_bound` is a public bound on every |entry| of X^T X that the caller
    guarantees, tighter than the default k bound^2 (columns of norm at most 1
    give 1, by Cauchy-Schwarz); the exact range is checked against it.
    """
    if len(x.shape) != 2:
        raise ProtocolError(f"a Gram matrix of shape {x.shape}")
    f = x.fractional_bits
    widest = x.shape[0] * x.bound * x.bound
    bound = widest if result_bound is None else min(float(result_bound), widest)
    check_range(bound * 2.0**f, f, "Gram matrix")
    shares = provider.take("gram-trunc", [x.shape], f)
    b = shares[0]
    masked = np.subtract(x.share, b)
    e = open_flat(ctx, masked.reshape(-1), "beaver-differences").reshape(x.shape)
    e_t = np.ascontiguousarray(e.T)
    cross = ring_matmul(e_t, b)  # E^T B_i
    z = cross + cross.T
    z += shares[1]  # C_i + r_i + 2^62 shares
    if ctx.is_leader:
        z += ring_matmul(e_t, np.ascontiguousarray(e))
    return SharedArray(_finish_truncation(ctx, z, shares, f), bound, f, ctx.is_leader)


def mul_public(ctx: MpcContext, provider: TupleProvider, x: SharedArray,
               value: float | np.ndarray) -> SharedArray:
    """Multiply by a public real (encoded with f bits), truncated (1 round)."""
    array = np.broadcast_to(np.asarray(value, dtype=np.float64), x.shape)
    factor = np.rint(array * 2.0**x.fractional_bits).astype(np.int64).view(RING_DTYPE)
    bound = x.bound * (float(np.abs(array).max()) if array.size else 0.0)
    check_range(bound * 2.0**x.fractional_bits, x.fractional_bits, "public product")
    return SharedArray(truncate(ctx, provider, x.share * factor, x.fractional_bits), bound,
                       x.fractional_bits, ctx.is_leader)


def truncate(ctx: MpcContext, provider: TupleProvider, z: np.ndarray, f: int) -> np.ndarray:
    """Shares of z >> f (to 1 ulp) for a shared z with |z| < 2^62 (steps above)."""
    shares = provider.take("trunc", [tuple(z.shape)], f)
    return _finish_truncation(ctx, z + shares[0], shares, f)


def _finish_truncation(ctx: MpcContext, masked: np.ndarray, shares: TupleShares, f: int,
                       ) -> np.ndarray:
    """Steps 2-4 of truncation, from this party's share of z + r + 2^62; the tuple's last two
    components are H and L."""
    c = open_flat(ctx, masked.reshape(-1), "masked-truncation-input").reshape(masked.shape)
    high, low = shares[len(shares) - 2], shares[len(shares) - 1]
    negate = (c.view(np.int64) >> np.int64(63)).view(RING_DTYPE)  # all ones where c_msb = 1
    y = np.bitwise_xor(high, negate)
    y -= negate  # high (1 - 2 c_msb): two's complement negation where c_msb = 1
    y -= low
    if ctx.is_leader:
        y += c >> np.uint64(f)
    return y


def _check_matmul(x: tuple[int, ...], y: tuple[int, ...]) -> None:
    if len(x) != 2 or len(y) != 2 or x[1] != y[0]:
        raise ProtocolError(f"matrix product of shapes {x} and {y}")


def _same_f(x: SharedArray, y: SharedArray) -> int:
    if x.fractional_bits != y.fractional_bits:
        raise ProtocolError("operands have different fractional bits")
    return x.fractional_bits
