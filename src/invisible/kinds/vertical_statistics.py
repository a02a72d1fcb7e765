"""The `vertical_statistics` job kind: statistics of columns that different parties hold
about the same people.

The parties name an alignment (``"@name"``: their rows of one earlier
``psi`` job, in the order every party agreed) and some numeric columns of
the dataset it was made from; the job computes, on secret shares with a
dealer node (:mod:`invisible.protocols.mpc.vertical`), the declared outputs
among: the number of rows, each column's mean, variance and standard
deviation, and the covariance and Pearson correlation matrices over all the
columns, across parties and within each. Only those are opened, to the
requester (each party releases a uniformly random share) or to a recipient
party (which releases them to the requester too).

Before anything runs, the computing parties check that their alignments
are the rows of one intersection (the same psi job and the same size),
each sending a 32-byte hash of those two facts: a party that named another
alignment would pair its rows with other people's.

Each column has a public bound on |value| (``bounds``, one per column),
needed for the means, variances, deviations and covariances (their
fixed-point range). A value beyond its bound refuses the job at every
party alike (one bit through :func:`invisible.kinds.base.refuse_alike`),
whatever the policy's ``out_of_bound``: this kind never clips. Clipping
to a bound the requester chose would let it single one person out (a
bound between the two smallest values makes every other row the same
constant), read that person's value from the mean and, from the
correlation, their value in another institution's column. A refusal tells
one bit per charged job, as with ``out_of_bound = "refuse"``. The
correlation alone needs no bound. Policy and meter: a job on an alignment is
checked against the policy of the dataset the alignment was made from
(columns, kinds, quotas, k against the alignment's rows) and metered
against that dataset.

With differential privacy (``rho``; every column then needs its bound), the
job takes the noised path of :mod:`invisible.protocols.mpc.vertical`: values
are clipped to their bounds (the noise covers what a clipped value moves, so
a bound cannot single anyone out, and a refusal, an exact answer, is never
given), each owner adds its own discrete Gaussian noise to the moments the
outputs need, and the outputs are computed from them in the clear. The
release includes the row count, so the alignment's size must have been
released by its psi job (`release_size`): otherwise the job is refused at
Start, before anything is reserved.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from invisible.crypto.fixedpoint import decode
from invisible.crypto.noise import MAX_SIGMA
from invisible.errors import ConfigError
from invisible.jobspec import JobResult
from invisible.kinds.alignments import ALIGNMENT_PREFIX
from invisible.kinds.base import (
    Datasets,
    DataUse,
    DeclaredUse,
    JobContext,
    JobKind,
    JobOutcome,
)
from invisible.kinds.declared import (
    WithDealer,
    aligned_rows,
    bounded_columns,
    column_rows,
    numeric_matrix,
    opened_outputs,
    release,
)
from invisible.kinds.params import ColumnInputs, Params, param
from invisible.kinds.results import Result, Table, decimals_for
from invisible.metering.privacy import cost_units, describe, noise_sigma
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.vertical import (
    FRACTIONAL_BITS,
    MAX_BOUND,
    NOISED_BITS,
    NOISED_SENSITIVITY,
    OUTPUTS,
    Layout,
    decode_noised,
    decode_outputs,
    local_columns,
    noised_entries,
    noised_moments,
    vertical_statistics,
)

if TYPE_CHECKING:
    import pandas

#: The outputs that need a bound on every column (their fixed-point range).
BOUNDED_OUTPUTS = frozenset({"mean", "variance", "std", "covariance"})


@dataclass(frozen=True, kw_only=True)
class VerticalStatisticsParams(WithDealer, Params["VerticalStatisticsResult"]):
    KIND: ClassVar[str] = "vertical_statistics"

    inputs: ColumnInputs = param(
        "per computing party, the alignment (\"@name\") and the numeric columns it holds, "
        "with a public bound on every |value| per column (needed for mean, variance, std "
        "and covariance)",
        example={"bank": {"dataset": "@common-customers", "columns": ["balance", "monthly_spend"],
                          "bounds": [1000000.0, 5000.0]},
                 "hospital": {"dataset": "@common-customers", "columns": ["visits"],
                              "bounds": [100.0]},
                 "telco": {"dataset": "@common-customers", "columns": ["data_gb"],
                           "bounds": [500.0]}})
    outputs: tuple[str, ...] = param("the statistics to open", choices=OUTPUTS,
                                     example=["mean", "std", "correlation"])
    dealer: str = param("a dealer node of the job (serves correlated randomness, holds no data)",
                        example="dealer")
    recipient: str | None = param("a computing party that receives the values (and releases "
                                  "them to the requester)", default=None, example="bank")
    ddof: int = param("variance divisor: rows - ddof (0: population, 1: sample)", default=0,
                      choices=(0, 1))
    rho: float | None = param("differential privacy: the cost (zCDP rho) each owner charges to "
                              "its budget; values are clipped to their bounds and each owner "
                              "adds discrete Gaussian noise to the moments the outputs are "
                              "computed from", default=None, gt=0, example=0.5)

    @property
    def sigma(self) -> float | None:
        """With `rho`: the sigma on the grid of every noised moment (rho shared equally)."""
        if self.rho is None:
            return None
        noised = len(noised_entries(frozenset(self.outputs), self.column_count)) - 1
        return noise_sigma(self.rho / max(noised, 1), NOISED_SENSITIVITY)

    @property
    def column_count(self) -> int:
        return sum(len(ref.columns) for ref in self.inputs.values())

    def check(self, parties: tuple[str, ...]) -> None:
        kind = self.KIND
        self.check_parties(parties, "name columns at two or more parties")
        bounded = sorted(BOUNDED_OUTPUTS & set(self.outputs))
        for party, ref in self.inputs.items():
            if not ref.dataset.startswith(ALIGNMENT_PREFIX):
                raise ConfigError(
                    f"{kind}: party '{party}' must name an alignment (\"@name\", the rows of a "
                    "psi job) in place of a dataset: only then are every party's rows the "
                    "same people in the same order")
            if ref.bounds is None and bounded:
                raise ConfigError(f"{kind}: party '{party}' must give 'bounds' (one per column) "
                                  f"for the outputs {', '.join(bounded)}")
            if ref.bounds is not None and max(ref.bounds) >= MAX_BOUND:
                raise ConfigError(f"{kind}: party '{party}': every bound must be below 2^36")
            if self.rho is not None and ref.bounds is None:
                raise ConfigError(f"{kind}: party '{party}' must give 'bounds' (one per column) "
                                  "with 'rho': they set the noise")
        if self.rho is not None and set(self.outputs) == {"count"}:
            raise ConfigError(f"{kind}: 'rho' with only 'count' would be charged for nothing "
                              "noised (the count is public): leave rho out")
        if (self.sigma or 0.0) > MAX_SIGMA:
            raise ConfigError(f"{kind}: 'rho' {self.rho:g} needs more noise than the shares can "
                              "hold; raise rho")

    def layout(self, parties: tuple[str, ...]) -> Layout:
        """The public shape of the job (the bounds default to 1: unused without them)."""
        refs = [self.inputs[p] for p in self.computing(parties)]
        return Layout(tuple(len(r.columns) for r in refs),
                      tuple(b for r in refs for b in (r.bounds or (1.0,) * len(r.columns))),
                      self.ddof, frozenset(self.outputs))

    def labels(self, parties: tuple[str, ...]) -> list[tuple[str, str]]:
        """(party, column) of every column, in the job's order."""
        return [(p, c) for p in self.computing(parties) for c in self.inputs[p].columns]


