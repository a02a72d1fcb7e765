"""Count, sum, mean, variance and standard deviation of values split across parties.

Each computing party i holds rows of the same column and computes, in the
clear on its own data, n_i (rows), s_i (sum) and q_i (sum of squares). Then:

1. Each party secret-shares (n_i, s_i, q_i); the parties add the shares:
   shares of N, S and Q. Nobody learns another party's figures.
2. Normalise by the magnitude of N, without revealing it: one stacked
   comparison finds the one-hot bracket 2^e <= N < 2^(e+1); with it,
   u = N / 2^e in [1, 2), S' = S / 2^e and Q' = Q / 2^e (exact truncations
   by e bits, selected by the one-hot bits). Dividing first keeps the
   precision that a fixed-point 1/N (about 2^-20 for a million rows) would
   lose at f = 16.
3. 1/u by Newton on [1, 2]; mean = S' / u; E[x^2] = Q' / u;
   variance = E[x^2] - mean^2 (population variance, as numpy's default).
   With ddof = 1 the sample variance: variance x N / (N - 1), the factor
   computed as u / (u - d) with d = 2^-e selected by the same one-hot bits
   (d = 0 for e = 0, so a single row gives 0, not a division by zero), and
   1/(u - d) by Newton on [1/2, 2]. d is rounded to the fixed-point grid,
   so from N >= 2^(f+1) it is 0 and the factor 1: the correction is then
   below 2^-f relative, inside the error bound. The factor is at most 2
   (N = 2), so the variance error bound below doubles with ddof = 1.
   Error: count and sum are exact up to encoding (2^-(f+1) per party);
   1/u carries about 4 ulp, so |mean error| <= 2^-f (3 |mean| + 4) and
   |variance error| <= 2^-f (3 E[x^2] + 2 |mean| + 8) (tested on public data).
4. Open only what the job declares, to its recipient. The standard
   deviation is released as the variance (std = sqrt(variance) is a
   bijection on variance >= 0, so the recipient learns exactly the same);
   the recipient takes the square root.

What each party learns: masked openings only (Beaver differences, masked
comparison and truncation inputs); the recipient learns the declared outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.mpc.arithmetic import input_from, mul, mul_ring, truncate
from invisible.protocols.mpc.comparison import bracket, reciprocal
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import TupleProvider
from invisible.protocols.mpc.shared import SharedArray, check_range

OUTPUTS = ("count", "sum", "mean", "variance", "std")


def check_capacity(parties: int, bound: float, max_rows: int, fractional_bits: int) -> None:
    """Refuse, before anything runs, sizes whose sum of squares could leave the exact range
    (the largest value the protocol holds is the parties' summed Q <= parties x max_rows x
    bound^2)."""
    check_range(parties * max_rows * max(1.0, bound) ** 2, fractional_bits, "statistics")


def shared_totals(ctx: MpcContext, local: tuple[float, float, float] | None, bound: float,
                  max_rows: int, rng: Prg) -> SharedArray:
    """Step 1: shares of (N, S, Q) summed over the parties; `local` is this party's."""
    limit = max_rows * max(1.0, bound) ** 2
    total: SharedArray | None = None
    for owner in ctx.parties:
        mine = np.array(local) if ctx.me == owner and local is not None else None
        part = input_from(ctx, owner, mine, limit, (3,), rng)
        total = part if total is None else total + part
    assert total is not None
    return total


def statistics(ctx: MpcContext, provider: TupleProvider, totals: SharedArray, bound: float,
               max_rows: int, ddof: int = 0) -> SharedArray:
    """Steps 2-3: shares of (count, sum, mean, variance) from shares of (N, S, Q).

    The variance divides by N - ddof: ddof = 0 is the population variance, 1 the sample's.
    """
    if ddof not in (0, 1):
        raise ProtocolError("ddof must be 0 (population variance) or 1 (sample variance)")
    f = totals.fractional_bits
    max_count = max_rows * len(ctx.parties)
    count = SharedArray(totals.share[:1].copy(), float(max_count), f, ctx.is_leader)
    one_hot, exponents = bracket(ctx, provider, count, 1.0, float(max_count))
    if exponents[0] != 0:
        raise ProtocolError("a count bracket must start at 2^0")
    normalised = np.zeros(3, RING_DTYPE)
    for e, bit in zip(exponents, one_hot, strict=True):  # one round pair per exponent
        shifted = totals.share if e == 0 else truncate(ctx, provider, totals.share, e)
        normalised += mul_ring(ctx, provider, np.broadcast_to(bit, (3,)).copy(), shifted)
    # |S| / 2^e <= 2 |S| / N <= 2 bound, likewise Q, and u in [1, 2).
    u = SharedArray(normalised[:1].copy(), 2.0, f, ctx.is_leader)
    s_norm = SharedArray(normalised[1:2].copy(), 2.0 * bound, f, ctx.is_leader)
    q_norm = SharedArray(normalised[2:3].copy(), 2.0 * bound * bound, f, ctx.is_leader)
    inverse = reciprocal(ctx, provider, u, 1.0, 2.0)
    mean = mul(ctx, provider, s_norm, inverse)
    mean = SharedArray(mean.share, bound, f, ctx.is_leader)
    square_mean = mul(ctx, provider, q_norm, inverse)
    variance = SharedArray(square_mean.share, bound * bound, f, ctx.is_leader) - mul(
        ctx, provider, mean, mean)
    if ddof:
        variance = mul(ctx, provider, variance,
                       _sample_factor(ctx, provider, u, one_hot, exponents))
    result = np.concatenate([totals.share[:2], mean.share, variance.share])
    return SharedArray(result, max(float(max_count), max_count * bound, 2 * bound * bound), f,
                       ctx.is_leader)


