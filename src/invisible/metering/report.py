"""Meter reports: what was done with a node's data, by whom, how often, how much.

One row per (requester, dataset, job kind): jobs finished, failed, refused
and interrupted, rows touched, payload bytes sent and received, values
opened. As a list of dicts, CSV, JSON, a printable table, or a pandas
DataFrame for notebooks.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invisible.metering.entries import LedgerEntry
from invisible.metering.ledger import Ledger

if TYPE_CHECKING:
    import pandas

COLUMNS = ("requester", "dataset", "kind", "jobs", "failed", "refused", "interrupted",
           "rows_touched", "bytes_sent", "bytes_received", "bytes_released", "values_opened")
_COUNTED = {"finished": "jobs", "failed": "failed", "refused": "refused",
            "interrupted": "interrupted"}


def report_rows(entries: Iterable[LedgerEntry]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in entries:
        counter = _COUNTED.get(entry.event)
        if counter is None:
            continue
        key = (entry.requester, entry.dataset or "-", entry.kind)
        row = rows.setdefault(key, dict(zip(COLUMNS, (*key, *[0] * (len(COLUMNS) - 3)),
                                            strict=True)))
        row[counter] += 1
        if entry.event == "finished":
            row["rows_touched"] += entry.rows
            row["values_opened"] += int(entry.body.get("values_opened", 0))
            row["bytes_released"] += int(entry.body.get("bytes_released", 0))
        if entry.event in ("finished", "failed"):
            row["bytes_sent"] += int(entry.body.get("bytes_sent", 0))
            row["bytes_received"] += int(entry.body.get("bytes_received", 0))
    return [rows[key] for key in sorted(rows)]


def ledger_report(ledger_path: Path, since: str | None = None) -> list[dict[str, Any]]:
    ledger = Ledger(ledger_path, "", None)
    try:
        return report_rows(ledger.entries(since=since))
    finally:
        ledger.close()


def report_frame(rows: list[dict[str, Any]]) -> pandas.DataFrame:
    import pandas

    return pandas.DataFrame(rows, columns=list(COLUMNS))


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2)


def to_table(rows: list[dict[str, Any]]) -> str:
    headers = ("requester", "dataset", "kind", "jobs", "failed", "refused", "rows", "bytes out",
               "bytes in", "released", "opened")
    keys = ("requester", "dataset", "kind", "jobs", "failed", "refused", "rows_touched",
            "bytes_sent", "bytes_received", "bytes_released", "values_opened")
    cells = [headers] + [tuple(str(r[k]) for k in keys) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(line, widths, strict=True))) for line in cells]
    return "\n".join(lines) if rows else "no jobs recorded"
