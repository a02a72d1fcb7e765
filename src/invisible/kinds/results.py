"""Results people can read: every kind's result is a table with a text and an HTML view.

A kind's result derives from :class:`Result`: it keeps the gathered job
(records, receipts, raw outputs) and says how its decoded values read as a
:class:`Table`. From that come ``repr`` (the CLI prints it), ``_repr_html_``
(notebooks), ``to_frame`` (a pandas DataFrame) and ``to_json``. Fixed-point
values are shown with as many decimals as the job's resolution carries
(2^-16 is about 1.5e-5: five decimals); the values themselves keep full
float64 precision.
"""

from __future__ import annotations

import html
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from invisible.jobspec import JobRecord, JobResult

if TYPE_CHECKING:
    import pandas


def decimals_for(fractional_bits: int) -> int:
    """How many decimals a value with `fractional_bits` of resolution carries."""
    return max(0, math.ceil(fractional_bits * math.log10(2)))


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    #: Decimals shown for floats (the values themselves are kept whole).
    decimals: int = 6

    def cell(self, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:,.{self.decimals}f}"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value) or "-"
        return str(value)

    def text(self, indent: str = "  ") -> str:
        cells = [[self.cell(v) for v in row] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        numeric = [all(isinstance(row[i], int | float) and not isinstance(row[i], bool)
                       for row in self.rows) and bool(self.rows) for i in range(len(widths))]

        def line(values: list[str]) -> str:
            return indent + "  ".join(v.rjust(w) if n else v.ljust(w)
                                      for v, w, n in zip(values, widths, numeric, strict=True))
        return "\n".join([line(list(self.columns)), *(line(c) for c in cells)]).rstrip()

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(self.cell(v))}</td>" for v in row)
                       + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def frame(self) -> pandas.DataFrame:
        import pandas

        return pandas.DataFrame(self.rows, columns=list(self.columns))

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(repr=False, eq=False)
class Result(ABC):
    """Base of every kind's result; `job` is what the coordinator gathered."""

    job: JobResult = field(repr=False)

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def seconds(self) -> float:
        return self.job.seconds

    @property
    def records(self) -> dict[str, JobRecord]:
        """Per party: rows used, messages and bytes, values opened, bytes released, duration."""
        return self.job.records

    @property
    def receipts(self) -> dict[str, list[dict[str, Any]]]:
        """Each party's signed ledger entries for this job (verify with its ledger key)."""
        return self.job.receipts

    @abstractmethod
    def table(self) -> Table:
        """The decoded result as a table."""

    def notes(self) -> list[str]:
        """Lines printed under the table (who received what, how values are shown)."""
        return []

    def facts(self) -> dict[str, Any]:
        """Plain facts about the result for its JSON form (who received it, resolution...)."""
        return {}

    def title(self) -> str:
        return (f"{self.kind} job '{self.job_id}' on {', '.join(self.job.parties)} "
                f"({self.seconds * 1000:.0f} ms)")

    def records_table(self) -> Table:
        return Table(
            ("party", "rows", "msgs out", "msgs in", "bytes out", "bytes in", "released B",
             "opened", "ms"),
            [(p, r.rows_used, r.messages_sent, r.messages_received, r.bytes_sent,
              r.bytes_received, r.bytes_released, r.values_opened, round(r.duration_s * 1000, 1))
             for p, r in self.records.items()], decimals=1)

    def to_frame(self) -> pandas.DataFrame:
        return self.table().frame()

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "kind": self.kind, "parties": list(self.job.parties),
                "seconds": self.seconds, "result": self.table().records(),
                **self.facts(), "notes": self.notes(),
                "records": {p: r.__dict__ for p, r in self.records.items()}}

    def __repr__(self) -> str:
        lines = [self.title(), self.table().text(), *("  " + n for n in self.notes())]
        return "\n".join(lines)

    def report(self) -> str:
        """The result, then each party's record of the job (what `invisible job run` prints)."""
        return f"{self!r}\nper party:\n{self.records_table().text()}"

    def _repr_html_(self) -> str:
        notes = "".join(f"<br><small>{html.escape(n)}</small>" for n in self.notes())
        return (f"<div><strong>{html.escape(self.title())}</strong>{self.table().html()}{notes}"
                f"<details><summary>per party</summary>{self.records_table().html()}</details>"
                "</div>")
