"""Shared fixed-point arrays and the operations that cost no communication.

A :class:`SharedArray` is one computing party's additive share (uint64, any
shape) of a real array encoded with f fractional bits, plus a public bound
on the magnitude of every element. Bounds are carried through every
operation; an operation whose worst case could leave the range where
truncation is exact (|x| 2^f < 2^62) is refused before it runs, never
wrapped.

Local operations: add and subtract (shared or public), multiply by a public
integer, sum along an axis, reshape, index. A public value is added by the
leader (the first computing party) only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from invisible.crypto.fixedpoint import encode
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError

#: Encoded magnitudes must stay below 2^62 for exact truncation (see arithmetic.truncate).
RANGE_BITS = 62


def check_range(bound: float, fractional_bits: int, what: str) -> None:
    if not np.isfinite(bound) or bound * 2.0**fractional_bits >= 2.0**RANGE_BITS:
        raise ProtocolError(
            f"{what}: the worst case {bound:.4g} with {fractional_bits} fractional bits leaves "
            f"the exact range (|x| 2^f < 2^{RANGE_BITS}); refused before it runs"
        )


@dataclass(frozen=True)
class SharedArray:
    share: np.ndarray
    bound: float = 0.0
    fractional_bits: int = 16
    leader: bool = False

    def __post_init__(self) -> None:
        if self.share.dtype != RING_DTYPE:
            raise ProtocolError("a share must be a uint64 array")
        check_range(self.bound, self.fractional_bits, "shared value")

    def __repr__(self) -> str:  # never show a share
        return f"SharedArray(shape={self.shape}, bound={self.bound:g}, f={self.fractional_bits})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.share.shape)

    def _like(self, share: np.ndarray, bound: float) -> SharedArray:
        return replace(self, share=share, bound=bound)

    def _public(self, value: float | np.ndarray) -> tuple[np.ndarray, float]:
        array = np.asarray(value, dtype=np.float64)
        bound = float(np.abs(array).max()) if array.size else 0.0
        return encode(np.broadcast_to(array, self.shape), max(bound, 1e-300),
                      self.fractional_bits), bound

    def __add__(self, other: SharedArray | float | np.ndarray) -> SharedArray:
        if isinstance(other, SharedArray):
            self._check_compatible(other)
            return self._like(self.share + other.share, self.bound + other.bound)
        encoded, bound = self._public(other)
        share = self.share + encoded if self.leader else self.share.copy()
        return self._like(share, self.bound + bound)

    def __neg__(self) -> SharedArray:
        return self._like(np.uint64(0) - self.share, self.bound)

    def __sub__(self, other: SharedArray | float | np.ndarray) -> SharedArray:
        return self + (-other if isinstance(other, SharedArray) else -np.asarray(other))

    def scale(self, factor: int) -> SharedArray:
        """Multiply by a public integer (exact, local)."""
        if isinstance(factor, bool) or not isinstance(factor, int | np.integer):
            raise ProtocolError("scale takes a public integer; use arithmetic.mul_public")
        return self._like(self.share * np.uint64(int(factor) % 2**64), self.bound * abs(int(factor)))

    def sum(self, axis: int | None = None) -> SharedArray:
        count = self.share.size if axis is None else self.share.shape[axis]
        return self._like(np.asarray(self.share.sum(axis=axis, dtype=RING_DTYPE)),
                          self.bound * count)

    def reshape(self, *shape: int) -> SharedArray:
        return self._like(self.share.reshape(*shape), self.bound)

    def __getitem__(self, index: int | slice | tuple[int | slice, ...]) -> SharedArray:
        return self._like(np.asarray(self.share[index]), self.bound)

    def _check_compatible(self, other: SharedArray) -> None:
        if other.fractional_bits != self.fractional_bits:
            raise ProtocolError("shared arrays with different fractional bits cannot be combined")
