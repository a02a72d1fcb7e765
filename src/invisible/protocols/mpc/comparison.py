"""Comparison, reciprocal and inverse square root on shared fixed-point values.

Less than zero, for |x| 2^f < 2^62 (dealer-assisted, after Escudero et al.):

1. z = x + 2^62 lies in [0, 2^63), and x < 0 exactly when bit 62 of z is 0.
2. The dealer gives shares of a uniform r, of r >> 63, of (r mod 2^63) >> 62
   and of each of the bits r_0 .. r_61 (a "cmp" tuple).
3. Open c = z + r (uniform: reveals nothing). As in exact truncation,
   bit62(z) = (c_low >> 62) - (r_low >> 62) + 2 (c_msb XOR r_msb) - [c0 < r0]
   with c0, r0 the low 62 bits; only the last term needs work.
4. [c0 < r0] with c0 public and r0 shared bit by bit:
   sum_i (1 - c_i) r_i prod_{j > i} (1 - (c_j XOR r_j)), by a binary tree of
   merges (6 rounds of Beaver products on 0/1 values, 2 products a merge).
   7 rounds in all, about 122 ring products per element.
Result: shares of the bit [x < 0], exact (no error) for every x in range.

Reciprocal 1/x for x in a declared interval [lo, hi], 0 < lo: compare x with
every power of two in [lo, hi] at once (one comparison of a stacked array),
which places x in [2^e, 2^(e+1)); start from y0 = 0.75 / 2^e, so that
|1 - x y0| <= 1/2, and iterate Newton y <- y (2 - x y) (2 products each).
After 5 iterations the relative error of the iteration is below 2^-32; what
remains is fixed-point rounding: |y - 1/x^| <= 2^-f (4 + 2 / x^) for the
encoded input x^ (tested); quantising x itself adds up to 2^-(f+1) / x^2.

Inverse square root 1/sqrt(x) on [lo, hi] likewise: y0 = 0.8 / 2^(e/2)
(x y0^2 in [0.64, 1.28)), Newton y <- y (3 - (x y) y) / 2 (3 products), 6
iterations; |y - 1/sqrt(x^)| <= 2^-f (4 + 2 / x^) (tested).

Both check their whole plan before they ask for a tuple: a finite domain
0 < lo < hi holding x's bound, lo >= 2^-(f-2), and every worst case of the
bracket and of the Newton products within the exact range (a product's
2f-bit intermediate below 2^62, as :func:`.arithmetic.mul` checks it: at
f = 16, 1.5 hi / lo < 2^30 for the reciprocal, 1.69 hi / lo < 2^30 for rsqrt),
so a domain they cannot handle costs no tuple and no round.

What each party learns: masked openings only (uniform c, Beaver differences).
"""

from __future__ import annotations

import math

import numpy as np

from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.mpc.arithmetic import mul, mul_public, mul_ring, open_all
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import TupleProvider
from invisible.protocols.mpc.shared import RANGE_BITS, SharedArray, check_range
from invisible.protocols.mpc.tuples import CMP_BITS, DIGIT_BITS

_ONE = np.uint64(1)
_LOW62 = np.uint64((1 << CMP_BITS) - 1)
_LOW63 = np.uint64((1 << 63) - 1)


def _ones(ctx: MpcContext, shape: tuple[int, ...]) -> np.ndarray:
    """Shares of the constant 1 (the leader holds it)."""
    return np.ones(shape, RING_DTYPE) if ctx.is_leader else np.zeros(shape, RING_DTYPE)


