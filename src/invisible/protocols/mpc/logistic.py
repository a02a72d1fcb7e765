"""Logistic regression trained on secret shares: mini-batch gradient descent with L2, for
features that different parties hold about the same rows (vertical), with a dealer.

The computing parties hold columns of the same N rows in the same order (an
alignment); one of them (the label holder) holds the 0/1 labels. Public:
the schedule (:class:`Schedule`), each feature's bound B_j on |x|, and W, a
bound on every |weight| that the fixed-point range is planned for.

1. Each party secret-shares its columns (:func:`.arithmetic.input_from`: a
   seed per peer); the label holder shares y. A public column of ones
   (held by the leader) carries the intercept. The weights start at 0.
2. Per epoch, the batches are a permutation of the rows drawn from the
   job's seed (:func:`batch_order`), the same at every party: public.
3. Per batch B of b rows, on shares:
   - z = X_B w (a Beaver matrix product, truncated);
   - the sigmoid, clipped-linear: s = 0.5 + clip(z, -a, a) / 4 (a = 2 by
     default: SecretFlow's ``t1``, largest error 0.1192 at |z| = 2; a = 1.5
     stops at 0.125 and 0.875, largest error 0.125, and trained better
     models of default_credit, worse of breast: measured, see RESULTS.md),
     by one stacked exact comparison ([z < -a], [z > a], on as many bits as
     z's public bound needs) and one stacked selection. The 1/4 is never
     computed: 4 (s - y) = 2 + clip(z, -a, a) - 4 y is exact;
   - g = X_B^T 4 (s - y) (a Beaver matrix product, truncated);
   - w <- (1 - lr l2) w - (lr / 4b) g, the factor lr / 4b encoded with as
     many bits as g's bound leaves room for (about 40) and applied with one
     exact truncation.
   At each epoch's end w is clipped to [-W, W] (one stacked narrow
   comparison and selection on d + 1 values). Within an epoch a weight
   moves by at most lr B per step, so every range (and the comparison's
   width) is planned for W + steps lr B: exact, where weights beyond the
   planned bound made the comparison wrap silently. (Clipping after every
   step cost 8 of a step's 21 rounds.)
4. The weights stay shared: each party ends with its share of w.

What each party learns: only masked openings (Beaver differences, masked
truncation and comparison inputs), all uniformly random; nothing is opened
of X, y, z, s, r, g or w. The dealer learns the shapes.

:func:`train_plain` is the same algorithm in float64 (same batches, same
sigmoid): the reference the fixed-point result is compared with.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.batches import mini_batches
from invisible.protocols.mpc.arithmetic import (
    input_from,
    matmul,
    mul,
    mul_public,
    truncate,
)
from invisible.protocols.mpc.comparison import times_negative
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.evaluation import mean_rows
from invisible.protocols.mpc.provider import TupleProvider, TupleSpec
from invisible.protocols.mpc.shared import RANGE_BITS, SharedArray

#: The sigmoid's clipping interval, |z| <= 2 (t = 0.5 + z / 4 in [0, 1]), and its largest
#: error against the logistic function (at |z| = 2: 1 - 1 / (1 + e^-2)).
SIGMOID_LIMIT = 2.0
SIGMOID_MAX_ERROR = 1.0 - 1.0 / (1.0 + math.exp(-SIGMOID_LIMIT))


def sigmoid_max_error(limit: float) -> float:
    """The largest error of 0.5 + clip(z, -limit, limit) / 4 against the logistic function:
    at |z| = limit, or as |z| grows when limit < 2 (the flat parts stop short of 0 and 1)."""
    at_limit = abs(0.5 + limit / 4 - 1.0 / (1.0 + math.exp(-limit)))
    return max(at_limit, 0.5 - limit / 4)


@dataclass(frozen=True)
class Schedule:
    epochs: int
    batch_size: int
    learning_rate: float
    l2: float
    seed: int
    #: A public bound on every |weight|: weights are clipped to it at each epoch's end.
    weight_bound: float = 8.0
    #: A public bound on the rows (the ranges within an epoch are planned for it; None: the
    #: rows trained on).
    max_rows: int | None = None
    #: The sigmoid is 0.5 + clip(z, -a, a) / 4 for this a in (0, 2] (2: SecretFlow's t1).
    sigmoid_limit: float = SIGMOID_LIMIT


def batch_order(seed: int, epoch: int, rows: int) -> np.ndarray:
    """The order of the aligned rows in one epoch (public, the same at every party)."""
    digest = hashlib.sha256(f"vertical-lr/{seed}/{epoch}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big")).permutation(rows)


def batches(schedule: Schedule, rows: int, epoch: int) -> list[np.ndarray]:
    """The epoch's batches: a remainder joins the last full batch (see .batches)."""
    return mini_batches(batch_order(schedule.seed, epoch, rows), schedule.batch_size)


