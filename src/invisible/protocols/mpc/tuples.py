"""The dealer's tuple catalogue: every kind of correlated randomness, in one table.

A tuple is a list of components, arrays over Z_2^64. Its leading components
are uniformly random on their own (a and b of a triple, the mask of a
truncation or comparison), so every party's shares of them can be expanded
from a seed; the others depend on them and are computed by the dealer
(:mod:`.dealer`). Each entry of `CATALOGUE` says which shapes its components
have, how many of them are random, how the dealer fills in the rest, and
what the components hold.

Adding a tuple kind is one edit: its entry, with its fill function beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from invisible.crypto.prg import Prg
from invisible.crypto.ring import ring_matmul
from invisible.errors import ProtocolError
from invisible.protocols.mpc.shared import RANGE_BITS

#: Comparison tuples share the low 62 bits of r one by one (values live below 2^62).
CMP_BITS = 62
_LOW_MASK = np.uint64((1 << 63) - 1)
Shape = tuple[int, ...]


@dataclass(frozen=True)
class TupleKind:
    """One kind of tuple, as the dealer makes it and the parties consume it."""

    name: str
    #: The shapes of the components, from the requested shapes; None if those don't fit.
    shapes: Callable[[Sequence[Shape]], list[Shape] | None]
    #: How many leading components are uniformly random on their own.
    random: int
    #: Computes the dependent components in place: (components, fractional bits, the
    #: dealer's generator for any further randomness it draws).
    fill: Callable[[Sequence[np.ndarray], int, Prg], None]
    #: What the components hold.
    doc: str


def _elementwise(count: int) -> Callable[[Sequence[Shape]], list[Shape] | None]:
    """`count` components of the one requested shape."""
    return lambda shapes: [shapes[0]] * count if len(shapes) == 1 else None


def _matrix(extra: int) -> Callable[[Sequence[Shape]], list[Shape] | None]:
    """A (m, k), B (k, n), then 1 + `extra` components of shape (m, n)."""
    def shapes_of(shapes: Sequence[Shape]) -> list[Shape] | None:
        if len(shapes) != 2 or len(shapes[0]) != 2 or len(shapes[1]) != 2 \
                or shapes[0][1] != shapes[1][0]:
            return None
        out: Shape = (shapes[0][0], shapes[1][1])
        return [shapes[0], shapes[1]] + [out] * (1 + extra)
    return shapes_of


def _gram(extra: int) -> Callable[[Sequence[Shape]], list[Shape] | None]:
    """B (k, m), then 1 + `extra` components of shape (m, m)."""
    def shapes_of(shapes: Sequence[Shape]) -> list[Shape] | None:
        if len(shapes) != 1 or len(shapes[0]) != 2:
            return None
        out: Shape = (shapes[0][1], shapes[0][1])
        return [shapes[0]] + [out] * (1 + extra)
    return shapes_of


#: A digit comparison's digits have this many bits (one-hots of 2^3 = 8 entries).
DIGIT_BITS = 3


def _digit_cmp(shapes: Sequence[Shape]) -> list[Shape] | None:
    """r of shape s, then bit m of r (shape s), then the one-hots of r's m / DIGIT_BITS
    digits below bit m, stacked (m / DIGIT_BITS, 2^DIGIT_BITS, *s); asked for as
    [s, (m,)] with m a positive multiple of DIGIT_BITS below CMP_BITS."""
    if len(shapes) != 2 or len(shapes[1]) != 1:
        return None
    shape, width = tuple(shapes[0]), shapes[1][0]
    if not 0 < width < CMP_BITS or width % DIGIT_BITS:
        return None
    return [shape, shape, (width // DIGIT_BITS, 1 << DIGIT_BITS, *shape)]


def _bucket(shapes: Sequence[Shape]) -> list[Shape] | None:
    """r (n,), bits 0..m-1 of r (m, n), rho_low, rho_high (n,) and one-hot E_low (n, L),
    E_high (n, H); asked for as [(n, L), (n, H), (m,)] with L, H powers of two and
    log2 L < m < CMP_BITS."""
    if len(shapes) != 3 or len(shapes[0]) != 2 or len(shapes[1]) != 2 or len(shapes[2]) != 1:
        return None
    (rows, low), (rows_high, high), (bits,) = shapes
    if rows != rows_high or any(w < 2 or w & (w - 1) for w in (low, high)) \
            or not low.bit_length() - 1 < bits < CMP_BITS:
        return None
    return [(rows,), (bits, rows), (rows,), (rows,), (rows, low), (rows, high)]


def _truncation_values(r: np.ndarray, high: np.ndarray, low: np.ndarray, f: int) -> None:
    """From r: high = msb(r) 2^(63-f), low = ((r mod 2^63) >> f) + 2^(62-f)."""
    np.right_shift(r, np.uint64(63), out=high)
    high <<= np.uint64(63 - f)
    np.bitwise_and(r, _LOW_MASK, out=low)
    low >>= np.uint64(f)
    low += np.uint64(1 << (RANGE_BITS - f))


def _mask_product(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    """c (values[-3]) becomes c + r + 2^62 for a fresh r; values[-2:] r's truncation parts."""
    c = values[-3]
    r = rng.random_uint64(c.shape)
    _truncation_values(r, values[-2], values[-1], f)
    c += r
    c += np.uint64(1 << RANGE_BITS)


