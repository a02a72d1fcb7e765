"""Fixed-point encoding of real numbers into the ring Z_2^64.

A real x is encoded as round(x * 2^f) in two's complement (numpy int64 viewed
as uint64), with f fractional bits. Decoding reads the ring element as a
signed integer and divides by 2^f. The encoding error of one value is at most
2^-(f+1).

Inputs carry a declared bound B (|x| <= B). Additions stay exact while the
true sum stays below 2^63 / 2^f in magnitude; :func:`check_sum_capacity`
refuses a computation whose worst case (`terms` values of magnitude B) could
leave that range, before anything is encoded. :func:`encode` refuses values
outside the bound; :func:`encode_clipped` clips them to it (what jobs do, so
that the bound is not an oracle) and says how many it clipped. Nothing is
ever wrapped.
"""

from __future__ import annotations

import numpy as np

from invisible.crypto.sharing import RING_DTYPE

DEFAULT_FRACTIONAL_BITS = 16
MAX_FRACTIONAL_BITS = 40
_SIGNED_LIMIT = 2**63


class BoundError(ValueError):
    """A value or a worst-case result does not fit the declared bound."""


def check_fractional_bits(fractional_bits: int) -> int:
    if isinstance(fractional_bits, bool) or not isinstance(fractional_bits, int) or not (
        0 <= fractional_bits <= MAX_FRACTIONAL_BITS
    ):
        raise BoundError(f"fractional bits must be an integer from 0 to {MAX_FRACTIONAL_BITS}")
    return fractional_bits


def check_sum_capacity(bound: float, terms: int, fractional_bits: int) -> None:
    """Refuse a sum of `terms` values of magnitude <= bound that could overflow the ring."""
    check_fractional_bits(fractional_bits)
    if not (np.isfinite(bound) and bound > 0):
        raise BoundError("the bound must be a positive finite number")
    if terms < 1:
        raise BoundError("a sum needs at least one term")
    worst = terms * bound * 2.0**fractional_bits
    if worst >= _SIGNED_LIMIT:
        raise BoundError(
            f"{terms} terms of magnitude up to {bound:g} with {fractional_bits} fractional bits "
            f"could reach {worst:.3g} >= 2^63; lower the bound or the fractional bits"
        )


def encode(values: np.ndarray, bound: float, fractional_bits: int = DEFAULT_FRACTIONAL_BITS,
           ) -> np.ndarray:
    """Encode finite reals with |x| <= bound into ring elements (uint64)."""
    check_sum_capacity(bound, 1, fractional_bits)
    reals = np.asarray(values, dtype=np.float64)
    inside = np.abs(reals) <= bound  # False for NaN and for infinities too
    if not inside.all():
        outside = int(reals.size - np.count_nonzero(inside))
        raise BoundError(f"{outside} value(s) are not finite or exceed the declared bound {bound:g}")
    return _scale(reals, fractional_bits)


def encode_clipped(values: np.ndarray, bound: float,
                   fractional_bits: int = DEFAULT_FRACTIONAL_BITS) -> tuple[np.ndarray, int]:
    """Encode reals clipped to [-bound, bound]; the ring elements and how many were clipped.

    NaN cannot be clipped and is refused (datasets drop or refuse it when they load).
    """
    check_sum_capacity(bound, 1, fractional_bits)
    reals, clipped = clip_to_bound(values, bound)
    return _scale(reals, fractional_bits), clipped


def clip_to_bound(values: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    """The values as float64 clipped to [-bound, bound], and how many were clipped.

    Clipping, not refusing, keeps a refusal from being an oracle for one
    person's value. NaN cannot be clipped and is refused.
    """
    reals = np.asarray(values, dtype=np.float64)
    inside = np.abs(reals) <= bound
    clipped = int(reals.size - np.count_nonzero(inside))
    if clipped:
        if np.isnan(reals).any():
            raise BoundError("a value that is not a number cannot be clipped to a bound")
        reals = np.clip(reals, -bound, bound)
    return reals, clipped


def _scale(reals: np.ndarray, fractional_bits: int) -> np.ndarray:
    scaled = np.asarray(reals * float(2**fractional_bits))  # exact: a power of two; 0-d too
    np.rint(scaled, out=scaled)
    return scaled.astype(np.int64).view(RING_DTYPE)


def decode(elements: np.ndarray, fractional_bits: int = DEFAULT_FRACTIONAL_BITS) -> np.ndarray:
    """Decode ring elements (two's complement) into float64 reals.

    Exact up to one rounding: int64 -> float64 rounds once to 53 bits, and
    scaling by 2^-f is exact, so the result is the correctly rounded real.
    """
    check_fractional_bits(fractional_bits)
    signed = np.asarray(elements, dtype=RING_DTYPE).view(np.int64)
    return np.ldexp(signed.astype(np.float64), -fractional_bits)
