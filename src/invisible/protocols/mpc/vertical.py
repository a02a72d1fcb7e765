"""Means, variances, covariance and Pearson correlation of columns that different parties
hold about the same rows, on shares with a dealer.

The computing parties hold columns of the same N rows in the same order
(the rows of an alignment, :mod:`invisible.kinds.alignments`): party p holds
d_p columns, d = sum d_p in all, in the job's party order. N is known to every
computing party (it is the size of its own alignment). Every column j has a
public bound c_j on |x| (values beyond it were clipped, or the job refused).
With D = max(N - ddof, 1) the variance's divisor (ddof = 0: population,
1: sample; a single row gives 0, as the `statistics` kind):

1. Locally, in the clear and on its own columns only, each party computes
   the mean m_j and standard deviation s_j (divisor D) of each column, and
   the columns that later steps multiply:
   - standardised, for the correlation: z_j = (x_j - m_j) / (sigma_j sqrt(N)),
     sigma_j the population standard deviation; every z_j has norm 1, or is 0
     for a constant column (sigma_j at most 10^-12 max |x_j|: float64
     rounding, not spread);
   - scaled, for the covariance: w_j = (x_j - m_j) / (c_j sqrt(D)), of norm
     s_j / c_j <= sqrt(N / D) <= sqrt(2).
2. Each party secret-shares what it computed (:func:`.arithmetic.input_from`:
   a 32-byte seed per peer): the parties hold shares of the N x d matrices Z
   and W, of (m, s), and (from the leader) of N.
3. Products across parties: the Gram matrices Z^T Z (the correlation
   matrix) and W^T W (the covariance divided by c_a c_b), each with one
   gram tuple (:func:`.arithmetic.gram`): one opening of the masked matrix
   and one of the masked truncation input. By Cauchy-Schwarz every entry is
   at most 1 (at most 2 for W), which is the bound the range is checked
   against: so f = 24 fractional bits fit at any N.
4. Only the declared outputs are opened, to the job's recipient (or each
   party releases a uniformly random share of them to the requester): the
   upper triangles (with the diagonal) of the matrices, the means, the
   standard deviations (variance = s^2 is a bijection on s >= 0, so
   releasing s tells exactly the same), N. The covariance is opened as
   cov / (c_a c_b) and scaled by the public c_a c_b by whoever decodes it.

Error, at f fractional bits (tested against numpy): the inputs are rounded
to 2^-(f+1); so |mean error| and |std error| are at most 2^-(f+1) plus the
float64 rounding of the local computation (half an ulp of the value, which
exceeds 2^-(f+1) only beyond |value| ~ 2^28);
|correlation error| <= 2^-f (sqrt(N) + 1) + N 2^-(2f+2) (Cauchy-Schwarz
over the rounding of z, then one truncation): 6e-5 at N = 10^6 and f = 24;
|covariance error| <= c_a c_b (2^-f (sqrt(2N) + 1) + N 2^-(2f+1)).

What each party learns: N (it already knows it) and masked openings only
(the Gram differences X - B and truncation inputs are uniformly masked);
the recipient learns the declared outputs. The dealer learns the shapes
(N, d), nothing of the data.

With differential privacy (:func:`noised_moments`, `rho` of the job), the
neighbours are the tables with one person's values replaced in every
owner's columns (N public), so no statistic is computed on shares from a
party's own mean or deviation (they are exact local functions of the data):

1. Each party clips its columns to their bounds and scales them to
   u_j = x_j / c_j in [-1, 1], on the grid of :data:`NOISED_BITS` bits.
2. The parties share U (a seed per peer) and take one Gram matrix of
   [1 | U] (the column of ones is the public constant): G_00 = N, G_0j =
   S_j = sum u_j, G_jk = Q_jk = sum u_j u_k, each entry at most N.
3. Each party adds its own discrete Gaussian noise to its share of every
   entry the outputs need, then the shares are re-randomised among the
   computing parties (pairwise seeds the dealer never sees: with the
   recipient, the dealer that made the Gram tuples could otherwise compute
   each party's share without noise and so read its noise) (S for means; and the diagonal of Q for
   variances, or all of Q's upper triangle for covariances and
   correlations), with an equal share of rho: one person changes an entry
   by at most 2 on the reals, 2^(f+1) + 2 on the truncated grid. Only
   those entries are opened (with N), so each owner's noise alone makes
   the release rho-zCDP for its data.
4. The recipient computes the outputs from them in the clear
   (:func:`decode_noised`): mean c_j S_j / N, covariance c_j c_k (Q_jk -
   S_j S_k / N) / D, a negative variance taken as 0, a correlation clipped
   to [-1, 1].

The dealer must not collude with any computing party (as for every job with
a dealer: its tuples and an opened difference give that party's inputs);
with the requester alone it learns nothing, since the shares are made fresh
before they are opened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from invisible.crypto.noise import discrete_gaussian, magnitude_bound
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.mpc.arithmetic import gram, input_from, rerandomise
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import TupleProvider
from invisible.protocols.mpc.shared import SharedArray

OUTPUTS = ("count", "mean", "variance", "std", "covariance", "correlation")
#: Fractional bits: the Gram entries are bounded by 1 and 2 whatever N, so the range allows
#: many; 24 keeps the correlation error below 10^-4 up to N = 10^6.
FRACTIONAL_BITS = 24
#: Every |column bound| must be below this (the means and deviations are inputs of at most
#: sqrt(2) c_j, and must stay in the exact range at f = 24 with room to spare).
MAX_BOUND = 2.0**36
#: Fractional bits of the noised path: u in [-1, 1] at 2^-16, and N 2^32 < 2^62 allows up to
#: 2^30 rows.
NOISED_BITS = 16
#: How far one person's values move a noised Gram entry on the truncated grid: each rounded
#: u is at most 2^f, so a product moves by at most 2^(2f+1) before truncation and, the
#: truncation being monotone in its input, 2^(f+1) after it; 2 more units of margin.
NOISED_SENSITIVITY = 2 ** (NOISED_BITS + 1) + 2


@dataclass(frozen=True)
class Layout:
    """The public shape of a job: the columns each computing party holds (job order), their
    bounds, the variance's divisor rule and the declared outputs."""

    counts: tuple[int, ...]
    bounds: tuple[float, ...]
    ddof: int
    outputs: frozenset[str]

    def __post_init__(self) -> None:
        if len(self.bounds) != self.columns or not all(0 < c < MAX_BOUND for c in self.bounds):
            raise ProtocolError("every column needs a bound in (0, 2^36)")
        if min(self.counts, default=0) < 1 or self.ddof not in (0, 1) \
                or not self.outputs <= set(OUTPUTS) or not self.outputs:
            raise ProtocolError("vertical statistics need columns at every party, ddof 0 or 1 "
                                "and declared outputs among " + ", ".join(OUTPUTS))

    @property
    def columns(self) -> int:
        return sum(self.counts)

    @property
    def wants_deviations(self) -> bool:
        return bool({"variance", "std"} & self.outputs)

    def sizes(self) -> dict[str, int]:
        """How many values each block of the opened vector holds, in order."""
        d, triangle = self.columns, self.columns * (self.columns + 1) // 2
        wanted = {"count": 1, "mean": d, "std": d, "covariance": triangle,
                  "correlation": triangle}
        return {name: size for name, size in wanted.items()
                if name in self.outputs or (name == "std" and self.wants_deviations)}


