"""Federated averaging of logistic regression, each round combined by a secure sum.

Parties P_1..P_n hold rows of the same d features and a 0/1 label. Public:
the schedule (:class:`Schedule`: rounds R, local epochs E, batch size B,
learning rate, L2 penalty, clip C, seed), d, and M, a bound on each party's
rows (the fixed-point range). The model w holds d weights and an intercept.

Setup: pairwise secrets with every peer (ephemeral X25519, one round;
:mod:`.seeds`). With public bounds B_j on the features (standardisation):
a masked sum of [n_i, sum_rows x, sum_rows x^2] (as in steps 3-4, with as
many fractional bits as the bounds leave room for, at most 24) gives every
party the pooled means and standard deviations, and each trains on
(x - mean) / std; the final model is turned back to the raw features.

Round r = 0 .. R-1, from the global model w_r, which every party holds
(w_0 = 0):

1. Locally, on its own rows only: the mean logistic loss L_i of w_r (capped
   at LOSS_CAP); then E epochs of mini-batch gradient descent with L2 from
   w_r, each epoch in an order drawn from (seed, party, round, epoch)
   (:func:`batch_order`): w_i. The update u_i = w_i - w_r is scaled down to
   L2 norm at most C (clipped before it is encoded: it never wraps).
2. A non-finite update or loss raises the party's flag; `check` runs the
   one-bit check of :mod:`.bound_check` (the caller refuses the job at every
   party alike if any flag is set): nothing of the round is released.
3. v_i = [n_i u_i, n_i, n_i L_i], fixed point with f fractional bits, plus
   this party's share of a pairwise zero-sharing fresh for the round (the
   seeds of step ``fedavg/round/<r>``; :func:`.secure_sum.mask_with`).
4. Every party sends its masked vector to every other and adds all of
   them: the totals [sum n_i u_i, N, sum n_i L_i].
5. w_{r+1} = w_r + sum n_i u_i / N; the loss of w_r is sum n_i L_i / N.

After the last round, one more masked sum of [n_i L_i(w_R), n_i] gives the
loss of the final model.

What each party learns: with standardisation, the pooled means and
standard deviations of the features; per round, the weighted average update
(so the next global model, which it needs to train on), the total rows N
and the weighted loss; for n >= 3 every masked vector it receives is uniformly
random given those totals. With n = 2 the totals give each party the
other's [n_j u_j, n_j, n_j L_j]: that is why the kind asks three parties
unless every policy allows two. The requester learns what the kind
releases (the final model, the losses, the rounds). Nothing is revealed
about any single row beyond what the averaged updates carry (no noise is
added: differential privacy is later work).

:func:`fedavg_plain` is the same algorithm in float64 without masks (the
reference the tests and the benchmark compare with).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from invisible.crypto.fixedpoint import check_sum_capacity, decode, encode
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.protocols.batches import mini_batches
from invisible.protocols.channel import Channel
from invisible.protocols.secure_sum import mask_with
from invisible.protocols.seeds import PairwiseSecrets, agree_pairwise_secrets

#: A party's mean loss is capped to this before it is summed (its fixed-point range).
LOSS_CAP = 64.0


@dataclass(frozen=True)
class Schedule:
    rounds: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    l2: float
    clip: float
    seed: int


@dataclass
class Round:
    """What every party learns in one round, and what it cost this party."""

    loss: float
    seconds: float
    bytes_sent: int


@dataclass
class Training:
    """The final model (d weights, then the intercept) and each round's figures; `losses`
    has R + 1 values: of w_0 .. w_R."""

    model: np.ndarray
    losses: list[float]
    rounds: list[Round] = field(default_factory=list)


def value_bound(max_rows: int, clip: float) -> float:
    """The largest |element| of v_i (step 3)."""
    return max_rows * max(clip, LOSS_CAP, 1.0)


def check_capacity(parties: int, max_rows: int, clip: float, fractional_bits: int) -> None:
    """Refuse, before anything runs, sums that could leave the ring."""
    check_sum_capacity(value_bound(max_rows, clip), parties, fractional_bits)


#: Fewer fractional bits than this for the pooled moments are refused (bounds too large).
MIN_MOMENT_BITS = 8


def moment_bits(parties: int, max_rows: int, bounds: Sequence[float]) -> int:
    """The fractional bits the pooled moments' sum can carry (at most 24): refused below
    MIN_MOMENT_BITS (BoundError)."""
    bound = max_rows * max(1.0, max(bounds) ** 2)
    for bits in range(24, MIN_MOMENT_BITS - 1, -1):
        if parties * bound * 2.0**bits < 2.0**62:
            return bits
    check_sum_capacity(bound, parties, MIN_MOMENT_BITS)  # raises, naming the worst case
    return MIN_MOMENT_BITS


def pooled_scaling(count: float, sums: np.ndarray, squares: np.ndarray,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Means and standard deviations from the pooled moments (a constant feature: 1)."""
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    spread = std > 1e-9 * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(spread, std, 1.0)


