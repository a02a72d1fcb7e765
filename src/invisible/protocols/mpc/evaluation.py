"""Metrics of a binary classifier on secret shares: AUC from a secret histogram of the
scores, accuracy at a threshold and the log loss, all three opened only as aggregates.

Inputs: every party's shares of the scores z (fixed point, f fractional
bits, a public bound), shares of the 0/1 labels y as integers, and at the
label holder the labels themselves (it knows them). N, the rows, is public
among the computing parties.

1. Comparisons, one stacked narrow comparison on 4N values:
   [z < -L], [z > L - 2^-f] (the histogram's range, L = 8), [z < theta]
   (theta = logit(threshold)) and [z < 0]. Then one stacked ring product
   of those bits (and y) with z: the clipped score z_c, |z_c|, relu(z),
   y [z < theta] and y z, all exact.
2. The histogram (:func:`histogram`): x = z_c + L lies in [0, 2^(s+b)) for
   K = 2^b bins of width 2^-(f-s) = 2L/K; each row goes to bin
   u = floor(x / 2^s) + K y of 2K (the label picks the half), taken as two
   digits u = h L' + l. With a bucket tuple per group of rows (r uniform,
   its low bits, rho_l and rho_h uniform, one-hots E_l at
   (rho_l + (r >> s)) mod L' and E_h at (rho_h + (r >> (s + a))) mod H'):
   - open c = x + r (uniform); the borrows beta = [c mod 2^s < r mod 2^s]
     and beta' (the same at s + a bits) by one stacked prefix comparison, so
     the digits of floor(x / 2^s) are exact;
   - open d_l = (rho_l - beta) mod L' and d_h = (H'/2 y - beta' + rho_h)
     mod H' (uniform, as rho_l and rho_h are);
   - row i's digit one-hots are E_l and E_h read at a public rotation, and
     the count of bin (h, l) is sum_i onehot_h[i, h] onehot_l[i, l]: one
     Beaver matrix product of the (H' x N) and (N x L') one-hots.
   The one-hots are never opened (only masked by the Beaver triple).
3. AUC. From the counts, U = sum_k n_k (2 P_k + p_k), P_k the positives in
   bins above k (local sums), counts every (positive, negative) pair in
   different bins exactly and a pair in one bin as a half; T = sum_k n_k p_k
   counts the pairs in one bin. The label holder inputs q = 2^60 / (2 P N-)
   (it knows its label counts; 0 when the rows hold one class), and
   AUC = U q / 2^60, its error bound T q / 2^60 = T / (2 P N-) are two ring
   products and one exact truncation. Scores beyond +-L share the end bins:
   the bound covers them.
4. Accuracy at the threshold: (sum_i y_i + b_i - 2 y_i b_i) / N with
   b_i = [z_i < theta], exact but for the 1-ulp truncation of the mean.
5. Log loss: softplus(z) - y z with softplus(z) = relu(z) + g(|z|),
   g(a) = log(1 + e^-a), g on [0, L] a degree-8 Chebyshev interpolant in
   a / L (error 6.7e-5) evaluated on |z_c| by Horner's rule on shares; for
   |z| > L, g(L) = 3.4e-4 stands in for g(|z|) < g(L). With f = 16 the
   rounding of 9 products adds at most 2e-4: stated error 7e-4 (tested).
6. Means as 2^k / N (encoded with up to 24 extra bits) then an exact k-bit
   truncation (:func:`mean_rows`).

Stated errors, against the same fixed-point scores: AUC within the released
bound plus 2^-16 (the last truncation); accuracy within 2^-15; log loss
within 7e-4.

What each party learns: masked openings only (the comparison's c, the
bucket's c and d, Beaver differences, masked truncation inputs), all
uniformly random; the histogram, the scores and the labels stay shared.
The outputs (AUC, its error bound, accuracy, log loss) are the declared
release. The dealer learns the shapes: N, K and the group sizes.
"""

