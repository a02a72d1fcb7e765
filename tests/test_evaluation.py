"""Metrics on shares (protocols/mpc/evaluation.py): known answers against numpy and
scikit-learn, the histogram exact by Hypothesis, every opening a masked value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from test_mpc import F, grpc_engine, inprocess_engine  # noqa: F401  (grpc_engine: a fixture)

from invisible.crypto.fixedpoint import decode
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import reconstruct
from invisible.errors import ProtocolError
from invisible.protocols.mpc.arithmetic import input_from
from invisible.protocols.mpc.evaluation import (
    LOG_LOSS_MAX_ERROR,
    SCORE_RANGE,
    SOFTPLUS_TAIL,
    histogram,
    input_labels,
    metrics,
)

MASKED = {"beaver-differences", "masked-truncation-input", "masked-comparison-input",
          "masked-bucket-input", "masked-bucket-low", "masked-bucket-high"}


def evaluate(engine, scores, labels, threshold=0.5, bins=4096, holder="p1", bound=64.0):
    def program(ctx, provider):
        z = input_from(ctx, "p0", scores if ctx.me == "p0" else None, bound, scores.shape,
                       Prg.from_os())
        mine = labels if ctx.me == holder else None
        y = input_labels(ctx, holder, mine, labels.size, Prg.from_os())
        return metrics(ctx, provider, z, y, holder, mine, threshold, bins, Prg.from_os()).share

    results = engine.run(program)
    opened = reconstruct(np.stack([results[p][0] for p in engine.parties]))
    for party in engine.parties:
        assert set(results[party][1].summary()) <= MASKED
    return decode(opened, F)


def exact_bound(scores, labels, bins):
    """The error bound the protocol states, from the same bins in the clear."""
    clipped = np.clip(np.round(scores * 2**F), -SCORE_RANGE * 2**F, SCORE_RANGE * 2**F - 1)
    index = ((clipped + SCORE_RANGE * 2**F) // (2 * SCORE_RANGE * 2**F / bins)).astype(int)
    pos = np.bincount(index[labels == 1], minlength=bins)
    neg = np.bincount(index[labels == 0], minlength=bins)
    return float((pos * neg).sum() / (2 * pos.sum() * neg.sum()))


def softplus_loss(scores, labels):
    return float(np.mean(np.logaddexp(0, scores) - labels * scores))


@pytest.mark.parametrize("parties", [2, 3])
def test_auc_accuracy_and_log_loss_match_scikit_learn_within_their_stated_errors(parties):
    rng = np.random.default_rng(7)
    labels = (rng.random(3000) < 0.25).astype(float)
    scores = rng.normal(-1.2, 1.0, 3000) + 1.5 * labels  # overlapping classes
    scores[:5] = [-20.0, 15.0, 30.0, -9.0, 8.5]  # beyond the histogram's range
    auc, bound, accuracy, loss = evaluate(inprocess_engine(parties), scores, labels, 0.3)
    truth = roc_auc_score(labels, scores)
    assert bound == pytest.approx(exact_bound(scores, labels, 4096), abs=2**-F)
    assert abs(auc - truth) <= bound + 2**-F and bound <= 1e-3
    assert accuracy == pytest.approx(accuracy_score(labels, scores >= np.log(0.3 / 0.7)),
                                     abs=2 * 2**-F)
    assert abs(loss - softplus_loss(scores, labels)) <= LOG_LOSS_MAX_ERROR
    assert abs(loss - log_loss(labels, 1 / (1 + np.exp(-scores)))) <= LOG_LOSS_MAX_ERROR


def test_over_grpc_with_ties_and_one_bin_per_half(grpc_engine):  # noqa: F811
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1], float)
    scores = np.array([-1.0, -1.0, 0.5, 0.5, 2.0, -3.0, 7.99, 7.99])
    auc, bound, accuracy, _ = evaluate(grpc_engine, scores, labels, bins=16)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=2**-F)  # ties count a half
    assert bound == pytest.approx(exact_bound(scores, labels, 16), abs=2**-F)
    assert accuracy == pytest.approx(0.625, abs=2**-F)


def test_scores_beyond_the_range_share_the_end_bins_as_ties_within_the_bound():
    labels = np.array([0, 1, 0, 1], float)
    scores = np.array([9.0, 20.0, -9.0, 0.0])  # 9 and 20 tie in the top bin, -9 in the bottom
    auc, bound, _, _ = evaluate(inprocess_engine(2), scores, labels, bins=16)
    assert (auc, bound) == (0.625, 0.125)  # exact 0.75: one pair of four counted a half


def test_a_large_mean_loss_keeps_its_stated_error():
    """The mean's factor 2^k / N encoded with f bits alone was off by 1.6e-3 here."""
    labels = (np.arange(251) == 0).astype(float)
    scores = np.full(251, 250.0)  # a mean loss of 249
    _, _, _, loss = evaluate(inprocess_engine(2), scores, labels, bins=16, bound=256.0)
    assert abs(loss - softplus_loss(scores, labels)) <= LOG_LOSS_MAX_ERROR


