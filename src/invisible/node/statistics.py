"""The `statistics` job kind: count, sum, mean, variance, std of a column split by rows.

Parameters::

    {"inputs": {"bank": {"dataset": "customers", "column": "monthly_spend"}, ...},
     "bound": 100000.0,      # public |value| bound
     "max_rows": 1000000,    # public bound on each party's rows
     "outputs": ["count", "mean", "std"],
     "dealer": "dealer",     # a dealer node of the job (not among the inputs)
     "recipient": null}      # a computing party, or null for the requester

The computing parties run :mod:`invisible.protocols.mpc.statistics` with
correlated randomness from the dealer; the job record lists every opening
(what, to whom, how many values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ConfigError, PolicyError, ProtocolError
from invisible.net.jobs_api import JobSpec
from invisible.node.datasets import DatasetRegistry
from invisible.node.jobkind import DataUse, JobContext, JobOutcome
from invisible.node.secure_sum import InputRef
from invisible.protocols.mpc.arithmetic import reveal
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.dealer import DealerProvider, run_dealer
from invisible.protocols.mpc.shared import SharedArray
from invisible.protocols.mpc.statistics import OUTPUTS, select_outputs, shared_totals, statistics

KIND = "statistics"
SHARES_ARRAY = "output_shares"
FRACTIONAL_BITS = 16


@dataclass(frozen=True)
class StatisticsParams:
    inputs: dict[str, InputRef]
    bound: float
    max_rows: int
    outputs: tuple[str, ...]
    dealer: str
    recipient: str | None

    @property
    def parties(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def to_json(self) -> dict[str, Any]:
        return {"inputs": {p: {"dataset": r.dataset, "column": r.column}
                           for p, r in self.inputs.items()},
                "bound": self.bound, "max_rows": self.max_rows, "outputs": list(self.outputs),
                "dealer": self.dealer, "recipient": self.recipient}

    @classmethod
    def from_json(cls, params: dict[str, Any], job_parties: tuple[str, ...]) -> StatisticsParams:
        unknown = sorted(set(params) - {"inputs", "bound", "max_rows", "outputs", "dealer",
                                        "recipient"})
        if unknown:
            raise ConfigError(f"statistics: unknown parameter(s) {', '.join(unknown)}")
        raw = params.get("inputs")
        dealer = params.get("dealer")
        if not isinstance(raw, dict) or len(raw) < 2:
            raise ConfigError("statistics: 'inputs' must name a dataset and column for at least "
                              "two parties")
        if not isinstance(dealer, str) or dealer in raw:
            raise ConfigError("statistics: 'dealer' must name a dealer that is not an input party")
        if set(job_parties) != {*raw, dealer}:
            raise ConfigError("statistics: the job's parties must be the input parties and the "
                              "dealer")
        inputs = {}
        for party, ref in raw.items():
            if not (isinstance(ref, dict) and isinstance(ref.get("dataset"), str)
                    and isinstance(ref.get("column"), str)):
                raise ConfigError(f"statistics: input of party '{party}' needs 'dataset' and "
                                  "'column'")
            inputs[party] = InputRef(ref["dataset"], ref["column"])
        bound, max_rows = params.get("bound"), params.get("max_rows", 1 << 20)
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 < bound < 2**14:
            raise ConfigError("statistics: 'bound' must be a number in (0, 16384) (squares must "
                              "stay in fixed-point range)")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ConfigError("statistics: 'max_rows' must be a positive integer")
        outputs = params.get("outputs")
        if not isinstance(outputs, list) or not outputs or not set(outputs) <= set(OUTPUTS):
            raise ConfigError(f"statistics: 'outputs' must list some of {', '.join(OUTPUTS)}")
        recipient = params.get("recipient")
        if recipient is not None and recipient not in inputs:
            raise ConfigError("statistics: 'recipient' must be an input party or null")
        return cls(inputs, float(bound), max_rows, tuple(outputs), dealer, recipient)


class StatisticsKind:
    name = KIND

    def plan(self, spec: JobSpec, party_id: str, datasets: DatasetRegistry) -> DataUse | None:
        params = StatisticsParams.from_json(spec.params, spec.parties)
        if party_id == params.dealer:
            return None  # the dealer touches no data
        ref = params.inputs[party_id]
        rows = int(datasets.get(ref.dataset).column(ref.column).shape[0])
        if rows > params.max_rows:
            raise PolicyError(f"statistics: dataset '{ref.dataset}' has more rows than the "
                              "job's max_rows")
        return DataUse(ref.dataset, (ref.column,), rows, rows, params.recipient)

    def run(self, context: JobContext) -> JobOutcome:
        params = StatisticsParams.from_json(context.spec.params, context.spec.parties)
        channel = context.channel
        if channel.party_id == params.dealer:
            served = run_dealer(channel, params.parties, context.rng)
            return JobOutcome(output={"tuples_served": served})
        ref = params.inputs[channel.party_id]
        column = context.datasets.get(ref.dataset).column(ref.column).astype(np.float64)
        if column.size and float(np.abs(column).max()) > params.bound:
            raise PolicyError(f"statistics: column '{ref.column}' of dataset '{ref.dataset}' "
                              f"holds values outside the declared bound {params.bound:g}")
        local = (float(column.size), float(column.sum()), float(np.square(column).sum()))
        ctx = MpcContext(channel, params.parties, params.dealer, FRACTIONAL_BITS)
        provider = DealerProvider(channel, params.parties, params.dealer)
        try:
            totals = shared_totals(ctx, local, params.bound, params.max_rows, context.rng)
            result = statistics(ctx, provider, totals, params.bound, params.max_rows)
        finally:
            provider.close()
        chosen = select_outputs(params.outputs)
        selected = SharedArray(np.ascontiguousarray(result.share[chosen]), result.bound,
                               result.fractional_bits, ctx.is_leader)
        outcome = JobOutcome(rows_used=int(column.size))
        if params.recipient is None:  # each party releases a uniformly random share
            ctx.record.add("declared-outputs (shares)", (context.requester.party_id,),
                           len(chosen))
            outcome.arrays[SHARES_ARRAY] = selected.share
        else:
            opened = reveal(ctx, selected, params.recipient, "declared-outputs")
            if opened is not None:
                outcome.arrays[SHARES_ARRAY] = opened  # the recipient releases the values
        outcome.values_opened = len(chosen)
        outcome.openings = [{"what": o.what, "to": list(o.to), "values": o.values}
                            for o in ctx.record.openings]
        outcome.output = {"opened_indices": chosen, "openings": outcome.openings}
        return outcome


def combine(params: StatisticsParams, released: dict[str, np.ndarray]) -> np.ndarray:
    """The opened ring values the requester receives: the sum of the shares, or the recipient's."""
    if params.recipient is not None:
        return released[params.recipient]
    if set(released) != set(params.parties):
        raise ProtocolError("a party released no share of the outputs")
    return np.asarray(np.sum(list(released.values()), axis=0, dtype=RING_DTYPE))
