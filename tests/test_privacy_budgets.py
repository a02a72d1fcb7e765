"""Differential privacy: the noise sampler, the budgets an owner sets, and what they buy.

The sampler is tested against the exact discrete Gaussian (a chi-square test on a fixed
key, and its moments); budgets at their exact edges, under twenty concurrent jobs, across
a restart, and refused before any data is read; the differencing pair (a group's total,
then the same group less one row) comes out noised and charged, and the estimate of the
one row's value has the variance the budget promises.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from concurrent_admits import admit_at_once
from scipy import stats

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, LocalDataset, write_local_federation
from invisible.crypto.noise import discrete_gaussian, magnitude_bound
from invisible.crypto.prg import Prg
from invisible.errors import ConfigError, PolicyError
from invisible.kinds.secure_sum import SecureSumKind, SecureSumParams
from invisible.metering.ledger import Ledger
from invisible.metering.meter import JobMeta, Meter
from invisible.metering.metrics import NodeMetrics
from invisible.metering.policy import (
    Refusal,
    UseRequest,
    authorise,
    parse_policy,
    privacy_budgets,
    privacy_problem,
)
from invisible.metering.privacy import (
    budget_units,
    cost_units,
    describe,
    epsilon,
    noise_sigma,
)
from invisible.metering.report import report_rows, to_table
from invisible.metering.signing import generate_signing_key, load_signing_key
from invisible.node.config import load_party_config
from invisible.protocols.mpc.statistics import (
    finish_noised,
    moment_sensitivities,
    moments_needed,
    moments_on_grid,
)

KEY = bytes(range(32))


# --- the sampler --------------------------------------------------------------------------

def exact_pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    support = np.arange(-int(40 * sigma) - 2, int(40 * sigma) + 3)
    weights = np.exp(-(support.astype(np.float64) ** 2) / (2 * sigma * sigma))
    return support, weights / weights.sum()


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.5, 7.3])
def test_the_sampler_draws_the_exact_discrete_gaussian(sigma):
    draws = discrete_gaussian(Prg(KEY), sigma, 200_000)
    support, pmf = exact_pmf(sigma)
    counts = np.array([np.count_nonzero(draws == k) for k in support])
    expected = pmf * draws.size
    # Pool the tails so every cell expects at least 20 draws.
    inner = expected >= 20
    observed = np.append(counts[inner], counts[~inner].sum())
    wanted = np.append(expected[inner], expected[~inner].sum())
    _, p_value = stats.chisquare(observed, wanted)
    assert p_value > 1e-3  # a fixed key: this is one deterministic draw, well inside
    variance = float((pmf * support**2).sum())
    assert abs(draws.mean()) < 5 * math.sqrt(variance / draws.size)
    assert draws.var() == pytest.approx(variance, rel=0.02)


def test_large_sigmas_have_the_variance_and_the_bound_promised():
    for sigma in (1e3, 6.5e9, 2.0**50):
        draws = discrete_gaussian(Prg(KEY), sigma, 100_000)
        assert draws.dtype == np.int64
        assert draws.var() / sigma**2 == pytest.approx(1.0, rel=0.03)
        assert np.abs(draws).max() <= magnitude_bound(sigma)
        assert np.abs(draws).max() < 8 * sigma


def test_the_sampler_takes_every_bit_from_the_generator():
    assert np.array_equal(discrete_gaussian(Prg(KEY), 3.0, 1000),
                          discrete_gaussian(Prg(KEY), 3.0, 1000))
    assert not np.array_equal(discrete_gaussian(Prg(KEY), 3.0, 1000),
                              discrete_gaussian(Prg(bytes(32)), 3.0, 1000))
    assert discrete_gaussian(Prg(KEY), 3.0, 0).shape == (0,)


class Crafted:
    """A generator whose first draws are chosen (one word per row, repeated across the
    columns asked for: the sampler asks for two rows at a time), then a real one's."""

    def __init__(self, *draws: list[int]) -> None:
        self.draws = list(draws)
        self.real = Prg(KEY)

    def random_uint64(self, shape: tuple[int, int]) -> np.ndarray:
        if not self.draws:
            return self.real.random_uint64(shape)
        rows = np.array(self.draws.pop(0), dtype=np.uint64)
        return rows[:, None].repeat(shape[1], axis=1)