def sigmoid_t1(z: np.ndarray, limit: float = SIGMOID_LIMIT) -> np.ndarray:
    """The clipped-linear sigmoid 0.5 + clip(z, -limit, limit) / 4, in the clear (the
    reference); limit 2 is SecretFlow's t1."""
    return 0.5 + 0.25 * np.clip(np.asarray(z), -limit, limit)


def train_plain(features: np.ndarray, labels: np.ndarray, schedule: Schedule) -> np.ndarray:
    """The same algorithm in float64: d weights, then the intercept."""
    x = np.column_stack([features, np.ones(features.shape[0])])
    w = np.zeros(x.shape[1])
    for epoch in range(schedule.epochs):
        for rows in batches(schedule, x.shape[0], epoch):
            residual = sigmoid_t1(x[rows] @ w, schedule.sigmoid_limit) - labels[rows]
            w = (1.0 - schedule.learning_rate * schedule.l2) * w \
                - schedule.learning_rate / rows.size * (x[rows].T @ residual)
        w = np.clip(w, -schedule.weight_bound, schedule.weight_bound)
    return w


def taylor_loss_plain(features: np.ndarray, labels: np.ndarray, w: np.ndarray) -> float:
    """The quadratic approximation of the mean log loss the protocol computes, in the clear:
    log 2 - (y - 1/2) z + z^2 / 8 (exact at z = 0; within 0.005 for |z| <= 1)."""
    z = features @ w[:-1] + w[-1]
    return float(np.mean(math.log(2.0) - (labels - 0.5) * z + z * z / 8.0))


def taylor_loss(ctx: MpcContext, provider: TupleProvider, x: np.ndarray, y: SharedArray,
                w: SharedArray, feature_bound: float) -> SharedArray:
    """Shares of the mean over all rows of log 2 - (y - 1/2) z + z^2 / 8, z = X w: one matrix
    product, one stacked elementwise product, and the mean (:func:`.evaluation.mean_rows`)."""
    f = ctx.fractional_bits
    rows = x.shape[0]
    z = matmul(ctx, provider, SharedArray(x, feature_bound, f, ctx.is_leader), w)
    z = SharedArray(z.share.ravel(), z.bound, f, ctx.is_leader)
    centred = SharedArray(y.share, 0.5, f, ctx.is_leader) - 0.5
    left = SharedArray(np.concatenate([centred.share, z.share]), z.bound, f, ctx.is_leader)
    right = SharedArray(np.concatenate([z.share, z.share]), z.bound, f, ctx.is_leader)
    products = mul(ctx, provider, left, right)  # (y - 1/2) z, z^2
    per_row = SharedArray(products.share[rows:] - np.uint64(8) * products.share[:rows],
                          z.bound**2 + 8 * z.bound, f, ctx.is_leader)
    return mean_rows(ctx, provider, per_row, 1.0 / 8.0) + math.log(2.0)


def share_features(ctx: MpcContext, counts: tuple[int, ...], feature_bound: float,
                   mine: np.ndarray | None, rows: int, rng: Prg) -> np.ndarray:
    """Step 1: shares of the (rows, d + 1) features, each party's columns in job order, then
    the public ones column of the intercept."""
    blocks = []
    for owner, width in zip(ctx.parties, counts, strict=True):
        own = mine if ctx.me == owner else None
        if width:
            blocks.append(input_from(ctx, owner, own, feature_bound, (rows, width), rng).share)
    ones = np.full((rows, 1), np.uint64(1 << ctx.fractional_bits) if ctx.is_leader
                   else np.uint64(0), dtype=RING_DTYPE)
    return np.ascontiguousarray(np.concatenate([*blocks, ones], axis=1))