from __future__ import annotations

import math

import numpy as np

from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.mpc.arithmetic import (
    input_from,
    matmul_ring,
    mul,
    mul_public,
    mul_ring,
    open_all,
    truncate,
)
from invisible.protocols.mpc.comparison import less_than_zero_narrow, public_less_than_shared
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import TupleProvider
from invisible.protocols.mpc.shared import RANGE_BITS, SharedArray, check_range

#: Scores are placed in bins over [-SCORE_RANGE, SCORE_RANGE); beyond, in the end bins.
SCORE_RANGE = 8.0
#: The most elements of one-hot rows a bucket tuple carries (32 MiB of uint64 shares).
GROUP_ELEMENTS = 1 << 22
#: AUC's scale: q = 2^AUC_BITS / (2 P N-) (so U q < 2^62, the exact truncation's range).
AUC_BITS = 60
#: g(a) = log(1 + e^-a) on [0, SCORE_RANGE] in t = a / SCORE_RANGE, coefficients of t^0..t^8.
SOFTPLUS_TAIL = np.polynomial.Chebyshev.interpolate(
    lambda t: np.log1p(np.exp(-SCORE_RANGE * t)), 8, domain=[0, 1]).convert(
    kind=np.polynomial.Polynomial).coef
#: The stated largest error of the log loss (interpolant 6.7e-5, g(L) beyond L 3.4e-4,
#: fixed-point rounding of the Horner steps at f = 16 below 2e-4).
LOG_LOSS_MAX_ERROR = 7e-4


def _scale_bits(value: float) -> int:
    return max(0, math.ceil(math.log2(value)))


def mean_rows(ctx: MpcContext, provider: TupleProvider, values: SharedArray,
              factor: float = 1.0) -> SharedArray:
    """Shares of factor x the mean of each row of a shared (m, N) matrix (or of a vector).

    Each value is multiplied by 2^k factor / N in [1, 2) first (so that a sum of N worst
    cases stays in range), the factor encoded with f + e bits (e extra bits as the values'
    bound leaves room for: with f bits alone, its rounding was a relative error of up to
    2^-17, 1.6e-3 on a mean loss of 250), truncated by f + e bits, summed, then truncated
    by k bits: two exact truncations."""
    rows = values.share.shape[-1]
    f = values.fractional_bits
    k = _scale_bits(rows / factor)
    extra = max(0, min(24, RANGE_BITS - 2 - 2 * f - _scale_bits(values.bound + 1)))
    scale = round(2.0**k * factor / rows * 2.0 ** (f + extra))
    check_range(values.bound * 2.0 ** (f + extra + 1), f, "mean")
    scaled = truncate(ctx, provider, values.share * np.uint64(scale), f + extra)
    total = scaled.sum(axis=-1, dtype=RING_DTYPE)
    return SharedArray(truncate(ctx, provider, np.asarray(total).reshape(-1), k),
                       values.bound * factor, f, ctx.is_leader)


def input_labels(ctx: MpcContext, holder: str, labels: np.ndarray | None, rows: int,
                 rng: Prg) -> np.ndarray:
    """Shares of the holder's 0/1 labels as ring integers (not fixed point)."""
    scale = 2.0 ** -ctx.fractional_bits  # encode() multiplies by 2^f: integers come out
    own = None if labels is None else np.asarray(labels, np.float64) * scale
    return input_from(ctx, holder, own, scale, (rows,), rng).share