def _sample_factor(ctx: MpcContext, provider: TupleProvider, u: SharedArray,
                   one_hot: np.ndarray, exponents: list[int]) -> SharedArray:
    """N / (N - 1) = u / (u - 2^-e) for 2^e <= N < 2^(e+1); 1 for N = 1 (e = 0)."""
    f = u.fractional_bits
    weights = np.array([0 if e == 0 else round(2.0 ** (f - e)) for e in exponents],
                       dtype=np.uint64)
    below = (one_hot * weights.reshape(-1, 1)).sum(axis=0, dtype=RING_DTYPE)
    inverse = reciprocal(ctx, provider, SharedArray(u.share - below, 2.0, f, ctx.is_leader),
                         0.5, 2.0)
    factor = mul(ctx, provider, u, inverse)  # in [1, 2]
    return SharedArray(factor.share, 2.0, f, ctx.is_leader)


#: With differential privacy: which of the moments (N, S, Q) each output is computed from.
MOMENTS_OF = {"count": (0,), "sum": (1,), "mean": (0, 1), "variance": (0, 1, 2),
              "std": (0, 1, 2)}


def moments_needed(declared: Sequence[str]) -> list[int]:
    """The moments (0: N, 1: S, 2: Q) that the declared outputs are computed from."""
    select_outputs(declared)  # refuses unknown outputs
    return sorted({m for name in declared for m in MOMENTS_OF[name]})


def moments_on_grid(column: np.ndarray, fractional_bits: int) -> np.ndarray:
    """This party's (N, S, Q) as ring elements on the grid, each value rounded to it first:
    N 2^f, the sum of rint(x 2^f), the sum of rint(x^2 2^f); exact integer sums, so one row
    added or removed moves them by at most :func:`moment_sensitivities` (a float sum's
    rounding would not keep that promise)."""
    scale = float(2**fractional_bits)
    values = np.rint(column * scale).astype(np.int64)
    squares = np.rint(np.square(column) * scale).astype(np.int64)
    moments = np.array([column.size << fractional_bits, values.sum(), squares.sum()],
                       dtype=np.int64)
    return moments.view(RING_DTYPE)


def moment_sensitivities(bound: float, fractional_bits: int) -> list[int]:
    """How far one row's value (|x| <= bound), replaced by another, moves each of N, S, Q on
    the grid: N not at all (the row count is public: receipts show it), S by 2B, Q by B^2
    (x^2 is in [0, B^2])."""
    scale = 2.0**fractional_bits
    return [0, 2 * math.ceil(bound * scale), math.ceil(bound * bound * scale)]


def finish_noised(moments: dict[int, float], declared: Sequence[str],
                  ddof: int = 0) -> dict[str, float]:
    """The declared outputs from noised moments, in the clear (post-processing: a count
    under 1 is taken as 1 for the divisions, a negative variance as 0)."""
    count = moments.get(0)
    divisor = max(count, 1.0) if count is not None else 1.0
    out = {}
    mean = moments[1] / divisor if 1 in moments else 0.0
    variance = 0.0
    if 2 in moments:
        variance = max(moments[2] / divisor - mean * mean, 0.0)
        if ddof:
            variance = variance * divisor / (divisor - 1) if divisor > 1 else 0.0
    for name in declared:
        if name == "count":
            out["count"] = float(round(moments[0]))
        elif name == "sum":
            out["sum"] = moments[1]
        elif name == "mean":
            out["mean"] = mean
        elif name == "variance":
            out["variance"] = variance
        else:
            out["std"] = math.sqrt(variance)
    return out


def select_outputs(declared: Sequence[str]) -> list[int]:
    """Which of (count, sum, mean, variance) to open for the declared outputs."""
    unknown = sorted(set(declared) - set(OUTPUTS))
    if unknown or not declared:
        raise ProtocolError(f"statistics outputs must be among {', '.join(OUTPUTS)}; "
                            f"got {', '.join(unknown) or 'none'}")
    wanted = {"count": 0, "sum": 1, "mean": 2, "variance": 3, "std": 3}
    return sorted({wanted[name] for name in declared})


def finish(opened: dict[int, float], declared: Sequence[str]) -> dict[str, float]:
    """The recipient's step 4: the declared outputs from the opened values."""
    names = {0: "count", 1: "sum", 2: "mean", 3: "variance"}
    values = {names[i]: v for i, v in opened.items()}
    out = {}
    for name in declared:
        if name == "std":
            out["std"] = math.sqrt(max(values["variance"], 0.0))
        elif name == "count":
            out["count"] = float(round(values["count"]))
        else:
            out[name] = values[name]
    return out