def shared_scores(ctx: MpcContext, provider: TupleProvider, x: np.ndarray,
                  feature_bound: float, weights: np.ndarray, weight_bound: float,
                  ) -> SharedArray:
    """Shares of every row's score x w + b, from shared features (`share_features`) and this
    party's share of the d + 1 weights (one matrix product)."""
    f = ctx.fractional_bits
    w = SharedArray(np.ascontiguousarray(weights.reshape(-1, 1)), weight_bound, f,
                    ctx.is_leader)
    scores = matmul(ctx, provider, SharedArray(x, feature_bound, f, ctx.is_leader), w)
    return SharedArray(scores.share.ravel(), scores.bound, f, ctx.is_leader)


def train(ctx: MpcContext, provider: TupleProvider, counts: tuple[int, ...],
          bounds: tuple[float, ...], label_holder: str, rows: int, schedule: Schedule,
          mine: np.ndarray | None, labels: np.ndarray | None, rng: Prg,
          on_epoch: Callable[[int, SharedArray, np.ndarray, SharedArray], None] | None = None,
          ) -> SharedArray:
    """Steps 1-4: this party's shares of the weights (d, then the intercept).

    `counts`: the columns each computing party holds (job order); `bounds`: each column's
    bound; `mine`: this party's (rows, d_p) columns; `labels`: at the label holder only;
    `on_epoch(epoch, w, x, y)` after each epoch (x: the shared features with the ones)."""
    f = ctx.fractional_bits
    d = sum(counts)
    if len(counts) != len(ctx.parties) or len(bounds) != d or label_holder not in ctx.parties:
        raise ProtocolError("vertical training needs a column count per party, a bound per "
                            "column and a label holder among the parties")
    feature_bound = max(max(bounds), 1.0)
    x = share_features(ctx, counts, feature_bound, mine, rows, rng)
    y = input_from(ctx, label_holder, labels if ctx.me == label_holder else None, 1.0,
                   (rows,), rng)
    w_bound = schedule.weight_bound
    drifted = w_bound + drift(schedule, feature_bound, rows)  # any |weight| within an epoch
    w = SharedArray(np.zeros((d + 1, 1), RING_DTYPE), drifted, f, ctx.is_leader)
    decay = 1.0 - schedule.learning_rate * schedule.l2
    # The tuples a step takes depend on its batch's size alone: each step asks the dealer
    # for the next step's tuples first (as the first step of that size took them), so the
    # dealer makes them while the parties compute.
    sequences: dict[int, list[TupleSpec]] = {}
    for epoch in range(schedule.epochs):
        epoch_batches = batches(schedule, rows, epoch)
        sizes = [b.size for b in epoch_batches]  # every epoch's (the order differs)
        for i, batch in enumerate(epoch_batches):
            # The next step's batch: this epoch's next, else the next epoch's first (the
            # sizes repeat), and none after the last step of the last epoch.
            final = epoch + 1 == schedule.epochs and i + 1 == len(sizes)
            upcoming = 0 if final else sizes[(i + 1) % len(sizes)]
            if not provider.prefetched and batch.size in sequences:
                provider.prefetch(sequences[batch.size])  # this step's, the first time
            if upcoming in sequences:
                provider.prefetch(sequences[upcoming])
            with provider.record() as taken:
                w = _step(ctx, provider, x, y, w, batch, schedule, feature_bound, drifted,
                          decay)
            sequences.setdefault(batch.size, taken)
        w = _clip(ctx, provider, w, -w_bound, w_bound)
        if on_epoch is not None:
            on_epoch(epoch, w, x, y)
        w = SharedArray(w.share, drifted, f, ctx.is_leader)
    return SharedArray(w.share, w_bound, f, ctx.is_leader)