@dataclass(frozen=True)
class LocalColumns:
    """Step 1 at one party: what it shares of its own columns."""

    means: np.ndarray
    deviations: np.ndarray
    standardised: np.ndarray
    scaled: np.ndarray


def local_columns(values: np.ndarray, bounds: Sequence[float], rows: int, ddof: int,
                  ) -> LocalColumns:
    """Step 1 on this party's (N, d_p) columns, clipped to their bounds already."""
    if values.ndim != 2 or values.shape[0] != rows:
        raise ProtocolError(f"a party's columns must have shape ({rows}, d)")
    divisor = max(rows - ddof, 1)
    means = values.mean(axis=0)
    centred = values - means
    squares = np.einsum("ij,ij->j", centred, centred)
    sigma = np.sqrt(squares / rows)
    spread = sigma > 1e-12 * np.abs(values).max(axis=0, initial=0.0)  # else constant
    with np.errstate(divide="ignore", invalid="ignore"):
        standardised = np.where(spread, centred / (sigma * math.sqrt(rows)), 0.0)
    limits = np.asarray(bounds, dtype=np.float64)
    scaled = centred / (limits * math.sqrt(divisor))
    return LocalColumns(means, np.sqrt(squares / divisor), standardised, scaled)


def vertical_statistics(ctx: MpcContext, provider: TupleProvider, layout: Layout, rows: int,
                        mine: LocalColumns | None, rng: Prg) -> SharedArray:
    """Steps 2-3: this party's shares of the declared outputs, as one flat vector in the
    order of :meth:`Layout.sizes` (matrices as their upper triangles, row by row)."""
    if len(layout.counts) != len(ctx.parties):
        raise ProtocolError("the layout names a column count for every computing party")
    if rows < 1:
        raise ProtocolError("vertical statistics need at least one row")
    f, n, d = ctx.fractional_bits, rows, layout.columns
    sizes = layout.sizes()
    starts = np.cumsum((0, *layout.counts))
    blocks: dict[str, SharedArray] = {}
    needs = {"correlation": "standardised", "covariance": "scaled"}
    for output, field in needs.items():
        if output not in sizes:
            continue
        parts = []
        for i, owner in enumerate(ctx.parties):
            width = layout.counts[i]
            own = getattr(mine, field) if ctx.me == owner and mine is not None else None
            # |z| <= 1 and |w| <= sqrt(2): each is at most its column's norm.
            parts.append(input_from(ctx, owner, own, 1.5, (n, width), rng).share)
        matrix = SharedArray(np.ascontiguousarray(np.concatenate(parts, axis=1)), 1.5, f,
                             ctx.is_leader)
        product = gram(ctx, provider, matrix, 2.0 if output == "covariance" else 1.0)
        upper = np.triu_indices(d)
        blocks[output] = SharedArray(np.ascontiguousarray(product.share[upper]),
                                     product.bound, f, ctx.is_leader)
    per_column = [name for name in ("mean", "std") if name in sizes]
    if per_column:
        values = []
        for i, owner in enumerate(ctx.parties):
            lo, hi = int(starts[i]), int(starts[i + 1])
            own = None
            if ctx.me == owner and mine is not None:
                own = np.stack([mine.means if name == "mean" else mine.deviations
                                for name in per_column])
            bound = math.sqrt(2.0) * max(layout.bounds[lo:hi], default=1.0)
            values.append(input_from(ctx, owner, own, bound, (len(per_column), hi - lo),
                                     rng).share)
        stacked = np.concatenate(values, axis=1)
        for k, name in enumerate(per_column):
            blocks[name] = SharedArray(np.ascontiguousarray(stacked[k]),
                                       math.sqrt(2.0) * max(layout.bounds), f, ctx.is_leader)
    if "count" in sizes:
        own_count = np.array([float(n)]) if ctx.is_leader else None
        blocks["count"] = input_from(ctx, ctx.parties[0], own_count, float(n), (1,), rng)
    flat = np.concatenate([blocks[name].share for name in sizes])
    bound = max([float(n)] * ("count" in sizes) + [math.sqrt(2.0) * max(layout.bounds), 2.0])
    return SharedArray(flat, bound, f, ctx.is_leader)