def test_words_that_would_bias_the_residue_are_thrown_away():
    # sigma 9.5: t = 10, and 2^64 - 1 is among the top 2^64 mod 10 words, which favour
    # small residues: (2^64 - 1) mod 10 = 5. Without the rejection every draw of the
    # crafted batch would be kept as +5 (V = 0, sign +, accepted).
    crafted = Crafted([2**64 - 1, 0], [2**64 - 1, 0])
    draws = discrete_gaussian(crafted, 9.5, 200)  # type: ignore[arg-type]
    assert np.count_nonzero(draws == 5) < 40  # about 8 expected from the real draws
    # 2^64 - 6, the first word thrown away, up to 2^64 - 2 (residue 4): thrown away too
    low = discrete_gaussian(Crafted([2**64 - 2, 0], [2**64 - 1, 0]), 9.5, 200)  # type: ignore[arg-type]
    assert np.count_nonzero(low == 4) < 40
    # the largest word kept: 2^64 - 7 is below 2^64 - (2^64 mod 10) = 2^64 - 6, so it is a
    # fair residue, 9: the whole crafted batch is kept as +9
    kept = discrete_gaussian(Crafted([2**64 - 7, 0], [2**64 - 1, 0]), 9.5, 200)  # type: ignore[arg-type]
    assert np.count_nonzero(kept == 9) == 200
    # 2^64 - 3 (residue 3) is thrown away too, though 2^65 mod 10 = 2 would keep it
    three = discrete_gaussian(Crafted([2**64 - 3, 0], [2**64 - 1, 0]), 9.5, 200)  # type: ignore[arg-type]
    assert np.count_nonzero(three == 3) < 40
    # the limit itself, 2^64 - 6 (residue 0), is the first word thrown away
    edge = discrete_gaussian(Crafted([2**64 - 6, 0], [2**64 - 1, 0]), 9.5, 200)  # type: ignore[arg-type]
    assert np.count_nonzero(edge == 0) < 40
    with pytest.raises(ValueError, match="^size must be non-negative$"):
        discrete_gaussian(Prg(KEY), 1.0, -1)


def test_the_uniform_of_the_geometric_step_is_in_0_1_with_its_ends_exact():
    from invisible.crypto.noise import _uniform_open

    words = np.array([0, 1 << 11, 2**64 - 1], dtype=np.uint64)
    assert _uniform_open(words).tolist() == [2.0**-53, 2.0**-52, 1.0]


def test_no_draw_passes_the_magnitude_bound_and_the_largest_reaches_it():
    # U = t - 1 kept, sign + (low bit 0), V = 36 (the smallest 53-bit uniform), accepted
    sigma = 9.5
    draws = discrete_gaussian(Crafted([9, 0], [0, 0]), sigma, 3)  # type: ignore[arg-type]
    assert draws.tolist() == [magnitude_bound(sigma) - 1] * 3
    negative = discrete_gaussian(Crafted([9, 1], [0, 0]), sigma, 3)  # type: ignore[arg-type]
    assert negative.tolist() == [1 - magnitude_bound(sigma)] * 3
    # at the largest sigma the draw needs 56 bits: computed in integers, exact
    largest = 2.0**50
    t = int(largest) + 1
    draws = discrete_gaussian(Crafted([t - 1, 0], [0, 0]), largest, 2)  # type: ignore[arg-type]
    assert draws.tolist() == [37 * t - 1] * 2 == [magnitude_bound(largest) - 1] * 2


@pytest.mark.parametrize("sigma", [0, -1.0, math.nan, math.inf, 2.0**50 + 2**30])
def test_a_sigma_that_is_not_a_positive_finite_number_is_refused(sigma):
    with pytest.raises(ValueError, match="sigma must be a finite number in"):
        discrete_gaussian(Prg(KEY), sigma, 10)


# --- units and accounting ---------------------------------------------------------------

def test_costs_round_up_and_budgets_round_down_to_whole_nano_rho():
    assert cost_units(0.1) == 100_000_000
    assert cost_units(1e-12) == 1  # never free
    assert cost_units(0.1000000001) == 100_000_001
    assert cost_units(0.10000000001) == 100_000_001  # charged up
    assert budget_units(0.10000000001, "b") == 100_000_000  # allowed down
    assert budget_units(1.9e-9, "b") == 1  # down, even past the half
    # 0.1 three times is exactly 0.3: no float sum refuses the third job
    assert 3 * cost_units(0.1) == budget_units(0.3, "b")


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, math.nan, math.inf, -math.inf, True, "0.1", None])
def test_a_privacy_parameter_that_is_not_positive_and_finite_is_refused(bad):
    with pytest.raises(ConfigError, match=r"^where must be a positive finite number \(a zCDP "
                                          r"rho\)$"):
        cost_units(bad, "where")
    with pytest.raises(ConfigError, match=r"^rho must be a positive finite number"):
        cost_units(bad)
    with pytest.raises(ConfigError, match=r"^where must be a positive finite number"):
        budget_units(bad, "where")