def raw_model(model: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A model of standardised features as one of the raw features."""
    weights = model[:-1] / std
    return np.concatenate([weights, [model[-1] - float(weights @ mean)]])


def batch_order(seed: int, party: str, round_: int, epoch: int, rows: int) -> np.ndarray:
    """The order of a party's rows in one local epoch (public: a function of the schedule)."""
    digest = hashlib.sha256(f"{seed}/{party}/{round_}/{epoch}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big")).permutation(rows)


def scores(features: np.ndarray, model: np.ndarray) -> np.ndarray:
    """The linear scores x w + b of every row."""
    return np.asarray(features @ model[:-1] + model[-1])


def probabilities(features: np.ndarray, model: np.ndarray) -> np.ndarray:
    """P(y = 1) of every row (a stable logistic function)."""
    return 0.5 * (1.0 + np.tanh(0.5 * scores(features, model)))


def mean_loss(features: np.ndarray, labels: np.ndarray, model: np.ndarray) -> float:
    """The mean logistic loss (log loss) of `model` on these rows."""
    z = scores(features, model)
    return float(np.mean(np.logaddexp(0.0, z) - labels * z)) if z.size else 0.0


def local_update(features: np.ndarray, labels: np.ndarray, model: np.ndarray,
                 schedule: Schedule, party: str, round_: int) -> np.ndarray:
    """Step 1: the clipped update u_i after E epochs of mini-batch gradient descent."""
    w = model.copy()
    rows = features.shape[0]
    for epoch in range(schedule.local_epochs):
        order = batch_order(schedule.seed, party, round_, epoch, rows)
        for batch in mini_batches(order, schedule.batch_size):  # a remainder joins the last
            x, y = features[batch], labels[batch]
            residual = probabilities(x, w) - y
            gradient = np.empty_like(w)
            gradient[:-1] = x.T @ residual / batch.size + schedule.l2 * w[:-1]
            gradient[-1] = residual.mean()
            w -= schedule.learning_rate * gradient
    update = w - model
    largest = float(np.abs(update).max()) if update.size else 0.0
    # Scaled: the plain sum of squares overflows from |u| ~ 1e154, and an update scaled by
    # clip / inf would come out as a silent 0.
    norm = largest * float(np.linalg.norm(update / largest)) if largest > 0 else 0.0
    if norm > schedule.clip:
        update *= schedule.clip / norm
        np.clip(update, -schedule.clip, schedule.clip, out=update)  # no ulp beyond the bound
    return update


def masked_total(channel: Channel, secrets: PairwiseSecrets, values: np.ndarray, bound: float,
                 fractional_bits: int, step: str) -> np.ndarray:
    """Steps 3-4: every party's `values` (|v| <= bound) summed, learned by every party."""
    masked = mask_with(channel, secrets, encode(values, bound, fractional_bits), step)
    channel.send_to_each(step, {peer: masked for peer in channel.peers})
    total = masked.copy()
    for peer in channel.peers:
        total += channel.recv_array(peer, step, RING_DTYPE, masked.shape)
    return decode(total, fractional_bits)