def decode_outputs(layout: Layout, opened: np.ndarray) -> dict[str, np.ndarray]:
    """The recipient's step 4: the declared outputs from the opened vector (decoded reals)."""
    sizes = layout.sizes()
    if opened.shape != (sum(sizes.values()),):
        raise ProtocolError("the opened outputs do not have the declared size")
    d = layout.columns
    found, start = {}, 0
    for name, size in sizes.items():
        found[name] = opened[start:start + size]
        start += size
    out: dict[str, np.ndarray] = {}
    upper = np.triu_indices(d)
    limits = np.asarray(layout.bounds)
    for name in ("covariance", "correlation"):
        if name in found:
            matrix = np.zeros((d, d))
            matrix[upper] = found[name]
            matrix = matrix + np.triu(matrix, 1).T
            if name == "covariance":
                matrix *= np.outer(limits, limits)
            else:  # a constant column has no correlation (numpy: NaN); its diagonal is 0
                constant = np.diag(matrix) < 0.5
                matrix[constant, :] = np.nan
                matrix[:, constant] = np.nan
                np.fill_diagonal(matrix, np.where(constant, np.nan, 1.0))
            out[name] = matrix
    if "mean" in found:
        out["mean"] = found["mean"]
    if "std" in found:
        deviations = np.maximum(found["std"], 0.0)
        if "std" in layout.outputs:
            out["std"] = deviations
        if "variance" in layout.outputs:
            out["variance"] = np.square(deviations)
    if "count" in found:
        out["count"] = np.rint(found["count"])
    return out