def test_a_job_s_rho_is_checked_with_its_parameters():
    inputs = {"a": {"dataset": "d", "column": "x"}, "b": {"dataset": "d", "column": "x"}}
    for bad in (0, -0.1, math.nan, math.inf):
        with pytest.raises(ConfigError, match="rho"):
            SecureSumParams.parse({"inputs": inputs, "bound": 10.0, "rho": bad}, ("a", "b"))
    with pytest.raises(ConfigError, match="an elementwise vector has no rows to protect"):
        SecureSumParams.parse({"inputs": inputs, "bound": 10.0, "rho": 0.5,
                               "elementwise": True, "length": 3}, ("a", "b"))
    grid = {"inputs": inputs, "bound": 2.0**24, "fractional_bits": 16}  # a bound of 2^40
    with pytest.raises(ConfigError, match="needs noise beyond 2\\^50"):
        SecureSumParams.parse({**grid, "max_rows": 1, "rho": 1e-9}, ("a", "b"))
    # the values alone fit (2 x (2^22 - 1) x 2^40 < 2^63), with the noise they might not
    SecureSumParams.parse({**grid, "max_rows": 2**22 - 1}, ("a", "b"))
    with pytest.raises(ConfigError, match="with the noise 'rho' 0.1 needs, the sum could "
                                          "reach 2\\^63"):
        SecureSumParams.parse({**grid, "max_rows": 2**22 - 1, "rho": 0.1}, ("a", "b"))
    SecureSumParams.parse({**grid, "max_rows": 2**21, "rho": 0.1}, ("a", "b"))


def test_sigma_is_what_rho_zcdp_needs_and_epsilon_is_dp_accounting_s():
    assert noise_sigma(0.5, 1000) == pytest.approx(1000.0, rel=1e-12)
    assert noise_sigma(0.5, 1000) >= 1000.0  # rounding only adds noise
    assert 1000**2 / (2 * noise_sigma(0.02, 1000) ** 2) <= 0.02
    assert noise_sigma(0.5, 1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="^sensitivity must be positive$"):
        noise_sigma(0.5, 0)
    # rho-zCDP implies (rho + 2 sqrt(rho ln(1/delta)), delta)-DP; the accountant is tighter
    for rho, expected in ((0.5, 5.2215), (0.125, 2.4191)):
        assert epsilon(rho, 1e-6) < rho + 2 * math.sqrt(rho * math.log(1e6))
        assert epsilon(rho, 1e-6) == pytest.approx(expected, abs=1e-3)
    assert epsilon(0.0) == 0.0  # nothing spent
    assert describe(cost_units(0.125)) == "rho 0.125 (epsilon 2.42 at delta 1e-06)"
    assert describe(cost_units(0.125), 1e-9) == (f"rho 0.125 (epsilon "
                                                 f"{epsilon(0.125, 1e-9):.3g} at delta 1e-09)")


# --- the policy ---------------------------------------------------------------------------

POLICY = {
    "rho_per_day": 1.0, "rho_total": 3.0,
    "allow": [{"requesters": ["analyst"], "kinds": ["*"], "columns": ["*"],
               "rho_per_day": 0.5, "rho_total": 0.7, "require_dp": True},
              {"requesters": ["auditor"], "kinds": ["*"], "columns": ["*"]}],
}


def use(requester: str = "analyst", rho: float | None = 0.1, job_id: str = "j") -> UseRequest:
    return UseRequest(job_id, requester, "secure_sum", "loans", ("amount",), 100,
                      rho=0 if rho is None else cost_units(rho))


def spending(policy, request, **spent):
    """Each budget binding `request`, with what `spent` says it spent (by the keys
    requester_today, requester_total, today, total; 0 if not given)."""
    names = {("analyst", True): "requester_today", ("analyst", False): "requester_total",
             (None, True): "today", (None, False): "total"}
    return [(b, spent.get(names[b.requester, b.daily], 0))
            for b in privacy_budgets(policy, request)]


