"""`vertical_statistics` with differential privacy: clipped, noised moments of columns that
two institutions hold about the same people, charged at each owner.

Known answers against numpy at a rho so large the noise is below the error of the grid;
the noise's spread against the promise over repeated jobs (chi-square bounds at 10^-6);
values beyond their bound clipped, never refused; an alignment whose size its requester
was never told refused before anything is shared.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, LocalDataset, write_local_federation
from invisible.errors import ConfigError, PolicyError
from invisible.kinds.vertical_statistics import VerticalStatisticsParams
from invisible.metering.privacy import cost_units, noise_sigma
from invisible.protocols.mpc.vertical import Layout, decode_noised, noised_entries

ROWS = 300
BOUNDS = {"a": [10.0, 50.0], "b": [4.0]}


def tables(tmp: Path, beyond: bool = False) -> dict[str, np.ndarray]:
    """Two parties' columns about the same ROWS people (ids 0..ROWS-1, each in its own
    order), correlated across the parties."""
    rng = np.random.default_rng(7)
    x = rng.normal(2.0, 2.0, ROWS).clip(-10, 10)
    y = (5.0 * x + rng.normal(0, 5, ROWS)).clip(-50, 50)
    z = (0.3 * x + rng.normal(0, 1, ROWS)).clip(-4, 4)
    if beyond:
        y[0] = 400.0  # one value far beyond its bound of 50
    ids = np.arange(ROWS)
    for party, columns, order in (("a", (x, y), rng.permutation(ROWS)),
                                  ("b", (z,), rng.permutation(ROWS))):
        lines = ["id," + ",".join(f"c{i}" for i in range(len(columns)))]
        lines += [f"{ids[i]}," + ",".join(f"{c[i]:.17g}" for c in columns) for i in order]
        (tmp / f"{party}.csv").write_text("\n".join(lines) + "\n")
    return {"a": np.column_stack([x, y]), "b": z[:, None]}


def federation(tmp: Path, policy: dict | None = None):
    policy = policy or {"min_rows": 10, "rho_total": 1e12,
                        "allow": [{"requesters": ["*"], "kinds": ["*"], "columns": ["*"]}]}
    datasets = {
        "a": {"t": LocalDataset(tmp / "a.csv", {"id": "int", "c0": "float", "c1": "float"},
                                policy)},
        "b": {"t": LocalDataset(tmp / "b.csv", {"id": "int", "c0": "float"}, policy)},
    }
    return write_local_federation(tmp / "fed", ["a", "b"], datasets, dealers=["dealer"],
                                  limits={"rpc_timeout_s": 30.0})


COLUMNS = {"a": ["c0", "c1"], "b": ["c0"]}
BY_ID = {"a": ("t", "id"), "b": ("t", "id")}
ALL = ("count", "mean", "variance", "std", "covariance", "correlation")


def test_the_noised_moments_decode_to_numpy_statistics_when_the_noise_is_negligible(tmp_path):
    values = np.hstack(list(tables(tmp_path).values()))
    layout = federation(tmp_path)
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="common", release_size=True)
        result = fed.vertical_statistics("common", COLUMNS, outputs=ALL, dealer="dealer",
                                         bounds=BOUNDS, ddof=1, rho=1e9)
        spent = {p: nodes.nodes[p].ledger.privacy_spent("t") for p in ("a", "b")}
    assert spent == {"a": cost_units(1e9), "b": cost_units(1e9)}
    assert result.count == ROWS and result.rho == 1e9
    limits = np.array([10.0, 50.0, 4.0])
    # the grid's rounding (2^-17 of a bound per value) and the noise (sd noise_sd per sum
    # of value / bound): both far below these tolerances at rho 1e9
    assert result.noise_sd < 1e-3
    summary = result.summary()
    assert np.all(np.abs(summary["mean"].to_numpy() - values.mean(axis=0)) < 1e-3 * limits)
    assert np.all(np.abs(summary["std"].to_numpy() - values.std(axis=0, ddof=1))
                  < 1e-2 * limits)
    cov = np.cov(values, rowvar=False, ddof=1)
    assert np.all(np.abs(result.covariance.to_numpy() - cov) < 1e-2 * np.outer(limits, limits))
    assert np.max(np.abs(result.correlation.to_numpy() - np.corrcoef(values, rowvar=False))) \
        < 1e-2
    assert "computed from noised moments" in repr(result)
    for side in ("a", "b"):
        [done] = [r for r in result.receipts[side] if r["event"] == "finished"]
        assert done["body"]["rho"] == cost_units(1e9)


def test_each_noised_moment_has_the_spread_promised(tmp_path):
    values = np.hstack(list(tables(tmp_path).values()))
    layout = federation(tmp_path)
    runs = 50
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="common", release_size=True)
        means = np.array([fed.vertical_statistics("common", COLUMNS, outputs=["mean"],
                                                  dealer="dealer", bounds=BOUNDS,
                                                  rho=0.5).summary()["mean"].to_numpy()
                          for _ in range(runs)])
    # mean_j = bound_j S_j / N, S_j noised by each of the two owners with rho / 3 for one
    # person's value replaced: 2 on the reals, 2^17 + 2 on the truncated grid of 2^-16
    sigma = noise_sigma(0.5 / 3, 2**17 + 2) * 2.0**-16
    expected = math.sqrt(2) * sigma * np.array([10.0, 50.0, 4.0]) / ROWS
    # the three columns' noises are independent: their spreads pooled (3 (runs - 1) degrees
    # of freedom) tell sigma from sigma / sqrt 2 (one owner's noise only)
    pooled = float(np.sum(((means - means.mean(axis=0)) / expected) ** 2)) / (3 * (runs - 1))
    low, high = stats.chi2.ppf([1e-6, 1 - 1e-6], 3 * (runs - 1)) / (3 * (runs - 1))
    assert low < pooled < high
    assert np.all(np.abs(means.mean(axis=0) - values.mean(axis=0))
                  < 6 * expected / math.sqrt(runs))


def test_a_value_beyond_its_bound_is_clipped_and_the_job_never_refused(tmp_path):
    values = np.hstack(list(tables(tmp_path, beyond=True).values()))
    layout = federation(tmp_path)
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="common", release_size=True)
        with pytest.raises(PolicyError, match="beyond"):  # the plain job refuses: one bit
            fed.vertical_statistics("common", COLUMNS, outputs=["mean"], dealer="dealer",
                                    bounds=BOUNDS)
        noised = fed.vertical_statistics("common", COLUMNS, outputs=["mean"], dealer="dealer",
                                         bounds=BOUNDS, rho=1e9, job_id="clipped")
        [clipped] = [e for e in nodes.nodes["a"].ledger.entries()
                     if e.job_id == "clipped" and e.event == "clipped"]
    assert clipped.body["values"] == 1
    values[0, 1] = 50.0
    assert noised.summary()["mean"].to_numpy()[1] == pytest.approx(values[:, 1].mean(), abs=0.05)


def test_an_alignment_whose_size_was_not_released_is_not_noised(tmp_path):
    tables(tmp_path)
    layout = federation(tmp_path)
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="secret")
        with pytest.raises(ConfigError, match="a job with a privacy cost on alignment 'secret' "
                                              "needs its size released") as refused:
            fed.vertical_statistics("secret", COLUMNS, outputs=["mean"], dealer="dealer",
                                    bounds=BOUNDS, rho=1.0, job_id="on-secret")
        assert refused.value.receipts[0]["event"] == "refused"
        for party in ("a", "b"):  # refused before anything was reserved
            assert nodes.nodes[party].ledger.privacy_spent("t") == 0


def test_a_requirement_of_dp_is_met_and_every_column_needs_a_bound():
    inputs = {"a": {"dataset": "@x", "columns": ["c0"], "bounds": [1.0]},
              "b": {"dataset": "@x", "columns": ["c0"]}}
    with pytest.raises(ConfigError, match="party 'b' must give 'bounds' .* with 'rho'"):
        VerticalStatisticsParams.parse({"inputs": inputs, "outputs": ["correlation"],
                                        "dealer": "d", "rho": 1.0}, ("a", "b", "d"))
    plain = VerticalStatisticsParams.parse({"inputs": inputs, "outputs": ["correlation"],
                                            "dealer": "d"}, ("a", "b", "d"))
    assert plain.rho is None and plain.sigma is None
    with pytest.raises(ConfigError, match="needs more noise than the shares can hold"):
        VerticalStatisticsParams.parse({"inputs": {**inputs, "b": {**inputs["a"]}},
                                        "outputs": ["mean"], "dealer": "d", "rho": 1e-30},
                                       ("a", "b", "d"))


def test_the_entries_opened_are_only_those_the_outputs_need():
    assert noised_entries(frozenset({"count"}), 2) == [(0, 0)]
    assert noised_entries(frozenset({"mean"}), 2) == [(0, 0), (0, 1), (0, 2)]
    assert noised_entries(frozenset({"std"}), 2) == [(0, 0), (0, 1), (0, 2), (1, 1), (2, 2)]
    assert len(noised_entries(frozenset({"correlation"}), 3)) == 1 + 3 + 6
    layout = Layout((1, 1), (2.0, 3.0), 0, frozenset({"covariance", "correlation", "variance"}))
    # N = 4; S = (2, -2) in value / bound; Q = [[2, -1], [-1, 4]]
    opened = np.array([4.0, 2.0, -2.0, 2.0, -1.0, 4.0])
    out = decode_noised(layout, opened)
    assert out["variance"] == pytest.approx([4 * (2 - 1) / 4, 9 * (4 - 1) / 4])
    assert out["covariance"][0, 1] == pytest.approx(6 * (-1 + 1) / 4)
    assert set(out) == {"covariance", "correlation", "variance"}
    negative = decode_noised(Layout((1, 1), (1.0, 1.0), 0, frozenset({"std", "correlation"})),
                             np.array([4.0, 2.0, 0.0, 0.5, 3.0, 1.0]))
    assert negative["std"][0] == 0.0  # Q/N < (S/N)^2 from noise: variance 0, not NaN
    assert np.isnan(negative["correlation"][0, 1]) and negative["correlation"][1, 1] == 1.0
    assert np.nanmax(np.abs(negative["correlation"])) <= 1.0


def test_the_noised_shares_are_rerandomised_before_anything_is_opened(tmp_path, monkeypatch):
    """The dealer made the Gram tuples the output shares come from: with the recipient it
    could compute a party's share without noise, and so its noise, unless the shares are
    made fresh among the computing parties first (see arithmetic.rerandomise)."""
    from invisible.protocols.mpc import vertical

    tables(tmp_path)
    layout = federation(tmp_path)
    made_fresh = []
    real = vertical.rerandomise

    def spy(ctx, x, rng):
        made_fresh.append((ctx.me, x.share.shape))
        return real(ctx, x, rng)

    monkeypatch.setattr(vertical, "rerandomise", spy)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="common", release_size=True)
        fed.vertical_statistics("common", COLUMNS, outputs=["mean"], dealer="dealer",
                                bounds=BOUNDS, rho=1.0)
    assert sorted(made_fresh) == [("a", (4,)), ("b", (4,))]  # N and the three sums


def test_each_owner_draws_its_noise_for_the_entries_opened_with_rho_split_among_them(
        tmp_path, monkeypatch):
    """The sigma each owner passes its sampler, for each output set: rho split over k noised
    entries (k counted here by hand: 3 columns), sensitivity 2^17 + 2 on the 2^-16 grid."""
    from invisible.protocols.mpc import vertical

    tables(tmp_path)
    layout = federation(tmp_path)
    drawn = []
    real = vertical.discrete_gaussian

    def spy(prg, sigma, size):
        drawn.append((sigma, size))
        return real(prg, sigma, size)

    monkeypatch.setattr(vertical, "discrete_gaussian", spy)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="common", release_size=True)
        for outputs, k in ((["mean"], 3), (["std", "mean"], 6), (["correlation"], 9),
                           (["covariance", "count"], 9)):
            drawn.clear()
            fed.vertical_statistics("common", COLUMNS, outputs=outputs, dealer="dealer",
                                    bounds=BOUNDS, rho=0.5)
            sigma = (2**17 + 2) / math.sqrt(2 * 0.5 / k) * (1 + 2**-40)
            assert drawn == [(pytest.approx(sigma, rel=1e-12), k)] * 2, outputs  # each owner
    with pytest.raises(ConfigError, match="'rho' with only 'count' would be charged for "
                                          "nothing noised"):
        VerticalStatisticsParams.parse({"inputs": {
            "a": {"dataset": "@x", "columns": ["c0"], "bounds": [1.0]},
            "b": {"dataset": "@x", "columns": ["c0"], "bounds": [1.0]}},
            "outputs": ["count"], "dealer": "d", "rho": 1.0}, ("a", "b", "d"))