def public_less_than_shared(ctx: MpcContext, provider: TupleProvider, c0: np.ndarray,
                            bits: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Shares of [c0 < r0] for public c0 and the shared bits of r0 (step 4), as many bits as
    given (62, or fewer for a narrow comparison).

    Bit i gives lt_i = [c_i < r_i] = (1 - c_i) r_i and eq_i = 1 - (c_i XOR r_i), both
    linear in the shared r_i. A binary tree merges neighbours from the least significant
    bit up: (lt, eq) of a high part and a low part make lt_hi + eq_hi lt_lo and
    eq_hi eq_lo (lt_hi and eq_hi never both hold, so the sum is an OR): two products a
    merge, m - 1 merges, ceil(log2 m) rounds; at the root only lt is needed. (A prefix
    scan of the eq_i took about m log2 m products in as many rounds.)"""
    shape = c0.shape
    width = len(bits)
    public_bits = np.stack([(c0 >> np.uint64(i)) & _ONE for i in range(width)])
    shared_bits = np.stack(list(bits))
    lt = shared_bits * (_ONE - public_bits)  # (1 - c_i) r_i
    xor = shared_bits * (_ONE - np.uint64(2) * public_bits)  # r_i (1 - 2 c_i)
    if ctx.is_leader:
        xor = xor + public_bits
    eq = np.broadcast_to(_ones(ctx, shape), (width, *shape)) - xor  # 1 - (c_i XOR r_i)
    return _merge(ctx, provider, lt, eq)[0]


def _merge(ctx: MpcContext, provider: TupleProvider, lt: np.ndarray, eq: np.ndarray,
           extra: tuple[np.ndarray, np.ndarray] | None = None,
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """The binary tree of merges over the (lt, eq) parts, least significant first: shares of
    lt at the root, and of the product of the `extra` pair, computed in the tree's first
    round (a product that needs no round of its own)."""
    extra_product = None
    while lt.shape[0] > 1 or extra is not None:
        pairs = lt.shape[0] // 2
        lo, hi = slice(0, 2 * pairs, 2), slice(1, 2 * pairs, 2)
        last = lt.shape[0] == 2  # the root: eq_hi eq_lo is not needed
        left = [eq[hi]] if last else [eq[hi], eq[hi]]
        right = [lt[lo]] if last else [lt[lo], eq[lo]]
        flat_left = [a.reshape(-1) for a in left]
        flat_right = [b.reshape(-1) for b in right]
        if extra is not None:
            flat_left.append(extra[0].reshape(-1))
            flat_right.append(extra[1].reshape(-1))
        products = mul_ring(ctx, provider, np.concatenate(flat_left),
                            np.concatenate(flat_right))
        if extra is not None:
            extra_product = products[products.size - extra[0].size:].reshape(extra[0].shape)
            products = products[:products.size - extra[0].size]
            extra = None
        products = products.reshape(len(left) * pairs, *lt.shape[1:])
        merged_lt = lt[hi] + products[:pairs]
        merged_eq = None if last else products[pairs:]
        if lt.shape[0] % 2:  # the most significant part has no partner yet: it moves up
            merged_lt = np.concatenate([merged_lt, lt[-1:]])
            merged_eq = None if merged_eq is None else np.concatenate([merged_eq, eq[-1:]])
        lt = merged_lt
        eq = merged_eq if merged_eq is not None else eq[:0]
    return np.asarray(lt[0]), extra_product


def _digits_less_than(ctx: MpcContext, provider: TupleProvider, c0: np.ndarray,
                      one_hots: np.ndarray, extra: tuple[np.ndarray, np.ndarray] | None,
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """Shares of [c0 < r0] for public c0 and the one-hots of r0's 3-bit digits: each
    digit's lt_j = sum_{v > c_j} onehot_j[v] and eq_j = onehot_j[c_j] are local, so the
    tree merges m / 3 digits instead of m bits (a third of the products, two rounds fewer
    at 37 bits)."""
    digits, entries = one_hots.shape[0], one_hots.shape[1]
    bits = entries.bit_length() - 1
    public = np.stack([(c0 >> np.uint64(bits * j)) & np.uint64(entries - 1)
                       for j in range(digits)])  # (digits, *shape)
    values = np.arange(entries, dtype=RING_DTYPE).reshape(1, entries, *[1] * c0.ndim)
    above = (values > public[:, None]).astype(RING_DTYPE)
    lt = (one_hots * above).sum(axis=1, dtype=RING_DTYPE)
    eq = np.take_along_axis(one_hots, public[:, None].astype(np.intp), axis=1)[:, 0]
    return _merge(ctx, provider, lt, eq, extra)


def less_than_zero(ctx: MpcContext, provider: TupleProvider, x: SharedArray) -> np.ndarray:
    """Shares (integers 0/1) of [x < 0], exact, for every x in range."""
    z = x.share + np.uint64(1 << RANGE_BITS) if ctx.is_leader else x.share
    r, r_msb, r_high, *bits = provider.take("cmp", [x.shape]).all()
    (c,) = open_all(ctx, [z + r], "masked-comparison-input")
    c_msb = c >> np.uint64(63)
    carry = r_msb * (np.uint64(1) - np.uint64(2) * c_msb)
    if ctx.is_leader:
        carry = carry + c_msb
    borrow = public_less_than_shared(ctx, provider, c & _LOW62, bits)
    bit62 = np.uint64(2) * carry - r_high - borrow
    if ctx.is_leader:
        bit62 = bit62 + ((c & _LOW63) >> np.uint64(CMP_BITS))
    return _ones(ctx, x.shape) - bit62


def narrow_width(x: SharedArray) -> int:
    """The bits m a narrow comparison of x works on: |x| 2^f < 2^m, m a multiple of the
    digits' 3 bits (at most 60: beyond, the 62-bit comparison is as cheap)."""
    needed = max(1, math.ceil(math.log2(x.bound * 2.0**x.fractional_bits + 1)))
    return min(CMP_BITS - 2, DIGIT_BITS * -(-needed // DIGIT_BITS))


def _sign_parts(ctx: MpcContext, provider: TupleProvider, x: SharedArray,
                times: np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Steps 1-4 of `less_than_zero_narrow` up to the last XOR: shares of a = c_m XOR r_m,
    of the borrow, and of a `times` (when given, in the tree's first round)."""
    width = narrow_width(x)
    offset = np.uint64(1 << width)
    z = x.share + offset if ctx.is_leader else x.share
    r, r_top, one_hots = provider.take("cmp-digits", [x.shape, (width,)]).all()
    (c,) = open_all(ctx, [z + r], "masked-comparison-input")
    c_top = (c >> np.uint64(width)) & _ONE
    a = r_top * (_ONE - np.uint64(2) * c_top)  # c_m XOR r_m = r_m (1 - 2 c_m) + c_m
    if ctx.is_leader:
        a = a + c_top
    borrow, a_times = _digits_less_than(ctx, provider, c & (offset - _ONE), one_hots,
                                        None if times is None else (a, times))
    return a, borrow, a_times


def _narrow(x: SharedArray) -> bool:
    check_range(x.bound, x.fractional_bits, "narrow comparison")
    return x.bound * 2.0**x.fractional_bits < 2.0 ** narrow_width(x)


def less_than_zero_narrow(ctx: MpcContext, provider: TupleProvider, x: SharedArray,
                          ) -> np.ndarray:
    """Shares of [x < 0], exact, for |x| 2^f < 2^m with m from x's public bound (a multiple
    of 3): the prefix comparison runs over m / 3 digits instead of 62 bits:

    1. z = x + 2^m lies in [0, 2^(m+1)), and x < 0 exactly when bit m of z is 0.
    2. The dealer gives shares of a uniform r, of its bit m and of the one-hots of
       its 3-bit digits below bit m (a cmp-digits tuple).
    3. Open c = z + r (uniform). Modulo 2^(m+1), z = c - r, so bit m of z is
       c_m XOR r_m XOR [c mod 2^m < r mod 2^m] (the borrow out of the low m bits).
    4. The borrow by the tree of `_digits_less_than` (ceil(log2(m / 3)) rounds);
       the two XORs with one more product (a XOR b = a + b - 2ab).
    """
    if not _narrow(x):
        return less_than_zero(ctx, provider, x)
    a, borrow, _ = _sign_parts(ctx, provider, x)
    both = mul_ring(ctx, provider, a, borrow)
    bit = a + borrow - np.uint64(2) * both
    return _ones(ctx, x.shape) - bit


def times_negative(ctx: MpcContext, provider: TupleProvider, x: SharedArray) -> np.ndarray:
    """Shares of x [x < 0] = min(x, 0), exact, in the rounds of the comparison alone:
    [x < 0] = 1 - a - borrow + 2 a borrow, so x [x < 0] = x - a x - borrow x
    + 2 borrow (a x), where a x is computed in the tree's first round and borrow x,
    borrow (a x) in the round the last XOR took (one round fewer than the comparison
    and a product)."""
    if not _narrow(x):
        return mul_ring(ctx, provider, less_than_zero(ctx, provider, x), x.share)
    _, borrow, a_x = _sign_parts(ctx, provider, x, x.share)
    assert a_x is not None
    products = mul_ring(ctx, provider, np.concatenate([borrow, borrow]),
                        np.concatenate([x.share, a_x]))
    half = x.share.shape[0]
    return x.share - a_x - products[:half] + np.uint64(2) * products[half:]


def less_than(ctx: MpcContext, provider: TupleProvider, x: SharedArray, y: SharedArray,
              ) -> np.ndarray:
    """Shares of [x < y]."""
    return less_than_zero(ctx, provider, x - y)


def select(ctx: MpcContext, provider: TupleProvider, bit: np.ndarray, x: SharedArray,
           ) -> SharedArray:
    """bit * x for a shared 0/1 bit: exact (the bit has no fractional bits)."""
    return SharedArray(mul_ring(ctx, provider, bit, x.share), x.bound, x.fractional_bits,
                       ctx.is_leader)


def bracket(ctx: MpcContext, provider: TupleProvider, x: SharedArray, lo: float, hi: float,
            ) -> tuple[np.ndarray, list[int]]:
    """Shares of the one-hot [2^e <= x < 2^(e+1)] over e = floor(log2 lo) .. floor(log2 hi),
    stacked on a new first axis, for x in [lo, hi]; one stacked comparison."""
    exponents = list(range(math.floor(math.log2(lo)), math.floor(math.log2(hi)) + 1))
    thresholds = np.array([2.0**e for e in exponents[1:]])
    stacked = SharedArray(np.broadcast_to(x.share, (len(thresholds), *x.shape)).copy(),
                          x.bound, x.fractional_bits, ctx.is_leader)
    below = less_than_zero(ctx, provider, stacked - thresholds.reshape(-1, *[1] * len(x.shape)))
    # [x >= 2^e] for e = exponents[1:], and [x >= 2^e0] = 1 on the declared domain
    at_least = np.concatenate([_ones(ctx, (1, *x.shape)),
                               _ones(ctx, below.shape) - below])
    after = np.concatenate([at_least[1:], np.zeros((1, *x.shape), RING_DTYPE)])
    return at_least - after, exponents  # exactly one 1 per element: the bracket of x


def _exponent_guess(ctx: MpcContext, provider: TupleProvider, x: SharedArray, lo: float,
                    hi: float, guess: dict[int, float]) -> SharedArray:
    """sum_e [2^e <= x < 2^(e+1)] guess[e]."""
    one_hot, exponents = bracket(ctx, provider, x, lo, hi)
    f = x.fractional_bits
    weights = np.array([round(guess[e] * 2**f) for e in exponents], dtype=np.int64)
    shares = (one_hot * weights.view(RING_DTYPE).reshape(-1, *[1] * len(x.shape))).sum(
        axis=0, dtype=RING_DTYPE)
    return SharedArray(np.asarray(shares), max(guess.values()), f, ctx.is_leader)


def _check_domain(x: SharedArray, lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi) or x.bound > hi:
        raise ProtocolError("a declared domain 0 < lo < hi, finite, containing the value is "
                            "required")
    if lo < 2.0 ** -(x.fractional_bits - 2):
        raise ProtocolError(f"lo must be at least 2^-{x.fractional_bits - 2} at "
                            f"{x.fractional_bits} fractional bits")


def _check_worst_cases(x: SharedArray, hi: float, products: list[tuple[float, float]]) -> None:
    """Refuse, before any tuple is requested, a plan whose bracket (|x - 2^e| <= 2 hi) or
    any product of bounds (a, b) could leave the exact range; products are checked as
    :func:`.arithmetic.mul` checks them (a b 2^f: the ring product carries 2f bits)."""
    f = x.fractional_bits
    check_range(2 * hi, f, "bracket")
    for a, b in products:
        check_range(a * b * 2.0**f, f, "product")


def reciprocal(ctx: MpcContext, provider: TupleProvider, x: SharedArray, lo: float,
               hi: float, iterations: int = 5) -> SharedArray:
    """1/x for x in [lo, hi] (see the module docstring for the error bound)."""
    _check_domain(x, lo, hi)
    y_cap = 1.5 / lo  # every iterate: y0 <= 1.5 / lo and |1 - x y| <= 1/2 from the start
    _check_worst_cases(x, hi, [(hi, y_cap), (y_cap, 1.5)])
    e_min, e_max = math.floor(math.log2(lo)), math.floor(math.log2(hi))
    y = _exponent_guess(ctx, provider, x, lo, hi,
                        {e: 0.75 / 2.0**e for e in range(e_min, e_max + 1)})
    for _ in range(iterations):
        xy = mul(ctx, provider, SharedArray(x.share, hi, x.fractional_bits, x.leader),
                 SharedArray(y.share, y_cap, y.fractional_bits, y.leader))
        two_minus = (-SharedArray(xy.share, 1.5, xy.fractional_bits, xy.leader)) + 2.0
        y = mul(ctx, provider, SharedArray(y.share, y_cap, y.fractional_bits, y.leader),
                SharedArray(two_minus.share, 1.5, two_minus.fractional_bits, y.leader))
        y = SharedArray(y.share, y_cap, y.fractional_bits, y.leader)
    return SharedArray(y.share, 1.0 / lo, y.fractional_bits, y.leader)


def rsqrt(ctx: MpcContext, provider: TupleProvider, x: SharedArray, lo: float, hi: float,
          iterations: int = 6) -> SharedArray:
    """1/sqrt(x) for x in [lo, hi] (see the module docstring for the error bound)."""
    _check_domain(x, lo, hi)
    cap = 1.3 / math.sqrt(lo)  # every iterate: x y^2 in [0.64, 1.28) from the start
    _check_worst_cases(x, hi, [(hi, cap), (cap * hi, cap), (cap, 3.0)])
    e_min, e_max = math.floor(math.log2(lo)), math.floor(math.log2(hi))
    y = _exponent_guess(ctx, provider, x, lo, hi,
                        {e: 0.8 / 2.0 ** (e / 2) for e in range(e_min, e_max + 1)})
    f, leader = x.fractional_bits, x.leader
    for _ in range(iterations):
        y = SharedArray(y.share, cap, f, leader)
        # (x y) y, not x (y y): a rounding of y^2 would be multiplied by x.
        xy = mul(ctx, provider, SharedArray(x.share, hi, f, leader), y)
        xy2 = mul(ctx, provider, SharedArray(xy.share, cap * hi, f, leader), y)
        three_minus = -SharedArray(xy2.share, 3.0, f, leader) + 3.0
        y = mul_public(ctx, provider, mul(ctx, provider, y,
                                          SharedArray(three_minus.share, 3.0, f, leader)), 0.5)
    return SharedArray(y.share, 1.0 / math.sqrt(lo), f, leader)