def test_budgets_hold_exactly_at_their_edges():
    policy = parse_policy(POLICY, "test")
    request = use(rho=0.1)
    budgets = privacy_budgets(policy, request)
    assert [(b.limit, b.requester, b.daily) for b in budgets] == [
        (cost_units(0.5), "analyst", True), (cost_units(0.7), "analyst", False),
        (cost_units(1.0), None, True), (cost_units(3.0), None, False)]
    edge = {"requester_today": budget_units(0.4, "b"), "requester_total": budget_units(0.6, "b"),
            "today": budget_units(0.9, "b"), "total": budget_units(2.9, "b")}
    assert privacy_problem(request, spending(policy, request, **edge)) is None  # exactly full
    for name, what in (("requester_today", "privacy budget per day of 'analyst' on dataset "
                                           "'loans' (rho 0.5)"),
                       ("requester_total", "privacy budget of 'analyst' on dataset 'loans' "
                                           "(rho 0.7)"),
                       ("today", "privacy budget per day of dataset 'loans' (rho 1)"),
                       ("total", "privacy budget of dataset 'loans' (rho 3)")):
        over = spending(policy, request, **{**edge, name: edge[name] + 1})  # one nano-rho more
        assert privacy_problem(request, over) == ("privacy-budget", f"{what} would be exceeded")
    assert privacy_budgets(policy, use(rho=None)) == []  # a job without noise spends nothing
    assert privacy_budgets(parse_policy({"allow": POLICY["allow"][1:]}, "t"), request) == []


def test_a_rule_that_requires_dp_allows_only_noised_jobs():
    policy = parse_policy(POLICY, "test")
    with pytest.raises(Refusal, match="^rule 'dp-required': 'analyst' may run secure_sum on "
                                      "dataset 'loans' only with differential privacy: the "
                                      "job must declare a privacy cost \\(rho\\)$") as refused:
        authorise("bank", policy, use(rho=None))
    assert refused.value.party == "bank"
    assert authorise("bank", policy, use(rho=0.1)) == policy.allow[0]
    assert authorise("bank", policy, use("auditor", rho=None)) == policy.allow[1]


@pytest.mark.parametrize("key,value", [("rho_total", 0), ("rho_per_day", -1.0),
                                       ("rho_total", math.nan), ("rho_per_day", math.inf),
                                       ("rho_total", "1")])
def test_a_budget_that_is_not_positive_and_finite_is_refused_naming_it(key, value):
    with pytest.raises(ConfigError, match=f"^test.{key} must be a positive finite number"):
        parse_policy({**POLICY, key: value}, "test")
    rule = {**POLICY["allow"][0], key: value}
    with pytest.raises(ConfigError, match=f"^test.allow\\[0\\].{key} must be a positive"):
        parse_policy({**POLICY, "allow": [rule]}, "test")
    with pytest.raises(ConfigError, match="^test.allow\\[0\\].require_dp must be true or false"):
        parse_policy({**POLICY, "allow": [{**POLICY["allow"][0], "require_dp": 1}]}, "test")


def test_require_dp_needs_a_budget_and_a_refusing_dataset_takes_no_noised_job():
    rule = {"requesters": ["x"], "kinds": ["*"], "columns": ["*"], "require_dp": True}
    with pytest.raises(ConfigError, match="^test.allow\\[0\\] has require_dp without a privacy "
                                          "budget \\(rho_per_day or rho_total, on the rule or "
                                          "the dataset\\): without one a job may declare a rho "
                                          "so large that its noise is nothing$"):
        parse_policy({"allow": [rule]}, "test")
    parse_policy({"allow": [rule], "rho_total": 1.0}, "test")  # the dataset's binds too
    parse_policy({"allow": [rule], "rho_per_day": 1.0}, "test")
    parse_policy({"allow": [{**rule, "rho_per_day": 1.0}]}, "test")
    refusing = parse_policy({**POLICY, "out_of_bound": "refuse"}, "test")
    with pytest.raises(Refusal, match="^rule 'dp-clip': dataset 'loans' refuses values beyond "
                                      "a job's bound \\(out_of_bound = \"refuse\"\\): that "
                                      "refusal is an exact answer no noise covers, so it takes "
                                      "no job with a privacy cost$") as refused:
        authorise("bank", refusing, use(rho=0.1))
    assert refused.value.party == "bank"
    authorise("bank", refusing, use("auditor", rho=None))  # without noise: the bound check


def test_a_requester_s_budget_binds_whichever_rule_allows_its_job():
    # an open rule first: the analyst's own rule, later, still limits the analyst
    policy = parse_policy({"allow": [
        {"requesters": ["*"], "kinds": ["*"], "columns": ["*"]},
        {"requesters": ["analyst"], "kinds": ["secure_sum"], "columns": ["*"],
         "rho_total": 0.5}]}, "test")
    assert authorise("bank", policy, use(rho=0.1)) == policy.allow[0]
    request = use(rho=0.1)
    problem = privacy_problem(request, spending(policy, request,
                                                requester_total=cost_units(0.45)))
    assert problem is not None and problem[1].startswith("privacy budget of 'analyst'")
    assert privacy_budgets(policy, use("other", rho=0.1)) == []


# --- reservations in the ledger --------------------------------------------------------------