def histogram(ctx: MpcContext, provider: TupleProvider, x: np.ndarray, labels: np.ndarray,
              shift: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: shares of (negatives per bin, positives per bin), K = `bins` each, for shared
    ring integers x in [0, bins 2^shift) and shared 0/1 integer labels.

    The bin u = floor(x / 2^s) + K y of 2K is taken as two digits, u = h L + l
    (L = 2^a low bins, H = 2K / L high ones), each with its own masked index and
    one-hot (one stacked prefix comparison gives both borrows: beta at s bits
    for l, beta' at s + a bits for h); the count of (h, l) is then the matrix
    product of the rows' high one-hots (transposed) and low one-hots, by a
    Beaver matrix product: a row costs H + L ring elements instead of 2K."""
    width = 2 * bins
    if bins < 2 or bins & (bins - 1) or not 1 <= shift < 62 or x.shape != labels.shape:
        raise ProtocolError("a histogram needs a power-of-two count of bins, a shift in "
                            "1..61 and a label per value")
    digits = width.bit_length() - 1
    low_bits = digits // 2
    low, high = 1 << low_bits, width >> low_bits
    total = shift + low_bits  # the bits of r the two borrows need
    counts = np.zeros((high, low), RING_DTYPE)
    group = max(1, GROUP_ELEMENTS // (low + high))
    for start in range(0, x.shape[0], group):
        xs, ys = x[start:start + group], labels[start:start + group]
        rows = xs.shape[0]
        r, bits, rho_low, rho_high, one_low, one_high = provider.take(
            "bucket", [(rows, low), (rows, high), (total,)]).all()
        (c,) = open_all(ctx, [xs + r], "masked-bucket-input")
        padded = np.concatenate([bits[:shift], np.zeros((low_bits, rows), RING_DTYPE)])
        borrows = public_less_than_shared(
            ctx, provider, np.concatenate([c & np.uint64((1 << shift) - 1),
                                           c & np.uint64((1 << total) - 1)]),
            np.concatenate([padded, bits], axis=1))
        beta, beta_high = borrows[:rows], borrows[rows:]
        (d_low,) = open_all(ctx, [(rho_low - beta) & np.uint64(low - 1)], "masked-bucket-low")
        (d_high,) = open_all(ctx, [(ys * np.uint64(high // 2) - beta_high + rho_high)
                                   & np.uint64(high - 1)], "masked-bucket-high")
        at_low = ((c >> np.uint64(shift)) + d_low) & np.uint64(low - 1)
        at_high = ((c >> np.uint64(total)) + d_high) & np.uint64(high - 1)
        counts += matmul_ring(ctx, provider,
                              np.ascontiguousarray(_rotate(one_high, at_high).T),
                              _rotate(one_low, at_low))
    flat = counts.reshape(-1)  # bin h L + l
    return flat[:bins], flat[bins:]


def _rotate(one_hot: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Row i of the result at k is row i of `one_hot` at (at_i - k) mod width: shares of the
    one-hot of at_i - (the tuple's index)."""
    width = one_hot.shape[1]
    columns = (at[:, None] - np.arange(width, dtype=RING_DTYPE)[None, :]) \
        & np.uint64(width - 1)
    return np.take_along_axis(one_hot, columns.astype(np.intp), axis=1)


def _auc(ctx: MpcContext, provider: TupleProvider, negatives: np.ndarray,
         positives: np.ndarray, holder: str, labels: np.ndarray | None, rng: Prg,
         ) -> SharedArray:
    """Step 3: shares of (AUC, its error bound) at f fractional bits."""
    f = ctx.fractional_bits
    above = np.cumsum(positives[::-1], dtype=RING_DTYPE)[::-1]  # positives in bins >= k
    above = np.concatenate([above[1:], np.zeros(1, RING_DTYPE)])
    pairs = mul_ring(ctx, provider, np.concatenate([negatives, negatives]),
                     np.concatenate([np.uint64(2) * above + positives, positives]))
    half = negatives.shape[0]
    u_and_t = np.array([pairs[:half].sum(dtype=RING_DTYPE), pairs[half:].sum(dtype=RING_DTYPE)])
    q_real = None
    if labels is not None:
        ones = int(np.count_nonzero(labels))
        product = 2 * ones * (labels.size - ones)
        q_real = np.array([2.0**AUC_BITS / product if product else 0.0]) * 2.0**-f
    q = input_from(ctx, holder, q_real, 2.0 ** (AUC_BITS - 1 - f), (1,), rng).share
    scaled = mul_ring(ctx, provider, u_and_t, np.concatenate([q, q]))
    return SharedArray(truncate(ctx, provider, scaled, AUC_BITS - f), 1.0, f, ctx.is_leader)


def _softplus_tail(ctx: MpcContext, provider: TupleProvider, t: SharedArray) -> SharedArray:
    """g(L t) for t in [0, 1] (step 5): Horner's rule, one product per degree."""
    coefficients = SOFTPLUS_TAIL[::-1]
    bound = float(np.abs(SOFTPLUS_TAIL).sum())
    f = t.fractional_bits
    value = mul_public(ctx, provider, t, float(coefficients[0])) + float(coefficients[1])
    for c in coefficients[2:]:
        value = mul(ctx, provider, SharedArray(value.share, bound, f, ctx.is_leader), t) \
            + float(c)
    return SharedArray(value.share, bound, f, ctx.is_leader)


def metrics(ctx: MpcContext, provider: TupleProvider, z: SharedArray, y: np.ndarray,
            holder: str, labels: np.ndarray | None, threshold: float, bins: int, rng: Prg,
            ) -> SharedArray:
    """Steps 1-6: shares of [AUC, AUC's error bound, accuracy, log loss] for shared scores
    `z` (N,) and integer label shares `y`; `labels` in the clear at the `holder` only."""
    f = z.fractional_bits
    rows = z.share.shape[0]
    if not 0 < threshold < 1 or y.shape != z.share.shape or rows == 0:
        raise ProtocolError("metrics need a threshold in (0, 1) and a label per score")
    limit, top = SCORE_RANGE, SCORE_RANGE - 2.0**-f
    theta = math.log(threshold / (1 - threshold))
    tests = [z + limit, -z + top, z - theta, z]  # < 0: below, above, predicted 0, negative
    bits = less_than_zero_narrow(ctx, provider, SharedArray(
        np.concatenate([v.share for v in tests]), z.bound + limit + abs(theta), f,
        ctx.is_leader))
    below, above, predicted_zero, negative = np.split(bits, 4)
    products = mul_ring(ctx, provider, np.concatenate([below, above, negative, y, y]),
                        np.concatenate([tests[0].share, tests[1].share, z.share,
                                        predicted_zero, z.share]))
    moved_up, moved_down, negative_z, y_below, y_z = np.split(products, 5)
    clipped = z.share - moved_up + moved_down  # clip(z, -L, L - 2^-f)
    magnitude = clipped - np.uint64(2) * (negative_z - moved_up)  # |z_c|: sign of z
    relu = z.share - negative_z
    # The histogram of the clipped scores, shifted to [0, 2L): x = z_c + L.
    shift = f + _scale_bits(2 * limit) - _scale_bits(bins)
    if shift < 1:
        raise ProtocolError(f"{bins} bins are finer than {f} fractional bits allow")
    offset = np.uint64(round(limit * 2**f)) if ctx.is_leader else np.uint64(0)
    negatives, positives = histogram(ctx, provider, clipped + offset, y, shift, bins)
    auc = _auc(ctx, provider, negatives, positives, holder, labels, rng)
    correct = y + predicted_zero - np.uint64(2) * y_below  # 0/1 integers
    tail = _softplus_tail(ctx, provider, SharedArray(
        truncate(ctx, provider, magnitude, _scale_bits(limit)), 1.0, f, ctx.is_leader))
    loss = SharedArray(relu + tail.share - y_z, z.bound + 1.0, f, ctx.is_leader)
    means = mean_rows(ctx, provider, SharedArray(
        np.stack([correct << np.uint64(f), loss.share]), loss.bound, f, ctx.is_leader))
    return SharedArray(np.concatenate([auc.share, means.share]), max(1.0, loss.bound), f,
                       ctx.is_leader)
