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
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from invisible.crypto.fixedpoint import decode
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
    opened_outputs,
    release,
)
from invisible.kinds.params import ColumnInputs, Params, param
from invisible.kinds.results import Result, Table, decimals_for
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.provider import DealerProvider
from invisible.protocols.mpc.vertical import (
    FRACTIONAL_BITS,
    MAX_BOUND,
    OUTPUTS,
    Layout,
    decode_outputs,
    local_columns,
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
        return params.declared_use(party_id, lambda ref: ref.columns)

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
        opened = opened_outputs(job, params.computing(job.parties), params.recipient,
                                sum(layout.sizes().values()))
        values = decode_outputs(layout, decode(opened, FRACTIONAL_BITS))
        return VerticalStatisticsResult(job, params.labels(job.parties), values, params.ddof,
                                        params.recipient)