@pytest.fixture
def signing_key(tmp_path):
    generate_signing_key(tmp_path / "bank-ledger.key", tmp_path / "bank-ledger.pub")
    return load_signing_key(tmp_path / "bank-ledger.key")


def meter_on(ledger: Ledger, policy=POLICY) -> Meter:
    return Meter("bank", ledger, {"loans": parse_policy(policy, "test")}, NodeMetrics())


def job(index: int, rho: float | None = 0.1, requester: str = "analyst") -> JobMeta:
    return JobMeta(f"job-{index}", requester, "secure_sum",
                   use(requester, rho, job_id=f"job-{index}"))


def test_twenty_concurrent_noised_jobs_never_overspend_a_budget(tmp_path, signing_key):
    ledgers = [Ledger(tmp_path / "bank-ledger.sqlite", "bank", signing_key) for _ in range(2)]
    meters = [meter_on(book) for book in ledgers]
    outcomes = admit_at_once(meters, [job(i, 0.1) for i in range(20)])
    assert sorted(outcomes) == ["accepted"] * 5 + ["privacy-budget"] * 15  # 0.5 a day
    assert ledgers[0].privacy_spent("loans", "analyst") == 5 * cost_units(0.1)
    for book in ledgers:
        book.close()


def test_a_budget_counts_across_a_restart_and_returns_only_what_was_never_run(tmp_path,
                                                                              signing_key):
    path = tmp_path / "bank-ledger.sqlite"
    book = Ledger(path, "bank", signing_key)
    meter = meter_on(book)
    meter.admit(job(1, 0.3))  # then the node stops while the job runs
    book.close()
    book = Ledger(path, "bank", signing_key)
    assert [e.event for e in book.mark_interrupted()] == ["interrupted"]
    assert book.privacy_spent("loans", "analyst") == cost_units(0.3)  # still reserved
    meter = meter_on(book)
    second = job(2, 0.2)
    meter.admit(second)
    meter.close(second, "cancelled", {}, released=True)  # cancelled before it ran: given back
    assert book.privacy_spent("loans", "analyst") == cost_units(0.3)
    meter.admit(job(3, 0.2))  # 0.5 today: the edge
    with pytest.raises(Refusal, match="rule 'privacy-budget': privacy budget per day of "
                                      "'analyst' on dataset 'loans' \\(rho 0.5\\) would be "
                                      "exceeded"):
        meter.admit(job(4, 1e-9))
    refused = [e for e in book.entries() if e.event == "refused"]
    assert [e.job_id for e in refused] == ["job-4"]  # the refusal is recorded
    book.close()


def test_a_day_s_budget_starts_again_the_next_utc_day_and_the_total_does_not(
        tmp_path, signing_key, monkeypatch):
    import invisible.metering.meter as meter_module

    clock = ["2026-11-29T23:59:59.000000Z"]
    monkeypatch.setattr(meter_module, "utc_now", lambda: clock[0])
    book = Ledger(tmp_path / "bank-ledger.sqlite", "bank", signing_key, clock=lambda: clock[0])
    meter = meter_on(book)
    meter.admit(job(1, 0.5))  # the day's 0.5
    with pytest.raises(Refusal, match="privacy budget per day of 'analyst'"):
        meter.admit(job(2, 0.1))
    clock[0] = "2026-11-30T00:00:00.000000Z"
    meter.admit(job(3, 0.2))  # a new day: 0.2 of 0.5, and 0.7 of the total 0.7
    assert book.privacy_spent("loans", "analyst", "2026-11-30") == cost_units(0.2)
    assert book.privacy_spent("loans", "analyst") == cost_units(0.7)
    with pytest.raises(Refusal, match="privacy budget of 'analyst' on dataset 'loans' "
                                      "\\(rho 0.7\\)"):
        meter.admit(job(4, 1e-9))
    book.close()


def test_a_spent_budget_refuses_before_the_job_is_planned(tmp_path, signing_key):
    book = Ledger(tmp_path / "bank-ledger.sqlite", "bank", signing_key)
    meter = meter_on(book, {**POLICY, "rho_total": 0.2})
    meter.admit(job(1, 0.2))
    with pytest.raises(Refusal, match="rule 'privacy-budget': privacy budget of dataset 'loans' "
                                      "\\(rho 0.2\\)"):
        meter.authorise(job(2, 0.1))  # the request alone, before any data is read
    meter.authorise(job(3, None, "auditor"))  # no noise, no budget spent
    book.close()