def _fill_triple(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    np.multiply(values[0], values[1], out=values[2])


def _fill_matrix(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    values[2][...] = ring_matmul(values[0], values[1])


def _fill_gram(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    b = values[0]
    values[1][...] = ring_matmul(np.ascontiguousarray(b.T), b)


def _fill_gram_trunc(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    _fill_gram(values, f, rng)
    _mask_product(values, f, rng)


def _fill_triple_trunc(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    _fill_triple(values, f, rng)
    _mask_product(values, f, rng)


def _fill_matrix_trunc(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    _fill_matrix(values, f, rng)
    _mask_product(values, f, rng)


def _fill_trunc(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    _truncation_values(values[0] - np.uint64(1 << RANGE_BITS), values[1], values[2], f)


def _low_bits(r: np.ndarray, bits: Sequence[np.ndarray]) -> None:
    """bits[i] = bit i of r, for i < len(bits)."""
    for i, out in enumerate(bits):
        np.bitwise_and(r >> np.uint64(i), np.uint64(1), out=out)


def _fill_cmp(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    r = values[0]
    np.right_shift(r, np.uint64(63), out=values[1])
    np.right_shift(r & _LOW_MASK, np.uint64(CMP_BITS), out=values[2])
    _low_bits(r, values[3:3 + CMP_BITS])


def _fill_digit_cmp(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    r, r_top, one_hots = values
    digits = one_hots.shape[0]
    np.bitwise_and(r >> np.uint64(digits * DIGIT_BITS), np.uint64(1), out=r_top)
    entries = np.arange(1 << DIGIT_BITS, dtype=np.uint64).reshape(
        1 << DIGIT_BITS, *[1] * r.ndim)
    for j in range(digits):
        digit = (r >> np.uint64(j * DIGIT_BITS)) & np.uint64((1 << DIGIT_BITS) - 1)
        one_hots[j] = entries == digit


def _one_hot(out: np.ndarray, index: np.ndarray) -> None:
    out[...] = 0
    out[np.arange(out.shape[0]), index.astype(np.intp)] = 1


def _fill_bucket(values: Sequence[np.ndarray], f: int, rng: Prg) -> None:
    r, bits, rho_low, rho_high, low, high = values
    width_low, width_high, total = low.shape[1], high.shape[1], bits.shape[0]
    shift = total - (width_low.bit_length() - 1)  # the digits: bits shift.. and total..
    _low_bits(r, list(bits))
    rho_low[...] = rng.random_uint64(rho_low.shape) & np.uint64(width_low - 1)
    rho_high[...] = rng.random_uint64(rho_high.shape) & np.uint64(width_high - 1)
    _one_hot(low, (rho_low + (r >> np.uint64(shift))) & np.uint64(width_low - 1))
    _one_hot(high, (rho_high + (r >> np.uint64(total))) & np.uint64(width_high - 1))


CATALOGUE: dict[str, TupleKind] = {kind.name: kind for kind in (
    TupleKind("triple", _elementwise(3), 2, _fill_triple,
              "a, b uniform; c = a b (elementwise)."),
    TupleKind("matrix", _matrix(0), 2, _fill_matrix,
              "A (m, k), B (k, n) uniform; C = A @ B."),
    TupleKind("trunc", _elementwise(3), 1, _fill_trunc,
              "r + 2^62 for a uniform r; msb(r) 2^(63-f), ((r mod 2^63) >> f) + 2^(62-f) for "
              "f fractional bits: what exact truncation consumes (arithmetic.truncate), the "
              "constants folded in so the parties don't add them."),
    TupleKind("triple-trunc", _elementwise(5), 2, _fill_triple_trunc,
              "A triple and a truncation tuple for its product in one: a, b uniform; "
              "c + r + 2^62 (c = a b, r drawn by the dealer) in place of c and of the mask, "
              "as the parties only ever use the product's share masked by r; then r's "
              "truncation components, as in trunc."),
    TupleKind("matrix-trunc", _matrix(2), 2, _fill_matrix_trunc,
              "A matrix triple and a truncation tuple for its product in one: A, B uniform; "
              "C + r + 2^62 (C = A @ B, r drawn by the dealer) in place of C and of the mask, "
              "as the parties only ever use the product's share masked by r; then r's "
              "truncation components, as in trunc."),
    TupleKind("gram", _gram(0), 1, _fill_gram,
              "B (k, m) uniform; C = B^T @ B: for the Gram matrix X^T X of one shared X, "
              "which opens X - B once where a matrix triple opens X^T - A and X - B."),
    TupleKind("gram-trunc", _gram(2), 1, _fill_gram_trunc,
              "A gram tuple and a truncation tuple for its product in one: B uniform; "
              "C + r + 2^62 (C = B^T @ B, r drawn by the dealer) in place of C; then r's "
              "truncation components, as in trunc."),
    TupleKind("cmp-digits", _digit_cmp, 1, _fill_digit_cmp,
              "r uniform; bit m of r; the one-hot of each 3-bit digit of r below bit m, "
              "stacked: a comparison of values below 2^m in magnitude merges m / 3 digits "
              "(local [c_j < r_j] and [c_j = r_j]) where cmp merges 62 bits."),
    TupleKind("bucket", _bucket, 1, _fill_bucket,
              "r uniform; bits 0..m-1 of r; rho_low uniform in [0, L), rho_high in [0, H); "
              "E_low one-hot at (rho_low + (r >> (m - log2 L))) mod L, E_high one-hot at "
              "(rho_high + (r >> m)) mod H: the two digits of each of n values' bin among "
              "L H bins (evaluation.histogram), the one-hots never opened."),
    TupleKind("cmp", _elementwise(3 + CMP_BITS), 1, _fill_cmp,
              "r uniform; msb(r), (r mod 2^63) >> 62, and bits 0..61 of r, one by one."),
)}


def component_shapes(kind: str, shapes: Sequence[Shape]) -> list[Shape]:
    """The shapes of a tuple's components, checked (see `CATALOGUE` for what they hold)."""
    entry = CATALOGUE.get(kind)
    parts = entry.shapes(shapes) if entry is not None else None
    if parts is None:
        raise ProtocolError(f"unknown tuple kind or shapes: {kind} {list(shapes)}")
    return parts


def random_components(kind: str) -> int:
    """How many leading components of a tuple of `kind` are uniformly random on their own."""
    entry = CATALOGUE.get(kind)
    if entry is None:
        raise ProtocolError(f"unknown tuple kind: {kind}")
    return entry.random