def _step(ctx: MpcContext, provider: TupleProvider, x: np.ndarray, y: SharedArray,
          w: SharedArray, batch: np.ndarray, schedule: Schedule, feature_bound: float,
          drifted: float, decay: float) -> SharedArray:
    """Step 3 on one batch: the weights after it."""
    f = ctx.fractional_bits
    xb = SharedArray(np.ascontiguousarray(x[batch]), feature_bound, f, ctx.is_leader)
    z = matmul(ctx, provider, xb, w)  # (b, 1)
    limit = schedule.sigmoid_limit
    clipped = _clip(ctx, provider, z, -limit, limit)
    # 4 (s - y) = 2 + clip(z, -a, a) - 4 y: exact, no truncation for the 1/4.
    residual = clipped + 2.0 - SharedArray(
        y.share[batch].reshape(-1, 1) << np.uint64(2), 4.0, f, ctx.is_leader)
    xt = SharedArray(np.ascontiguousarray(xb.share.T), feature_bound, f,
                     ctx.is_leader)
    gradient = matmul(ctx, provider, xt, residual)  # 4 X^T (s - y), (d + 1, 1)
    step = _scaled(ctx, provider, gradient, schedule.learning_rate / (4 * batch.size),
                   schedule.learning_rate * feature_bound)
    decayed = w if decay == 1.0 else mul_public(ctx, provider, w, decay)
    return SharedArray((decayed - step).share, drifted, f, ctx.is_leader)


#: The coarsest fixed point training runs at (f = 16): the slack of `drift` is in its ulps.
FRACTIONAL_SLACK_BITS = 16


def drift(schedule: Schedule, feature_bound: float, rows: int) -> float:
    """How far a weight can move within an epoch (it is clipped to weight_bound at each
    epoch's end): a step moves it by at most lr |mean of x_j r| <= lr B (|r| <= 1), and an
    epoch has at most max(1, rows // batch_size) steps (rows: schedule.max_rows if given)."""
    steps = max(1, (schedule.max_rows or rows) // schedule.batch_size)
    ulp = 2.0**-FRACTIONAL_SLACK_BITS
    # Fixed point may move a weight a little more a step: a feature encoded half an ulp
    # beyond its bound, and the step's and the decay's truncations one ulp each.
    return steps * (schedule.learning_rate * (feature_bound + ulp) + 4 * ulp)


def _scaled(ctx: MpcContext, provider: TupleProvider, x: SharedArray, factor: float,
            bound: float) -> SharedArray:
    """x times a small public factor, in one exact truncation: the factor is encoded with as
    many bits E as x's bound leaves room for (about 40 for a gradient), then E bits are
    truncated (a factor like lr / b encoded with f bits alone kept few significant ones)."""
    f = x.fractional_bits
    room = RANGE_BITS - 1 - math.log2(x.bound * 2.0**f * factor)
    bits = int(min(RANGE_BITS - 1, math.floor(room)))  # a truncation is by fewer than 62
    if bits < f:
        raise ProtocolError("a scaled product would leave the exact range")
    encoded = np.uint64(round(factor * 2.0**bits))
    return SharedArray(truncate(ctx, provider, x.share * encoded, bits), bound, f,
                       ctx.is_leader)


def _clip(ctx: MpcContext, provider: TupleProvider, w: SharedArray, low: float, high: float,
          ) -> SharedArray:
    """min(max(w, low), high) on shares: min(w - low, 0) and min(high - w, 0) stacked, in
    the rounds of one narrow comparison (`comparison.times_negative`)."""
    f = w.fractional_bits
    below = w - low  # < 0: too low
    above = -w + high  # < 0: too high
    both = np.concatenate([below.share, above.share])
    # [w < low] (w - low), [w > high] (high - w): min(., 0) of both, in the comparison's rounds
    moved = times_negative(ctx, provider, SharedArray(
        both, w.bound + max(abs(low), abs(high)), f, ctx.is_leader))
    half = w.share.shape[0]
    return SharedArray(w.share - moved[:half] + moved[half:], max(abs(low), abs(high)), f,
                       ctx.is_leader)