def test_spending_shows_in_entries_receipts_the_report_and_prometheus(tmp_path, signing_key):
    book = Ledger(tmp_path / "bank-ledger.sqlite", "bank", signing_key)
    meter = meter_on(book)
    first, second = job(1, 0.25), job(2, 0.125)
    assert meter.admit(first).body["rho"] == cost_units(0.25)
    receipt = meter.close(first, "finished", {"duration_s": 0.1}, rows=100)
    assert receipt.body["rho"] == cost_units(0.25)  # what the requester keeps says it too
    meter.admit(second)
    meter.close(second, "cancelled", {}, released=True)
    meter.admit(job(3, None, "auditor"))
    meter.close(job(3, None, "auditor"), "finished", {}, rows=100)

    def remaining(name: str, **labels: str) -> float | None:
        return meter.metrics.registry.get_sample_value(name, labels)

    quota = "invisible_quota_remaining"
    assert remaining(quota, dataset="loans", requester="analyst", unit="rho") == 0.125
    assert remaining(quota, dataset="loans", requester="*", unit="rho") == 0.625
    # (as of the last reservation, as quotas are: the cancelled job's cost shows at the next)
    total = "invisible_privacy_budget_remaining"
    assert remaining(total, dataset="loans", requester="analyst") == pytest.approx(0.325)
    assert remaining(total, dataset="loans", requester="*") == pytest.approx(2.625)
    rows = {r["requester"]: r for r in report_rows(book.entries())}
    assert rows["analyst"]["rho_spent"] == 0.25  # the cancelled job's cost given back
    assert rows["auditor"]["rho_spent"] == 0.0
    assert "rho" in to_table(list(rows.values())).splitlines()[0]
    book.close()


# --- end to end: the differencing pair -------------------------------------------------------

def write_rows(path, values) -> None:
    path.write_text("amount\n" + "".join(f"{v}\n" for v in values))


@pytest.fixture
def differencing(tmp_path):
    rng = np.random.default_rng(7)  # the data only; the noise is from the nodes' generators
    whole = rng.uniform(0, 100, 40).round(2)
    one = 73.25
    files = {}
    for name, values in (("all", [*whole, one]), ("less", whole)):
        files[name] = tmp_path / f"a-{name}.csv"
        write_rows(files[name], values)
    write_rows(tmp_path / "b.csv", rng.uniform(0, 100, 40).round(2))
    policy = {"min_rows": 10, "rho_total": 1000.0, "recipients": ["*"],
              "allow": [{"requesters": ["*"], "kinds": ["secure_sum", "paillier_sum"],
                         "columns": ["*"], "require_dp": True}]}
    datasets = {"a": {name: LocalDataset(path, {"amount": "float"}, policy)
                      for name, path in files.items()},
                "b": {"all": LocalDataset(tmp_path / "b.csv", {"amount": "float"}, policy),
                      "less": LocalDataset(tmp_path / "b.csv", {"amount": "float"}, policy)}}
    layout = write_local_federation(tmp_path / "fed", ["a", "b"], datasets)
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        yield fed, nodes, one


def test_the_differencing_pair_is_noised_charged_and_as_uncertain_as_promised(differencing):
    fed, nodes, one = differencing
    rho, bound, pairs = 0.5, 100.0, 120
    with pytest.raises(PolicyError, match="rule 'dp-required'"):
        fed.secure_sum({"a": ("all", "amount"), "b": ("all", "amount")}, bound)
    estimates = []
    for _ in range(pairs):
        totals = [fed.secure_sum({"a": (name, "amount"), "b": (name, "amount")}, bound,
                                 rho=rho, max_rows=1000) for name in ("all", "less")]
        estimates.append(totals[0].value - totals[1].value)
    sigma = noise_sigma(rho, 2 * math.ceil(bound * 2**16)) / 2**16  # a row replaced: 2B
    assert totals[0].noise_sd == pytest.approx(math.sqrt(2) * sigma)
    # Each estimate differences two totals, each with both parties' noise: variance 4 sigma^2
    # (party a's own noise alone gives 2 sigma^2, what rho = 0.5 promises for its row).
    promised = 4 * sigma**2
    sample = np.var(estimates, ddof=1)
    low, high = stats.chi2.ppf([1e-6, 1 - 1e-6], pairs - 1) / (pairs - 1)
    assert low * promised < sample < high * promised
    assert abs(np.mean(estimates) - one) < 6 * math.sqrt(promised / pairs)
    assert not any(e == pytest.approx(one, abs=1e-3) for e in estimates)  # never exact
    spent = nodes.nodes["a"].ledger.privacy_spent
    assert spent("all") == spent("less") == pairs * cost_units(rho)  # charged, each
    accepted = [e for e in nodes.nodes["a"].ledger.entries() if e.event == "accepted"]
    assert {e.body["rho"] for e in accepted} == {cost_units(rho)} and len(accepted) == 2 * pairs