def fedavg(channel: Channel, features: np.ndarray, labels: np.ndarray, schedule: Schedule,
           max_rows: int, fractional_bits: int, check: Callable[[bool, int], None],
           on_round: Callable[[int, Round], None] | None = None,
           bounds: Sequence[float] | None = None) -> Training:
    """This party's side of the protocol (steps above); `check(flagged, round)` is step 2;
    `bounds` (public, |x_j| <= B_j, checked by the caller) ask for standardisation."""
    d = features.shape[1]
    rows = features.shape[0]
    if rows > max_rows or labels.shape != (rows,):
        raise ProtocolError("a party's rows exceed the job's max_rows or do not match labels")
    bound = value_bound(max_rows, schedule.clip)
    check_capacity(len(channel.parties), max_rows, schedule.clip, fractional_bits)
    secrets = agree_pairwise_secrets(channel, step="fedavg")
    model = np.zeros(d + 1)
    losses: list[float] = []
    rounds: list[Round] = []

    def combine(values: np.ndarray, step: str, limit: float = bound,
                bits: int = fractional_bits) -> np.ndarray:
        return masked_total(channel, secrets, values, limit, bits, step)

    mean, std = np.zeros(d), np.ones(d)
    if bounds is not None:
        moments = combine(np.concatenate([[rows], features.sum(axis=0),
                                          np.square(features).sum(axis=0)]), "fedavg/moments",
                          max_rows * max(1.0, max(bounds) ** 2),
                          moment_bits(len(channel.parties), max_rows, bounds))
        mean, std = pooled_scaling(moments[0], moments[1:d + 1], moments[d + 1:])
        features = (features - mean) / std

    for round_ in range(schedule.rounds):
        began, sent = time.perf_counter(), channel.stats.bytes_sent
        with np.errstate(all="ignore"):  # a non-finite result raises the flag below
            loss = min(mean_loss(features, labels, model), LOSS_CAP)
            update = local_update(features, labels, model, schedule, channel.party_id, round_)
        check(not (np.isfinite(update).all() and np.isfinite(loss)), round_)
        totals = combine(np.concatenate([rows * update, [rows, rows * loss]]),
                         f"fedavg/round/{round_}")
        count = totals[d + 1]
        model = model + totals[:d + 1] / count
        losses.append(float(totals[d + 2] / count))
        rounds.append(Round(losses[-1], time.perf_counter() - began,
                            channel.stats.bytes_sent - sent))
        if on_round is not None:
            on_round(round_, rounds[-1])
    final = min(mean_loss(features, labels, model), LOSS_CAP)
    check(not (np.isfinite(model).all() and np.isfinite(final)), schedule.rounds)
    totals = combine(np.array([rows * final, rows]), "fedavg/final-loss")
    losses.append(float(totals[0] / totals[1]))
    return Training(raw_model(model, mean, std), losses, rounds)


def fedavg_plain(data: Sequence[tuple[str, np.ndarray, np.ndarray]], schedule: Schedule,
                 standardize: bool = False) -> Training:
    """The same algorithm in float64, without masks or fixed point: (party, features,
    labels) per party, in job order."""
    d = data[0][1].shape[1]
    mean, std = np.zeros(d), np.ones(d)
    if standardize:
        pooled = np.concatenate([x for _, x, _ in data])
        mean, std = pooled_scaling(float(pooled.shape[0]), pooled.sum(axis=0),
                                   np.square(pooled).sum(axis=0))
        data = [(p, (x - mean) / std, y) for p, x, y in data]
    model = np.zeros(d + 1)
    total = sum(x.shape[0] for _, x, _ in data)
    losses = []
    for round_ in range(schedule.rounds):
        losses.append(sum(x.shape[0] * min(mean_loss(x, y, model), LOSS_CAP)
                          for _, x, y in data) / total)
        model = model + sum(x.shape[0] * local_update(x, y, model, schedule, party, round_)
                            for party, x, y in data) / total
    losses.append(sum(x.shape[0] * min(mean_loss(x, y, model), LOSS_CAP)
                      for _, x, y in data) / total)
    return Training(raw_model(model, mean, std), losses)
