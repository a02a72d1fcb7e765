"""Meter reports: what was done with a node's data, by whom, how often, how much.

One row per (requester, dataset, job kind): jobs finished, failed, refused
and interrupted, rows touched, payload bytes sent and received, values
opened. As a list of dicts, CSV, JSON, a printable table, or a pandas
DataFrame for notebooks.

Filters are checked, not guessed: :func:`parse_since` refuses what is not an
ISO date or time (``2026-11-31`` is not), and :func:`check_events` refuses an
event no node writes, instead of answering with nothing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invisible.errors import ConfigError
from invisible.metering.approvals import AWAITING
from invisible.metering.approvals import EVENTS as DECISION_EVENTS
from invisible.metering.entries import (
    PRIVATE_ROWS,
    REVOKED_REFUSED,
    TERMINAL_EVENTS,
    LedgerEntry,
)
from invisible.metering.keys import KEY_ROTATED
from invisible.metering.ledger import Ledger
from invisible.metering.privacy import rho_of
from invisible.metering.startup import ACCEPTED_BROKEN

if TYPE_CHECKING:
    import pandas

COLUMNS = ("requester", "dataset", "kind", "jobs", "failed", "refused", "interrupted",
           "rows_touched", "bytes_sent", "bytes_received", "bytes_released", "values_opened",
           "rho_spent")
_COUNTED = {"finished": "jobs", "failed": "failed", "refused": "refused",
            "interrupted": "interrupted"}
#: Every event a node writes (see invisible.metering.entries).
KNOWN_EVENTS = frozenset({"requested", "accepted", *TERMINAL_EVENTS, "clipped", "witnessed",
                          ACCEPTED_BROKEN, KEY_ROTATED, REVOKED_REFUSED, AWAITING,
                          *DECISION_EVENTS.values()})


def parse_since(text: str) -> str:
    """An ISO date or time as the ledger's UTC timestamps compare with it (naive means UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"since {text!r} is not a date or time: give an ISO date such as "
                          "2026-11-01 or a time such as 2026-11-01T09:30Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_events(events: Iterable[str], present: Iterable[str] = ()) -> None:
    """Refuse an event that no node writes and that does not occur in the ledger."""
    known = KNOWN_EVENTS | set(present)
    unknown = sorted(set(events) - known)
    if unknown:
        raise ConfigError(f"no such event {', '.join(repr(e) for e in unknown)}; a ledger "
                          f"records {', '.join(sorted(known))}")


def report_rows(entries: Iterable[LedgerEntry]) -> list[dict[str, Any]]:
    """One row per (requester, dataset, kind). `rho_spent` is the privacy cost reserved, as
    budgets count it: accepted jobs, less those cancelled before they ran."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    nano_rho: dict[tuple[str, str, str], int] = {}
    for entry in entries:
        key = (entry.requester, entry.dataset or "-", entry.kind)
        if entry.event in ("accepted", "cancelled") and "rho" in entry.body:
            released = entry.event == "cancelled" and entry.body.get("released") is True
            if entry.event == "accepted" or released:
                nano_rho[key] = nano_rho.get(key, 0) + (-1 if released else 1) * int(
                    entry.body["rho"])
        counter = _COUNTED.get(entry.event)
        if counter is None and entry.event != PRIVATE_ROWS:
            continue
        row = rows.setdefault(key, _empty_row(key))
        if counter is None:  # the rows of a job, kept out of its receipt
            row["rows_touched"] += entry.rows
            continue
        row[counter] += 1
        if entry.event == "finished":
            row["rows_touched"] += entry.rows
            row["values_opened"] += int(entry.body.get("values_opened", 0))
            row["bytes_released"] += int(entry.body.get("bytes_released", 0))
        if entry.event in ("finished", "failed"):
            row["bytes_sent"] += int(entry.body.get("bytes_sent", 0))
            row["bytes_received"] += int(entry.body.get("bytes_received", 0))
    for key, spent in nano_rho.items():
        rows.setdefault(key, _empty_row(key))["rho_spent"] = rho_of(spent)
    return [rows[key] for key in sorted(rows)]


def _empty_row(key: tuple[str, str, str]) -> dict[str, Any]:
    return {**dict(zip(COLUMNS, (*key, *[0] * (len(COLUMNS) - 3)), strict=True)),
            "rho_spent": 0.0}


def ledger_report(ledger_path: Path, since: str | None = None) -> list[dict[str, Any]]:
    """The report of one ledger, of the entries since an ISO date or time (UTC if naive)."""
    start = parse_since(since) if since else None
    ledger = Ledger(ledger_path, "", None)
    try:
        return report_rows(ledger.entries(since=start))
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
    headers = ("requester", "dataset", "kind", "jobs", "failed", "refused", "interrupted",
               "rows", "bytes out", "bytes in", "released", "opened", "rho")
    keys = ("requester", "dataset", "kind", "jobs", "failed", "refused", "interrupted",
            "rows_touched", "bytes_sent", "bytes_received", "bytes_released", "values_opened",
            "rho_spent")
    cells = [headers] + [tuple(f"{r[k]:g}" if k == "rho_spent" else str(r[k]) for k in keys)
                         for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(line, widths, strict=True))) for line in cells]
    return "\n".join(lines) if rows else "no jobs recorded"
