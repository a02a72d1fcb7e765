"""Vertical statistics on shares: columns of the same rows held by different parties.

Known answers against numpy on the joined columns, within the error bounds
the protocol's docstring states; what is opened; both channels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mpc import grpc_engine, inprocess_engine  # noqa: F401  (grpc_engine: a fixture)

from invisible.crypto.fixedpoint import decode
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import reconstruct
from invisible.errors import ProtocolError
from invisible.protocols.mpc.vertical import (
    FRACTIONAL_BITS,
    OUTPUTS,
    Layout,
    decode_outputs,
    local_columns,
    vertical_statistics,
)

F = FRACTIONAL_BITS


def run(engine, blocks, bounds, ddof, outputs):
    """Every computing party's block of columns (same rows); the decoded outputs."""
    layout = Layout(tuple(b.shape[1] for b in blocks), tuple(bounds), ddof, frozenset(outputs))
    rows = blocks[0].shape[0]
    starts = np.cumsum([0] + [b.shape[1] for b in blocks])

    def program(ctx, provider):
        ctx.fractional_bits = F
        i = ctx.index
        mine = local_columns(np.clip(blocks[i], -np.array(bounds[starts[i]:starts[i + 1]]),
                                     np.array(bounds[starts[i]:starts[i + 1]])),
                             bounds[starts[i]:starts[i + 1]], rows, ddof)
        return vertical_statistics(ctx, provider, layout, rows, mine, Prg.from_os()).share

    results = engine.run(program)
    opened = reconstruct(np.stack([results[p][0] for p in engine.parties]))
    return decode_outputs(layout, decode(opened, F)), results


def expected(joined, ddof):
    return {"mean": joined.mean(axis=0), "std": joined.std(axis=0, ddof=ddof),
            "variance": joined.var(axis=0, ddof=ddof),
            "covariance": np.cov(joined, rowvar=False, ddof=ddof).reshape(joined.shape[1], -1),
            "correlation": np.corrcoef(joined, rowvar=False).reshape(joined.shape[1], -1)}


def assert_within_bounds(got, joined, bounds, ddof):
    rows = joined.shape[0]
    want = expected(joined, ddof)
    half_ulp = 2.0 ** -(F + 1)
    assert np.max(np.abs(got["mean"] - want["mean"])) <= half_ulp + 1e-12
    assert np.max(np.abs(got["std"] - want["std"])) <= half_ulp + 1e-12
    corr_bound = 2.0**-F * (math.sqrt(rows) + 1) + rows * 2.0 ** -(2 * F + 2)
    assert np.nanmax(np.abs(got["correlation"] - want["correlation"])) <= corr_bound
    c = np.asarray(bounds)
    cov_bound = np.outer(c, c) * (2.0**-F * (math.sqrt(2 * rows) + 1)
                                  + rows * 2.0 ** -(2 * F + 1))
    assert np.all(np.abs(got["covariance"] - want["covariance"]) <= cov_bound)
    assert np.allclose(got["variance"], np.square(got["std"]))


@settings(max_examples=15, deadline=None)
@given(parties=st.integers(2, 4), widths=st.lists(st.integers(1, 3), min_size=4, max_size=4),
       rows=st.integers(2, 300), ddof=st.sampled_from([0, 1]), seed=st.integers(0, 2**32 - 1),
       scale=st.floats(0.01, 1e5))
def test_every_output_matches_numpy_on_the_joined_columns(parties, widths, rows, ddof, seed,
                                                          scale):
    data = np.random.default_rng(seed)
    blocks = [data.normal(data.normal(scale=scale), scale, (rows, w)) for w in widths[:parties]]
    # Correlated across parties: the second party's first column follows the first's.
    blocks[1][:, 0] = 0.7 * blocks[0][:, 0] + 0.3 * blocks[1][:, 0]
    joined = np.concatenate(blocks, axis=1)
    bounds = list(np.abs(joined).max(axis=0) * data.uniform(1.0, 4.0, joined.shape[1]))
    got, _ = run(inprocess_engine(parties), blocks, bounds, ddof, OUTPUTS)
    assert_within_bounds(got, joined, bounds, ddof)
    assert got["count"].tolist() == [rows]


def test_only_masked_values_are_opened_and_the_dealer_sees_none(engine_over_both):
    data = np.random.default_rng(3)
    blocks = [data.normal(size=(500, 3)), data.normal(size=(500, 2)), data.normal(size=(500, 1))]
    blocks = blocks[:len(engine_over_both.parties)]
    joined = np.concatenate(blocks, axis=1)
    got, results = run(engine_over_both, blocks, [8.0] * joined.shape[1], 0,
                       ("correlation", "covariance", "mean"))
    assert np.max(np.abs(got["correlation"] - np.corrcoef(joined, rowvar=False))) < 1e-4
    assert set(got) == {"correlation", "covariance", "mean"}
    d = joined.shape[1]
    for party in engine_over_both.parties:
        summary = results[party][1].summary()
        # Two Gram products: each opens the masked N x d matrix and a masked d x d input.
        assert summary == {"beaver-differences": 2 * 500 * d, "masked-truncation-input": 2 * d * d}
    assert results["dealer"] == 2  # tuples served: one gram-trunc per product


@pytest.fixture(params=["inprocess-2", "inprocess-3", "grpc-3"])
def engine_over_both(request, grpc_engine):  # noqa: F811
    if request.param == "grpc-3":
        return grpc_engine
    return inprocess_engine(int(request.param.rsplit("-", 1)[1]))


def test_a_constant_column_has_no_correlation_as_in_numpy():
    data = np.random.default_rng(4)
    blocks = [np.column_stack([data.normal(size=50), np.full(50, 3.0)]), data.normal(size=(50, 1))]
    got, _ = run(inprocess_engine(2), blocks, [10.0, 10.0, 10.0], 0, ("correlation", "std"))
    with np.errstate(invalid="ignore", divide="ignore"):
        want = np.corrcoef(np.concatenate(blocks, axis=1), rowvar=False)
    assert np.array_equal(np.isnan(got["correlation"]), np.isnan(want))
    assert abs(got["correlation"][0, 2] - want[0, 2]) < 1e-4
    assert got["std"][1] == 0.0


def test_a_column_of_one_value_is_constant_despite_float_rounding():
    data = np.random.default_rng(5)
    blocks = [np.column_stack([data.normal(size=50), np.full(50, 0.3)]), data.normal(size=(50, 1))]
    got, _ = run(inprocess_engine(2), blocks, [10.0, 10.0, 10.0], 0, ("correlation",))
    assert np.isnan(got["correlation"][1]).all() and not np.isnan(got["correlation"][0, 2])


def test_a_single_row_has_variance_zero_with_either_divisor():
    blocks = [np.array([[2.0]]), np.array([[-1.0]])]
    for ddof in (0, 1):
        got, _ = run(inprocess_engine(2), blocks, [4.0, 4.0], ddof, ("variance", "covariance"))
        assert got["variance"].tolist() == [0.0, 0.0]
        assert np.array_equal(got["covariance"], np.zeros((2, 2)))


def test_a_layout_without_bounds_columns_or_outputs_is_refused():
    for counts, bounds, outputs in [((1, 1), (1.0,), {"mean"}), ((1, 0), (1.0,), {"mean"}),
                                    ((1, 1), (1.0, 2.0**36), {"mean"}),
                                    ((1, 1), (1.0, 1.0), set()),
                                    ((1, 1), (1.0, 1.0), {"median"})]:
        with pytest.raises(ProtocolError):
            Layout(counts, bounds, 0, frozenset(outputs))