def noised_entries(outputs: frozenset[str], columns: int) -> list[tuple[int, int]]:
    """The entries of the Gram matrix of [1 | U] the noised path opens, (0, 0) = N first:
    S for means; and Q's diagonal (variances), or its upper triangle (covariances)."""
    entries = [(0, 0)]
    if outputs & {"mean", "variance", "std", "covariance", "correlation"}:
        entries += [(0, j) for j in range(1, columns + 1)]
    if outputs & {"covariance", "correlation"}:
        entries += [(j, k) for j in range(1, columns + 1) for k in range(j, columns + 1)]
    elif outputs & {"variance", "std"}:
        entries += [(j, j) for j in range(1, columns + 1)]
    return entries


def noised_moments(ctx: MpcContext, provider: TupleProvider, layout: Layout, rows: int,
                   scaled: np.ndarray | None, sigma: float, rng: Prg) -> SharedArray:
    """Steps 2-3 of the noised path: this party's shares of the entries of
    :func:`noised_entries`, its noise added to every one but N. `scaled` is this party's
    (N, d_p) columns clipped and divided by their bounds."""
    f, n = ctx.fractional_bits, rows
    entries = noised_entries(layout.outputs, layout.columns)
    most = len(ctx.parties) * magnitude_bound(sigma)
    if n < 1 or n * 2.0 ** (2 * f) >= 2.0**62:  # the Gram matrix's exact range, checked here
        raise ProtocolError(f"vertical statistics with noise take at most 2^30 rows; "
                            f"the alignment has {n}")  # before anything is shared
    if n * 2.0**f + most >= 2.0**62:
        raise ProtocolError(f"vertical statistics with noise: {n} rows and noise of sigma "
                            f"{sigma:.4g} leave the range of the shares; raise rho")
    ones = np.full((n, 1), 1 << f if ctx.is_leader else 0, dtype=RING_DTYPE)
    parts = [ones]  # the public constant 1: the leader's share is 1, the others' 0
    for i, owner in enumerate(ctx.parties):
        own = scaled if ctx.me == owner else None
        parts.append(input_from(ctx, owner, own, 1.0, (n, layout.counts[i]), rng).share)
    matrix = SharedArray(np.ascontiguousarray(np.concatenate(parts, axis=1)), 1.0, f,
                         ctx.is_leader)
    product = gram(ctx, provider, matrix, float(n))
    rows_of, columns_of = zip(*entries, strict=True)
    share = np.ascontiguousarray(product.share[list(rows_of), list(columns_of)])
    noise = discrete_gaussian(Prg.from_os(), sigma, len(entries) - 1)
    share[1:] += noise.view(RING_DTYPE)  # wraps modulo 2^64, as shares do
    # Fresh shares before anything is opened: the dealer made the tuples these shares came
    # from and, with the recipient, could otherwise tell each party's noise from its share.
    return rerandomise(ctx, SharedArray(share, n + most * 2.0**-f, f, ctx.is_leader), rng)


def decode_noised(layout: Layout, opened: np.ndarray) -> dict[str, np.ndarray]:
    """Step 4 of the noised path, in the clear: the declared outputs from the opened entries
    (decoded reals, in the order of :func:`noised_entries`)."""
    entries = noised_entries(layout.outputs, layout.columns)
    if opened.shape != (len(entries),):
        raise ProtocolError("the opened moments do not have the declared size")
    d, limits = layout.columns, np.asarray(layout.bounds)
    gram_matrix = np.zeros((d + 1, d + 1))
    for (j, k), value in zip(entries, opened, strict=True):
        gram_matrix[j, k] = gram_matrix[k, j] = value
    count = float(np.rint(gram_matrix[0, 0]))
    n = max(count, 1.0)
    divisor = max(count - layout.ddof, 1.0)
    sums = gram_matrix[0, 1:]
    out: dict[str, np.ndarray] = {"count": np.array([count])}
    out["mean"] = limits * sums / n
    products = gram_matrix[1:, 1:]
    covariance = np.outer(limits, limits) * (products - np.outer(sums, sums) / n) / divisor
    variance = np.maximum(np.diag(covariance), 0.0)
    out["variance"], out["std"] = variance, np.sqrt(variance)
    if layout.outputs & {"covariance", "correlation"}:
        np.fill_diagonal(covariance, variance)
        out["covariance"] = covariance
        spread = np.where(variance > 0, np.sqrt(variance), np.nan)  # none: no correlation
        correlation = np.clip(covariance / np.outer(spread, spread), -1.0, 1.0)
        np.fill_diagonal(correlation, spread / spread)
        out["correlation"] = correlation
    return {name: value for name, value in out.items() if name in layout.outputs}