def test_a_paillier_sum_is_noised_and_charged_alike(differencing):
    fed, nodes, _ = differencing
    inputs = {"a": ("all", "amount"), "b": ("all", "amount")}
    exact = fed.secure_sum(inputs, 100.0, rho=500.0, max_rows=1000)  # noise sd 4.5: ~0
    noised = [fed.paillier_sum(inputs, 100.0, rho=0.5, max_rows=1000, key_holder="b",
                               ).value for _ in range(12)]
    sigma = noise_sigma(0.5, 2 * math.ceil(100.0 * 2**16)) / 2**16
    spread = np.std(np.array(noised) - exact.value, ddof=1)
    low, high = stats.chi2.ppf([1e-6, 1 - 1e-6], 11) / 11
    assert math.sqrt(low) * math.sqrt(2) * sigma < spread < math.sqrt(high) * math.sqrt(2) * sigma
    accepted = [e for e in nodes.nodes["b"].ledger.entries()
                if e.event == "accepted" and e.kind == "paillier_sum"]
    assert len(accepted) == 12 and all(e.body["rho"] == cost_units(0.5) for e in accepted)


def test_moments_on_the_grid_are_exact_integer_sums_of_rounded_rows():
    column = np.array([1.5, -2.25, 3.0000076, 0.0])
    grid = moments_on_grid(column, 16).view(np.int64)
    assert grid.tolist() == [4 << 16, int(np.rint(column * 65536).sum()),
                             int(np.rint(column**2 * 65536).sum())]
    assert moment_sensitivities(100.0, 16) == [0, 13107200, 655360000]  # count public
    assert moments_needed(["mean"]) == [0, 1] and moments_needed(["sum"]) == [1]
    assert moments_needed(["count", "std"]) == [0, 1, 2]


def test_outputs_from_noised_moments_are_post_processed_safely():
    assert finish_noised({0: 4.0, 1: 10.0, 2: 30.0}, ["count", "mean", "variance", "std"]) == {
        "count": 4.0, "mean": 2.5, "variance": 1.25, "std": math.sqrt(1.25)}
    assert finish_noised({0: 4.0, 1: 10.0, 2: 30.0}, ["variance"], ddof=1)["variance"] == \
        pytest.approx(1.25 * 4 / 3)
    low = finish_noised({0: -0.7, 1: 3.0, 2: 1.0}, ["count", "mean", "variance"], ddof=1)
    assert low == {"count": -1.0, "mean": 3.0, "variance": 0.0}  # divided by 1, never below 0


def test_noised_statistics_are_charged_and_as_uncertain_as_promised(tmp_path):
    rng = np.random.default_rng(3)
    columns = {p: rng.uniform(0, 50, 30).round(2) for p in ("a", "b")}
    policy = {"min_rows": 10, "rho_total": 100.0,
              "allow": [{"requesters": ["*"], "kinds": ["statistics"], "columns": ["*"],
                         "require_dp": True}]}
    datasets = {}
    for party, values in columns.items():
        write_rows(tmp_path / f"{party}.csv", values)
        datasets[party] = {"d": LocalDataset(tmp_path / f"{party}.csv", {"amount": "float"},
                                             policy)}
    layout = write_local_federation(tmp_path / "fed", ["a", "b"], datasets, dealers=["dealer"])
    values = np.concatenate(list(columns.values()))
    inputs = {"a": ("d", "amount"), "b": ("d", "amount")}
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(PolicyError, match="rule 'dp-required'"):
            fed.statistics(inputs, 50.0, outputs=["mean"], dealer="dealer", max_rows=100)
        runs = [fed.statistics(inputs, 50.0, outputs=["count", "sum", "std"], dealer="dealer",
                               max_rows=100, rho=0.9) for _ in range(40)]
        spent = {p: nodes.nodes[p].ledger.privacy_spent("d") for p in ("a", "b")}
    assert spent == {"a": 40 * cost_units(0.9), "b": 40 * cost_units(0.9)}
    # the count is public (receipts show it): exact, no noise; the sum and the sum of squares
    # get rho / 2 each, for a row's value replaced: 2B and B^2
    assert all(r["count"] == values.size for r in runs)
    sum_sd = math.sqrt(2) * noise_sigma(0.45, 2 * 50 * 2**16) / 2**16
    squares_sd = math.sqrt(2) * noise_sigma(0.45, 50 * 50 * 2**16) / 2**16
    assert runs[0].noise_sd == pytest.approx({"sum": sum_sd, "sum of squares": squares_sd})
    sums = np.array([r["sum"] for r in runs])
    low, high = stats.chi2.ppf([1e-6, 1 - 1e-6], 39) / 39
    assert low * sum_sd**2 < sums.var(ddof=1) < high * sum_sd**2
    assert abs(sums.mean() - values.sum()) < 6 * sum_sd / math.sqrt(40)
    # the std comes from both noised moments: var = Q/N - (S/N)^2, std = sqrt(var), so to
    # first order its noise is (dQ/N - 2 mean dS/N) / (2 std)
    n, mean, std = values.size, values.mean(), values.std()
    expected = ((squares_sd / n) ** 2 + (2 * mean * sum_sd / n) ** 2) / (4 * std**2)
    stds = np.array([r["std"] for r in runs])
    assert low * expected < stds.var(ddof=1) < high * expected * 1.2
    assert "computed from noised moments" in repr(runs[0])