@dataclass(repr=False, eq=False)
class VerticalStatisticsResult(Result):
    """The declared outputs: per-column statistics and matrices, labelled by column.

    A column is labelled by its name, or ``party.column`` where two parties' columns have
    the same name. Read them as pandas objects: :meth:`summary` (a row per column),
    :attr:`correlation` and :attr:`covariance` (DataFrames), :attr:`count`.
    """

    columns: list[tuple[str, str]]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    ddof: int = 0
    recipient: str | None = None
    #: With differential privacy: the cost each owner charged (zCDP rho), and the standard
    #: deviation of the noise in each noised moment (a sum of u = x / bound, or of products).
    rho: float | None = None
    noise_sd: float | None = None

    @property
    def labels(self) -> list[str]:
        repeated = {c for c, n in Counter(c for _, c in self.columns).items() if n > 1}
        return [f"{p}.{c}" if c in repeated else c for p, c in self.columns]

    @property
    def count(self) -> int | None:
        """The alignment's rows, when declared."""
        return int(self.values["count"][0]) if "count" in self.values else None

    def _matrix(self, name: str) -> pandas.DataFrame:
        import pandas

        if name not in self.values:
            raise KeyError(f"the job did not declare '{name}' as an output")
        return pandas.DataFrame(self.values[name], index=self.labels, columns=self.labels)

    @property
    def correlation(self) -> pandas.DataFrame:
        """Pearson correlation matrix (NaN for a constant column, as numpy)."""
        return self._matrix("correlation")

    @property
    def covariance(self) -> pandas.DataFrame:
        return self._matrix("covariance")

    def summary(self) -> pandas.DataFrame:
        """A row per column: its party and each declared per-column statistic."""
        return self._per_column().frame().set_index("column")

    def _per_column(self) -> Table:
        names = [n for n in ("mean", "variance", "std") if n in self.values]
        rows = [(label, party, *(float(self.values[n][i]) for n in names))
                for i, (label, (party, _)) in enumerate(zip(self.labels, self.columns,
                                                            strict=True))]
        return Table(("column", "party", *names), rows, decimals_for(FRACTIONAL_BITS) - 1)

    def _matrix_table(self, name: str) -> Table:
        matrix = self.values[name]
        return Table(("", *self.labels), [(label, *map(float, row)) for label, row in
                                          zip(self.labels, matrix, strict=True)], 4)

    def _matrices(self) -> list[str]:
        return [name for name in ("correlation", "covariance") if name in self.values]

    def _has_per_column(self) -> bool:
        return bool({"mean", "variance", "std"} & set(self.values))

    def table(self) -> Table:
        """The per-column statistics if declared, else the first declared matrix."""
        if self._has_per_column():
            return self._per_column()
        if self._matrices():
            return self._matrix_table(self._matrices()[0])
        return Table(("rows",), [(self.count,)])

    def extra_tables(self) -> list[tuple[str, Table]]:
        """The declared matrices :meth:`table` does not show."""
        names = self._matrices() if self._has_per_column() else self._matrices()[1:]
        return [(name, self._matrix_table(name)) for name in names]

    def to_frame(self) -> pandas.DataFrame:
        return self.summary() if self._has_per_column() else self.table().frame()

    def facts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"columns": self.labels, "ddof": self.ddof,
                               "recipient": self.recipient}
        for name in ("correlation", "covariance"):
            if name in self.values:
                out[name] = [[None if np.isnan(v) else float(v) for v in row]
                             for row in self.values[name]]
        if self.count is not None:
            out["count"] = self.count
        if self.rho is not None:
            out.update(rho=self.rho, noise_sd=self.noise_sd)
        return out

    def notes(self) -> list[str]:
        notes = []
        if self.count is not None:
            notes.append(f"over the {self.count:,} rows of the alignment")
        if {"variance", "std", "covariance"} & set(self.values):
            notes.append("variances and covariances divide by " + (
                "rows - 1 (sample)" if self.ddof else "rows (population)"))
        if self.recipient:
            notes.append(f"opened to party '{self.recipient}', which released them to the "
                         "requester")
        if self.rho is not None:
            notes.append(f"with differential privacy, {describe(cost_units(self.rho))} charged "
                         f"by each owner: computed from noised moments (noise sd "
                         f"{self.noise_sd:.4g} on each sum of value / bound)")
        return notes

    def __repr__(self) -> str:
        lines = [super().__repr__()]
        for name, table in self.extra_tables():
            lines += [f"{name}:", table.text()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        extra = "".join(f"<p><strong>{name}</strong></p>{table.html()}"
                        for name, table in self.extra_tables())
        return super()._repr_html_()[:-len("</div>")] + extra + "</div>"


class VerticalStatisticsKind(JobKind[VerticalStatisticsParams, VerticalStatisticsResult]):
    name = "vertical_statistics"
    bounds_values = True
    params_type = VerticalStatisticsParams
    summary = ("means, variances, covariance and correlation of columns different parties hold "
               "about the rows of an alignment, on secret shares with a dealer")

    def declare(self, params: VerticalStatisticsParams, party_id: str) -> DeclaredUse | None:
        declared = params.declared_use(party_id, lambda ref: ref.columns)
        if declared is None or params.rho is None:
            return declared
        return replace(declared, rho=cost_units(params.rho))

    def plan(self, params: VerticalStatisticsParams, party_id: str, datasets: Datasets,
             ) -> DataUse | None:
        if party_id == params.dealer:
            return None
        ref = params.inputs[party_id]
        rows = column_rows(params.KIND, datasets, ref.dataset, ref.columns)
        return DataUse(rows, rows)  # every column has the alignment's rows

    def run(self, params: VerticalStatisticsParams, context: JobContext) -> JobOutcome:
        served = params.serve_as_dealer(context)
        if served is not None:
            return served
        channel = context.channel
        parties = params.computing(context.spec.parties)
        me = channel.party_id
        ref = params.inputs[me]
        alignment = aligned_rows(context, ref.dataset, parties)
        layout = params.layout(context.spec.parties)
        if params.rho is not None:
            return _run_noised(params, context, parties, layout, alignment.size,
                               alignment.size_released)
        columns = bounded_columns(context, params.KIND, ref.dataset, ref.columns, ref.bounds,
                                  parties)  # never clipped: see the module docstring
        rows = alignment.size
        mine = local_columns(columns, ref.bounds or (1.0,) * len(ref.columns), rows,
                             params.ddof)
        ctx = MpcContext(channel, parties, params.dealer, FRACTIONAL_BITS)
        provider = DealerProvider(channel, parties, params.dealer)
        try:
            outputs = vertical_statistics(ctx, provider, layout, rows, mine, context.rng)
        finally:
            provider.close()
        outcome = JobOutcome(rows_used=rows)
        release(ctx, context, outputs, params.recipient, outcome)
        outcome.output = {"openings": outcome.openings}
        return outcome

    def finish(self, params: VerticalStatisticsParams, job: JobResult,
               ) -> VerticalStatisticsResult:
        layout = params.layout(job.parties)
        computing = params.computing(job.parties)
        if params.rho is not None:
            entries = noised_entries(layout.outputs, layout.columns)
            opened = opened_outputs(job, computing, params.recipient, len(entries))
            values = decode_noised(layout, decode(opened, NOISED_BITS))
            sd = math.sqrt(len(computing)) * (params.sigma or 0.0) * 2.0**-NOISED_BITS
            return VerticalStatisticsResult(job, params.labels(job.parties), values,
                                            params.ddof, params.recipient, params.rho, sd)
        opened = opened_outputs(job, computing, params.recipient, sum(layout.sizes().values()))
        values = decode_outputs(layout, decode(opened, FRACTIONAL_BITS))
        return VerticalStatisticsResult(job, params.labels(job.parties), values, params.ddof,
                                        params.recipient)


def _run_noised(params: VerticalStatisticsParams, context: JobContext,
                parties: tuple[str, ...], layout: Layout, rows: int,
                size_released: bool) -> JobOutcome:
    """The differentially private path (module docstring): clipped, noised moments."""
    channel = context.channel
    ref = params.inputs[channel.party_id]
    if not size_released:  # refused at Start already (see Admission): never runs
        raise ConfigError(f"{params.KIND} with 'rho' needs an alignment whose size was "
                          "released")
    values = numeric_matrix(context, params.KIND, ref.dataset, ref.columns)
    limits = np.asarray(ref.bounds, dtype=np.float64)
    clipped = int(np.count_nonzero(np.abs(values) > limits))
    scaled = np.clip(values, -limits, limits) / limits
    ctx = MpcContext(channel, parties, params.dealer, NOISED_BITS)
    provider = DealerProvider(channel, parties, params.dealer)
    try:
        sigma = params.sigma
        assert sigma is not None
        outputs = noised_moments(ctx, provider, layout, rows, scaled, sigma, context.rng)
    finally:
        provider.close()
    outcome = JobOutcome(rows_used=rows, clipped=clipped)
    release(ctx, context, outputs, params.recipient, outcome)
    outcome.output = {"openings": outcome.openings}
    return outcome
