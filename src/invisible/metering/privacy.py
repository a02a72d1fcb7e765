"""Privacy budgets, in zero-concentrated differential privacy (rho), and what a release costs.

One accounting: rho-zCDP (Bun and Steinke 2016). Costs add up exactly (k releases of
rho_i cost sum rho_i), so a budget is a number and a spend is a sum of ledger entries.
(epsilon, delta) is shown beside it, converted by Google's `dp-accounting` (a Gaussian of
the same rho has the RDP curve alpha * rho; its accountant converts that to the smallest
epsilon for delta), for display only: nothing is decided in epsilon.

**Units.** Costs and budgets are kept as whole nano-rho (10^-9 rho) so that the ledger's
sums are exact and a budget is never passed by rounding: a job's declared rho is charged
rounded *up* to the next nano-rho (its noise is made for the rho it declared, so it is
charged at least what it spends), a budget rounded *down*.

**The guarantee.** A job that declares rho adds, at each owner's node, discrete Gaussian
noise (:mod:`invisible.crypto.noise`) of sigma = D / sqrt(2 rho) to what that node
contributes, where D is the L2 sensitivity of that contribution on the fixed-point grid
for **one row's values replaced by any others**, with the number of rows public: receipts,
bills, the k threshold and `max_rows` all speak of row counts, so the count is not
protected and add-or-remove neighbours would not be honest. Values are clipped to the
declared bound B, so a sum's D is 2B on the grid (a statistics job's sum of squares B^2;
its count needs no noise). Nothing a noised job refuses may depend on the rows' values:
such a refusal is an exact answer that no noise covers, so a noised job on a dataset that
refuses out-of-bound values is refused from the policy alone, small categories are
released noised rather than refused, and rows outside the declared categories add
nothing. The release is then rho-zCDP for each owner's rows *from its own noise alone*:
it holds even if every other party colludes with the recipient and adds no noise, and it
is what each owner's node charges to its own budget. (The sum of the other parties'
noise makes the released value noisier than that, never less private; splitting one
sigma among parties, as the distributed discrete Gaussian of Kairouz, Liu and Steinke does,
would need each owner to trust that some number of the others are honest, which no owner
here is asked to.) The sampler's one approximation (probabilities to 2^-52, outcomes
beyond about 9 sigma drawn less often) is outside this statement; its total is below
2^-60.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from invisible.errors import ConfigError

NANO = 10**9
#: The delta at which (epsilon, delta) is shown beside rho.
DEFAULT_DELTA = 1e-6
#: The sigma a job is given is this much above D / sqrt(2 rho), so that rounding in its
#: computation can only add noise.
_SIGMA_MARGIN = 1 + 2.0**-40


def _positive(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where} must be a positive finite number (a zCDP rho)")
    return Decimal(repr(float(value)))


def cost_units(rho: Any, where: str = "rho") -> int:
    """A declared rho in nano-rho, rounded up (at least 1)."""
    return max(1, int((_positive(rho, where) * NANO).to_integral_value(ROUND_CEILING)))


def budget_units(rho: Any, where: str) -> int:
    """A budget in nano-rho, rounded down."""
    return int((_positive(rho, where) * NANO).to_integral_value(ROUND_FLOOR))


def rho_of(units: int) -> float:
    return units / NANO


def noise_sigma(rho: float, sensitivity: int) -> float:
    """The discrete Gaussian sigma that makes a query of L2 `sensitivity` (grid units)
    rho-zCDP: rho = D^2 / (2 sigma^2)."""
    if sensitivity <= 0:
        raise ValueError("sensitivity must be positive")
    return sensitivity / math.sqrt(2.0 * rho) * _SIGMA_MARGIN


def epsilon(rho: float, delta: float = DEFAULT_DELTA) -> float:
    """The (epsilon, delta)-DP that rho-zCDP implies, by dp-accounting's RDP accountant."""
    if rho <= 0:
        return 0.0
    import dp_accounting  # imported here: only reports and health convert

    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier=1 / math.sqrt(2 * rho)))
    return float(accountant.get_epsilon(delta))


def describe(units: int, delta: float = DEFAULT_DELTA) -> str:
    """'rho 0.25 (epsilon 3.71 at delta 1e-06)'."""
    rho = rho_of(units)
    return f"rho {rho:g} (epsilon {epsilon(rho, delta):.3g} at delta {delta:g})"
