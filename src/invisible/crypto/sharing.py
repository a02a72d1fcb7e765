"""Additive secret sharing over the ring Z_2^64 (numpy uint64, wrap-around).

A value x is split into n shares s_1..s_n, each uniform, with
s_1 + ... + s_n = x (mod 2^64). Any n - 1 shares are independent of x.
All operations act on whole arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from invisible.crypto.prg import Prg

RING_DTYPE = np.dtype(np.uint64)


def _as_ring(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype != RING_DTYPE:
        raise TypeError(f"ring elements must be uint64 arrays, got dtype {array.dtype}")
    return array


def share(values: np.ndarray, n_parties: int, rng: Prg) -> np.ndarray:
    """Split ring elements into n_parties additive shares, stacked on a new first axis."""
    secret = _as_ring(values)
    if n_parties < 2:
        raise ValueError("sharing needs at least 2 parties")
    shares = np.empty((n_parties, *secret.shape), dtype=RING_DTYPE)
    rng.fill_uint64(shares[:-1])  # n - 1 uniform shares
    # The last share closes the sum: x - (s_1 + ... + s_{n-1}) mod 2^64.
    shares[-1] = secret - shares[:-1].sum(axis=0, dtype=np.uint64)
    return shares


def reconstruct(shares: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Sum shares in the ring: arrays of one shape, or one array stacked on its first axis.

    Summed in place into a copy of the first: np.sum over a list stacks it first.
    """
    if len(shares) == 0:
        raise ValueError("reconstruct needs at least one share")
    total = np.array(_as_ring(shares[0]), dtype=RING_DTYPE)
    for part in shares[1:]:
        total += _as_ring(part)
    return total
