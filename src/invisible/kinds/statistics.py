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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from invisible.crypto.fixedpoint import clip_to_bound, decode
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
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.shared import SharedArray
from invisible.protocols.mpc.statistics import (
    OUTPUTS,
    check_capacity,
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

    def check(self, parties: tuple[str, ...]) -> None:
        self.check_parties(parties, "name a dataset and column for at least two parties")
        try:
            check_capacity(len(self.inputs), self.bound, self.max_rows, FRACTIONAL_BITS)
        except ProtocolError as exc:
            raise ConfigError(f"{exc}: lower 'max_rows' or 'bound'") from None


@dataclass(repr=False, eq=False)
class StatisticsResult(Result, Mapping[str, float]):
    """The declared statistics by name; reads like a dict (``result["mean"]``)."""

    by_name: dict[str, float]
    ddof: int = 0
    recipient: str | None = None

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
        return {"values": dict(self.by_name), "ddof": self.ddof, "recipient": self.recipient}

    def notes(self) -> list[str]:
        notes = [f"shown to the job's fixed-point resolution, 2^-{FRACTIONAL_BITS}"]
        if {"variance", "std"} & set(self.by_name):
            notes.append("variance and std are the " + (
                "sample variance (divisor count - 1; a single row gives 0)" if self.ddof else
                "population variance (divisor count)"))
        if self.recipient:
            notes.append(f"opened to party '{self.recipient}', which released them to the "
                         "requester")
        return notes


class StatisticsKind(JobKind[StatisticsParams, StatisticsResult]):
    name = "statistics"
    bounds_values = True
    params_type = StatisticsParams
    summary = ("count, sum, mean, variance, std of a column split by rows, on secret shares "
               "with a dealer; only the declared outputs are opened")

    def declare(self, params: StatisticsParams, party_id: str) -> DeclaredUse | None:
        return params.declared_use(party_id, lambda ref: (ref.column,))

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
        chosen = select_outputs(params.outputs)
        opened = opened_outputs(job, params.computing(job.parties), params.recipient,
                                len(chosen))
        values = decode(opened, FRACTIONAL_BITS).tolist()
        named = decoded_outputs(dict(zip(chosen, values, strict=True)), params.outputs)
        if "count" in named:
            named["count"] = int(named["count"])
        return StatisticsResult(job, named, params.ddof, params.recipient)
