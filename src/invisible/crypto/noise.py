"""Integer noise for differential privacy: the discrete Gaussian, drawn from a :class:`Prg`.

The discrete Gaussian N_Z(0, sigma^2) gives P(y) proportional to exp(-y^2 / (2 sigma^2))
for every integer y. Added to an integer query of L2 sensitivity D it satisfies
(D^2 / (2 sigma^2))-zero-concentrated DP (Canonne, Kamath and Steinke, "The discrete
Gaussian for differential privacy", NeurIPS 2020, Theorem 14): the same rho as the
continuous Gaussian, with no floating-point output whose low bits could leak the input
(Mironov's attack on floating-point Laplace noise).

Sampling is their Algorithm 3, over whole arrays:

1. t = floor(sigma) + 1; U uniform in [0, t) (rejection-sampled from 64-bit words, so
   exactly uniform); keep U with probability exp(-U/t);
2. V geometric, P(V = v) = (1 - e^-1) e^-v; X = U + t V (a discrete Laplace magnitude of
   scale t); a fair sign (the spare low bit of step 1's Bernoulli word), rejecting "-0";
3. keep Y = +-X with probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)).

Every random bit comes from the generator (AES-256-CTR), never from numpy's or Python's
statistical generators. The acceptance probabilities of steps 1 and 3, and the geometric of
step 2, are computed in double precision against 53-bit uniforms: each is within 2^-52 of
its exact value, so every outcome's probability is exact to that precision except beyond
about 9 sigma, where the acceptance probability falls under 2^-53 and outcomes (of total
probability below 2^-60) are drawn less often than they should be. That is the one
approximation, and it is stated where the guarantee is (:mod:`invisible.metering.privacy`).
"""

from __future__ import annotations

import math

import numpy as np

from invisible.crypto.prg import Prg

#: The largest sigma sampled: |noise| stays far below 2^62 (about 9 sigma in practice).
MAX_SIGMA = float(2**50)
_UNIT = 2.0**-53


def _uniform_open(words: np.ndarray) -> np.ndarray:
    """Floats uniform in (0, 1] from 64-bit words (their top 53 bits)."""
    return ((words >> np.uint64(11)).astype(np.float64) + 1.0) * _UNIT


def _below(words: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Bernoulli draws: True with `probability` (to within 2^-53), one word each."""
    return (words >> np.uint64(11)).astype(np.float64) * _UNIT < probability


def magnitude_bound(sigma: float) -> int:
    """No draw of :func:`discrete_gaussian` exceeds this in magnitude: U < t and V <= 36
    (a 53-bit uniform is at least 2^-53, and -ln 2^-53 < 37), so |Y| <= 37 t - 1."""
    return 37 * (math.floor(sigma) + 1)


def discrete_gaussian(prg: Prg, sigma: float, size: int) -> np.ndarray:
    """`size` independent draws of N_Z(0, sigma^2) as int64."""
    if not (isinstance(sigma, float | int) and math.isfinite(sigma) and 0 < sigma <= MAX_SIGMA):
        raise ValueError(f"sigma must be a finite number in (0, 2^50]; got {sigma!r}")
    if size < 0:
        raise ValueError("size must be non-negative")
    sigma = float(sigma)
    t = math.floor(sigma) + 1
    excess = 2**64 % t  # the top `excess` words would favour small residues: rejected
    limit = np.uint64(2**64 - excess) if excess else None
    centre, spread = sigma * sigma / t, 2.0 * sigma * sigma
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        # Step 1 on a batch (about 63% pass it, 40% of the batch pass all three), then
        # steps 2 and 3 on what passed: random words only for candidates still in play.
        # Batches of at most 2^15 candidates keep the temporaries in cache: 1.3x faster at
        # 10^6 draws than one batch for all (and no 100 MB of temporaries per call).
        batch = min(1 << 15, max(1024, int((size - filled) * 2.6)))
        first = prg.random_uint64((2, batch))
        u = first[0] % np.uint64(t)
        keep = _below(first[1], np.exp(u.astype(np.float64) * (-1.0 / t)))
        if limit is not None:
            keep &= first[0] < limit
        # The sign is the low bit of step 1's Bernoulli word, which reads its top 53 bits
        # only: uniform and independent of that draw, kept or not.
        u, negative = u[keep], (first[1][keep] & np.uint64(1)).astype(bool)
        second = prg.random_uint64((2, u.size))
        v = np.floor(-np.log(_uniform_open(second[0])))
        magnitude = u.astype(np.int64) + np.int64(t) * v.astype(np.int64)
        accept = ~(negative & (magnitude == 0))
        offset = magnitude - centre
        accept &= _below(second[1], np.exp(offset * offset * (-1.0 / spread)))
        kept = np.where(negative, -magnitude, magnitude)[accept]
        take = min(kept.size, size - filled)
        out[filled:filled + take] = kept[:take]
        filled += take
    return out