def test_the_log_loss_tail_interpolant_has_its_stated_error():
    a = np.linspace(0, SCORE_RANGE, 400001)
    tail = np.polynomial.Polynomial(SOFTPLUS_TAIL)(a / SCORE_RANGE)
    assert np.abs(tail - np.log1p(np.exp(-a))).max() < 7e-5
    assert np.log1p(np.exp(-SCORE_RANGE)) + 7e-5 + 2e-4 < LOG_LOSS_MAX_ERROR


def test_one_class_only_gives_auc_and_bound_zero_not_an_error():
    labels = np.zeros(20)
    auc, bound, accuracy, _ = evaluate(inprocess_engine(2), np.linspace(-2, 2, 20), labels)
    assert (auc, bound) == (0.0, 0.0) and accuracy == pytest.approx(0.5, abs=2**-F)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**10 - 1), st.booleans()), min_size=1, max_size=60),
       st.sampled_from([2, 3]), st.sampled_from([(4, 1), (16, 3), (64, 4)]))
def test_the_histogram_counts_every_value_in_its_bin_exactly(values, parties, shape):
    bins, shift = shape
    x = np.array([v for v, _ in values], dtype=np.uint64) % np.uint64(bins << shift)
    y = np.array([int(b) for _, b in values], dtype=np.uint64)
    engine = inprocess_engine(parties)

    def program(ctx, provider):
        share = lambda v: np.asarray(  # noqa: E731
            reconstruct_free_share(v, ctx.index, len(ctx.parties)))
        return histogram(ctx, provider, share(x), share(y), shift, bins)

    results = engine.run(program)
    negatives, positives = (reconstruct(np.stack([results[p][0][k] for p in engine.parties]))
                            for k in range(2))
    index = (x >> np.uint64(shift)).astype(int)
    assert negatives.tolist() == np.bincount(index[y == 0], minlength=bins).tolist()
    assert positives.tolist() == np.bincount(index[y == 1], minlength=bins).tolist()


def reconstruct_free_share(values, index, parties):
    """Additive shares of `values` from a generator every party seeds alike (a test's input)."""
    masks = np.random.default_rng(99).integers(0, 2**63, (parties - 1, values.size),
                                                dtype=np.uint64).reshape(parties - 1,
                                                                         *values.shape)
    if index < parties - 1:
        return masks[index]
    return values - masks.sum(axis=0, dtype=np.uint64)


def test_a_histogram_finer_than_the_fixed_point_allows_is_refused():
    with pytest.raises(ProtocolError, match="finer than"):
        evaluate(inprocess_engine(2), np.zeros(4), np.array([0, 1, 0, 1.0]), bins=2**20)
