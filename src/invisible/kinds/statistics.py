"""The `statistics` job kind: count, sum, mean, variance, std of a column split by rows.

The computing parties (the input parties) run
:mod:`invisible.protocols.mpc.statistics` with correlated randomness from a
dealer node of the job, which holds no data and never computes. Only the
declared outputs are opened, to the requester (each party releases a
uniformly random share of them) or to a recipient party (which releases the
opened values to the requester too). Every opening (what, to whom, how
many) is in each party's job output and signed ledger entry.

The variance is the population variance (``ddof = 0``, numpy's default) or
the sample variance (``ddof = 1``); ``std`` is its square root.

With differential privacy (``rho``), no secret-shared division is needed: each
computing party takes the moments the declared outputs are computed from (of
N, S and Q: the count, the sum, the sum of squares), each on the grid as exact
integer sums of per-row rounded values, adds its own discrete Gaussian noise to
S and Q, calibrated to a row's value replaced by another (2B 2^f and B^2 2^f;
the count is public, receipts show it, so it carries none) with an equal share
of rho (zCDP composes by adding), and secret-shares them; the totals are opened
as the outputs would be, and the declared outputs are computed from them in the
clear (post-processing: a count under 1 is taken as 1, a negative variance as
0). So the recipient learns the noised moments (no less private than the
outputs, and charged the same rho); the dealer is told at once that no tuples
are needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from invisible.crypto.fixedpoint import clip_to_bound, decode
from invisible.crypto.noise import MAX_SIGMA, discrete_gaussian, magnitude_bound
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.base import (
    Datasets,
    DataUse,
    DeclaredUse,
    JobContext,
    JobKind,
    JobOutcome,
    check_bounds,
)
from invisible.kinds.declared import WithDealer, opened_outputs, release
from invisible.kinds.params import Inputs, Params, param
from invisible.kinds.results import Result, Table, decimals_for
from invisible.kinds.secure_sum import MAX_ROWS, numeric_column
from invisible.metering.privacy import cost_units, describe, noise_sigma
from invisible.protocols.mpc.arithmetic import input_encoded
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.shared import SharedArray
from invisible.protocols.mpc.statistics import (
    OUTPUTS,
    check_capacity,
    finish_noised,
    moment_sensitivities,
    moments_needed,
    moments_on_grid,
    select_outputs,
    shared_totals,
    statistics,
)
from invisible.protocols.mpc.statistics import (
    finish as decoded_outputs,
)

FRACTIONAL_BITS = 16


@dataclass(frozen=True, kw_only=True)
class StatisticsParams(WithDealer, Params["StatisticsResult"]):
    KIND: ClassVar[str] = "statistics"

    inputs: Inputs = param("per computing party, the dataset and numeric column it holds rows of",
                           example={"bank": {"dataset": "customers", "column": "monthly_spend"}})
    bound: float = param("public bound on every |value| (values beyond it are clipped to it)",
                         gt=0, lt=2**14, example=5000.0)
    max_rows: int = param("public bound on each party's rows", default=100_000, ge=1,
                          le=MAX_ROWS)
    outputs: tuple[str, ...] = param("the statistics to open", choices=OUTPUTS,
                                     example=["count", "mean", "std"])
    dealer: str = param("a dealer node of the job (serves correlated randomness, holds no data)",
                        example="dealer")
    recipient: str | None = param("a computing party that receives the values (and releases "
                                  "them to the requester)", default=None, example="bank")
    ddof: int = param("variance divisor: count - ddof (0: population, 1: sample)", default=0,
                      choices=(0, 1))
    rho: float | None = param("differential privacy: the cost (zCDP rho) each owner charges to "
                              "its budget; each adds discrete Gaussian noise for it to the "
                              "moments the outputs are computed from", default=None, gt=0,
                              example=0.1)

    @property
    def moments(self) -> list[int]:
        """With `rho`: which of (N, S, Q) are noised and opened."""
        return moments_needed(self.outputs)

    @property
    def sigmas(self) -> dict[int, float]:
        """With `rho`: the sigma on the grid of each moment that is noised (not the count,
        which is public), rho shared equally among them."""
        if self.rho is None:
            return {}
        sensitivity = moment_sensitivities(self.bound, FRACTIONAL_BITS)
        noised = [m for m in self.moments if sensitivity[m]]
        return {m: noise_sigma(self.rho / len(noised), sensitivity[m]) for m in noised}

    @property
    def noised_limit(self) -> float:
        """The largest |noised moment total| (in reals) the shares must hold."""
        most = max((magnitude_bound(s) for s in self.sigmas.values()), default=0)
        return len(self.inputs) * (self.max_rows * max(1.0, self.bound) ** 2
                                   + most * 2.0**-FRACTIONAL_BITS)

    def check(self, parties: tuple[str, ...]) -> None:
        self.check_parties(parties, "name a dataset and column for at least two parties")
        try:
            check_capacity(len(self.inputs), self.bound, self.max_rows, FRACTIONAL_BITS)
        except ProtocolError as exc:
            raise ConfigError(f"{exc}: lower 'max_rows' or 'bound'") from None
        if self.rho is None:
            return
        if max(self.sigmas.values(), default=0.0) > MAX_SIGMA \
                or self.noised_limit * 2.0**FRACTIONAL_BITS >= 2.0**62:
            raise ConfigError(f"{self.KIND}: 'rho' {self.rho:g} needs more noise than the "
                              "shares can hold; raise rho or lower 'bound' or 'max_rows'")


@dataclass(repr=False, eq=False)
class StatisticsResult(Result, Mapping[str, float]):
    """The declared statistics by name; reads like a dict (``result["mean"]``)."""

    by_name: dict[str, float]
    ddof: int = 0
    recipient: str | None = None
    #: With differential privacy: the cost each owner charged (zCDP rho), and the standard
    #: deviation of the noise in each noised moment the outputs were computed from.
    rho: float | None = None
    noise_sd: dict[str, float] | None = None

    def __getitem__(self, name: str) -> float:
        return self.by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def table(self) -> Table:
        return Table(("statistic", "value"), list(self.by_name.items()),
                     decimals_for(FRACTIONAL_BITS))

    def facts(self) -> dict[str, Any]:
        return {"values": dict(self.by_name), "ddof": self.ddof, "recipient": self.recipient,
                "rho": self.rho, "noise_sd": self.noise_sd}

    def notes(self) -> list[str]:
        notes = [f"shown to the job's fixed-point resolution, 2^-{FRACTIONAL_BITS}"]
        if {"variance", "std"} & set(self.by_name):
            notes.append("variance and std are the " + (
                "sample variance (divisor count - 1; a single row gives 0)" if self.ddof else
                "population variance (divisor count)"))
        if self.recipient:
            notes.append(f"opened to party '{self.recipient}', which released them to the "
                         "requester")
        if self.rho is not None:
            spread = ", ".join(f"{name} {sd:.4g}" for name, sd in (self.noise_sd or {}).items()
                               ) or "none: the count is public"
            notes.append(f"with differential privacy, {describe(cost_units(self.rho))} charged "
                         f"by each owner: computed from noised moments (noise sd: {spread})")
        return notes


class StatisticsKind(JobKind[StatisticsParams, StatisticsResult]):
    name = "statistics"
    bounds_values = True
    params_type = StatisticsParams
    summary = ("count, sum, mean, variance, std of a column split by rows, on secret shares "
               "with a dealer; only the declared outputs are opened")

    def declare(self, params: StatisticsParams, party_id: str) -> DeclaredUse | None:
        declared = params.declared_use(party_id, lambda ref: (ref.column,))
        if declared is None or params.rho is None:
            return declared
        return replace(declared, rho=cost_units(params.rho))

    def plan(self, params: StatisticsParams, party_id: str, datasets: Datasets) -> DataUse | None:
        if party_id == params.dealer:
            return None
        ref = params.inputs[party_id]
        column = numeric_column(params.KIND, datasets.get(ref.dataset), ref.dataset, ref.column)
        rows = int(column.shape[0])
        if rows > params.max_rows:
            return DataUse(rows, rows, f"dataset '{ref.dataset}' has more rows than the job's "
                                       "max_rows")
        return DataUse(rows, rows)

    def run(self, params: StatisticsParams, context: JobContext) -> JobOutcome:
        served = params.serve_as_dealer(context)
        if served is not None:
            return served
        channel = context.channel
        parties = params.computing(context.spec.parties)
        ref = params.inputs[channel.party_id]
        column, clipped = clip_to_bound(context.datasets.get(ref.dataset).column(ref.column),
                                        params.bound)
        check_bounds(context, parties, clipped)
        if params.rho is not None:
            return _run_noised(params, context, parties, column, clipped)
        local = (float(column.size), float(column.sum()), float(np.square(column).sum()))
        ctx = MpcContext(channel, parties, params.dealer, FRACTIONAL_BITS)
        provider = DealerProvider(channel, parties, params.dealer)
        try:
            totals = shared_totals(ctx, local, params.bound, params.max_rows, context.rng)
            result = statistics(ctx, provider, totals, params.bound, params.max_rows, params.ddof)
        finally:
            provider.close()
        chosen = select_outputs(params.outputs)
        selected = SharedArray(np.ascontiguousarray(result.share[chosen]), result.bound,
                               result.fractional_bits, ctx.is_leader)
        # What this party releases goes to the requester (the opening to a recipient
        # party is listed in `openings`).
        outcome = JobOutcome(rows_used=int(column.size), clipped=clipped)
        release(ctx, context, selected, params.recipient, outcome)
        outcome.output = {"opened_indices": chosen, "openings": outcome.openings}
        return outcome

    def finish(self, params: StatisticsParams, job: JobResult) -> StatisticsResult:
        chosen = select_outputs(params.outputs) if params.rho is None else params.moments
        opened = opened_outputs(job, params.computing(job.parties), params.recipient,
                                len(chosen))
        values = dict(zip(chosen, decode(opened, FRACTIONAL_BITS).tolist(), strict=True))
        if params.rho is None:
            named = decoded_outputs(values, params.outputs)
        else:
            named = finish_noised(values, params.outputs, params.ddof)
        if "count" in named:
            named["count"] = int(named["count"])
        noise_sd = {("count", "sum", "sum of squares")[m]:
                    math.sqrt(len(params.inputs)) * sigma * 2.0**-FRACTIONAL_BITS
                    for m, sigma in params.sigmas.items()}
        return StatisticsResult(job, named, params.ddof, params.recipient, params.rho,
                                noise_sd)


def _run_noised(params: StatisticsParams, context: JobContext, parties: tuple[str, ...],
                column: np.ndarray, clipped: int) -> JobOutcome:
    """The differentially private path (module docstring): noised moments, shared and
    opened; no tuples."""
    channel = context.channel
    ctx = MpcContext(channel, parties, params.dealer, FRACTIONAL_BITS)
    DealerProvider(channel, parties, params.dealer).close()  # no tuples: the dealer is done
    moments = params.moments
    sigmas = params.sigmas
    noise = np.array([discrete_gaussian(Prg.from_os(), sigmas[m], 1)[0] if m in sigmas else 0
                      for m in moments], dtype=np.int64)
    mine = moments_on_grid(column, FRACTIONAL_BITS)[moments] + noise.view(RING_DTYPE)
    total: SharedArray | None = None
    for owner in parties:
        part = input_encoded(ctx, owner, mine if owner == channel.party_id else None,
                             params.noised_limit, (len(moments),), context.rng)
        total = part if total is None else total + part
    assert total is not None
    outcome = JobOutcome(rows_used=int(column.size), clipped=clipped)
    release(ctx, context, total, params.recipient, outcome)
    outcome.output = {"opened_indices": moments, "openings": outcome.openings}
    return outcome