def test_noised_per_category_totals_release_small_categories_and_refuse_nothing(tmp_path):
    # category 2 has one row, category 9 is outside [0, 3): a plain job is refused for
    # both, which is an exact answer about the rows; a noised one is not
    rows = [(10.0, 0)] * 15 + [(20.0, 1)] * 15 + [(77.0, 2), (5.0, 9)]
    (tmp_path / "g.csv").write_text("amount,cell\n" + "".join(f"{a},{c}\n" for a, c in rows))
    policy = {"min_rows": 10, "rho_total": 100.0,
              "allow": [{"requesters": ["*"], "kinds": ["*"], "columns": ["*"]}]}
    datasets = {p: {"g": LocalDataset(tmp_path / "g.csv", {"amount": "float", "cell": "int"},
                                      policy)} for p in ("a", "b")}
    layout = write_local_federation(tmp_path / "fed", ["a", "b"], datasets)
    inputs = {"a": ("g", "amount"), "b": ("g", "amount")}
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(PolicyError, match="group column 'cell' does not hold integers"):
            fed.secure_sum(inputs, 100.0, group_by="cell", categories=3)
        totals = np.array([fed.secure_sum(inputs, 100.0, group_by="cell", categories=3,
                                          rho=2.0).total for _ in range(30)])
    sd = math.sqrt(2) * noise_sigma(2.0, 2 * 100 * 2**16) / 2**16
    exact = np.array([300.0, 600.0, 154.0])  # both parties; the row in category 9 adds nothing
    assert np.all(np.abs(totals.mean(axis=0) - exact) < 6 * sd / math.sqrt(30))
    low, high = stats.chi2.ppf([1e-6, 1 - 1e-6], 29) / 29
    assert np.all((low * sd**2 < totals.var(axis=0, ddof=1))
                  & (totals.var(axis=0, ddof=1) < high * sd**2))


def test_budgets_need_a_ledger_that_records(tmp_path):
    policy = {**POLICY, "allow": POLICY["allow"][:1]}
    write_rows(tmp_path / "x.csv", [1.0] * 20)
    layout = write_local_federation(tmp_path / "fed", ["a", "b"], {
        p: {"loans": LocalDataset(tmp_path / "x.csv", {"amount": "float"}, policy)}
        for p in ("a", "b")})
    config = layout.party_configs["a"]
    config.write_text(config.read_text() + '\n[ledger]\nstore = "none"\n')
    with pytest.raises(ConfigError, match='store = "none" records nothing, so it cannot keep '
                                          "the privacy budgets of dataset\\(s\\) loans"):
        load_party_config(config)


def test_a_noised_job_reads_no_data_when_its_budget_is_spent(tmp_path, monkeypatch):
    write_rows(tmp_path / "x.csv", np.arange(20))
    policy = {"min_rows": 10, "rho_total": 0.5,
              "allow": [{"requesters": ["*"], "kinds": ["*"], "columns": ["*"]}]}
    datasets = {p: {"d": LocalDataset(tmp_path / "x.csv", {"amount": "float"}, policy)}
                for p in ("a", "b")}
    layout = write_local_federation(tmp_path / "fed", ["a", "b"], datasets)
    planned = []
    plan = SecureSumKind.plan
    monkeypatch.setattr(SecureSumKind, "plan",
                        lambda self, *a: planned.append(1) or plan(self, *a))
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        inputs = {"a": ("d", "amount"), "b": ("d", "amount")}
        fed.secure_sum(inputs, 50.0, rho=0.5)
        assert len(planned) == 2
        with pytest.raises(PolicyError, match="rule 'privacy-budget': privacy budget of "
                                              "dataset 'd' \\(rho 0.5\\) would be exceeded"):
            fed.secure_sum(inputs, 50.0, rho=0.01)
        assert len(planned) == 2  # refused before either node looked at its data
        assert fed.secure_sum(inputs, 50.0).value == pytest.approx(2 * sum(range(20)))

