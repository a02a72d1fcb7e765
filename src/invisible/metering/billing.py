"""Bills: what each job cost at this node, priced by the owner's price list.

Every job's terminal entry (finished, failed, or refused when it was to run) records what
it used here: rows touched, payload bytes sent and received, rounds (protocol steps in
which this node sent), tuples (ring elements of correlated randomness received from
dealers), Paillier ciphertext operations, CPU seconds of the thread that ran it, and the
privacy cost it reserved. A price list in the dataset's policy (or, for jobs that use no
data here, in the node's ``[policy]``) turns those into an amount, written into the same
entry, so it is signed and in the requester's receipt::

    [datasets.customers.policy.prices]
    currency = "CNY"
    job = 1.0               # per job
    row = 0.0001            # per row touched
    megabyte = 0.02         # per 10^6 payload bytes, sent and received
    round = 0.001
    tuple = 0.000001        # per ring element from a dealer
    ciphertext_op = 0.00001
    cpu_second = 0.05
    rho = 10.0              # per unit of zCDP rho reserved

Prices are decimals (a TOML string keeps every digit: ``row = "0.0001"``); amounts are
computed in decimal and rounded half-up to 10^-6, so a bill is the exact sum of its
entries. A measure the receipt does not show is not priced: a job whose rows are private
to this node (an alignment whose size was not released) is billed for 0 rows, or the
amount would tell the requester the count.

:func:`bill_rows` sums the priced entries per requester and dataset for a period
(`invisible meter bill`, :func:`invisible.api.meter_bill`); its totals are the sums of the
receipts' amounts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invisible.errors import ConfigError
from invisible.metering.entries import LedgerEntry

if TYPE_CHECKING:
    import pandas

#: What a price list may price, and the unit of each.
UNITS = {"job": "job", "row": "row", "megabyte": "10^6 bytes", "round": "round",
         "tuple": "ring element", "ciphertext_op": "ciphertext", "cpu_second": "CPU second",
         "rho": "zCDP rho"}
BILLED_EVENTS = frozenset({"finished", "failed", "refused"})
CENT = Decimal("0.000001")
BILL_COLUMNS = ("requester", "dataset", "currency", "jobs", "rows", "megabytes", "rounds",
                "tuples", "ciphertext_ops", "cpu_seconds", "rho", "amount")


@dataclass(frozen=True)
class PriceList:
    currency: str
    prices: dict[str, Decimal]

    def amount(self, used: dict[str, Decimal]) -> Decimal:
        total = sum((price * used.get(measure, Decimal(0))
                     for measure, price in self.prices.items()), Decimal(0))
        return total.quantize(CENT, ROUND_HALF_UP)


def parse_prices(table: Any, where: str) -> PriceList:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - set(UNITS) - {"currency"})
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)} (it prices: "
                          f"{', '.join(UNITS)})")
    currency = table.get("currency")
    if not isinstance(currency, str) or not currency.strip() or len(currency) > 16:
        raise ConfigError(f"{where}.currency must name the currency (e.g. \"CNY\")")
    prices = {}
    for measure in UNITS:
        if measure in table:
            prices[measure] = _price(table[measure], f"{where}.{measure}")
    return PriceList(currency.strip(), prices)


def _price(value: Any, where: str) -> Decimal:
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise InvalidOperation
        price = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ConfigError(f"{where} must be a non-negative decimal number") from None
    if not price.is_finite() or price < 0 or (isinstance(value, float)
                                              and not math.isfinite(value)):
        raise ConfigError(f"{where} must be a non-negative decimal number")
    return price


def measures(body: dict[str, Any], rows: int) -> dict[str, Decimal]:
    """What a terminal entry's body says the job used here, in the price list's units."""
    def number(key: str) -> Decimal:
        value = body.get(key, 0)
        return Decimal(repr(value) if isinstance(value, float) else int(value))

    moved = number("bytes_sent") + number("bytes_received")
    return {"job": Decimal(1), "row": Decimal(rows), "megabyte": moved / Decimal(10**6),
            "round": number("rounds"), "tuple": number("tuples"),
            "ciphertext_op": number("ciphertext_ops"), "cpu_second": number("cpu_s"),
            "rho": number("rho") / Decimal(10**9)}


def bill(prices: PriceList, body: dict[str, Any], rows: int) -> dict[str, str]:
    """The `bill` of a terminal entry: its amount and currency."""
    return {"amount": str(prices.amount(measures(body, rows))), "currency": prices.currency}


def bill_rows(entries: Iterable[LedgerEntry], until: str | None = None,
              requester: str | None = None) -> list[dict[str, Any]]:
    """Per (requester, dataset, currency), the priced jobs of `entries` (already limited to
    a start) before `until`, and their amounts: each amount the sum of receipts'."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in entries:
        priced = entry.body.get("bill")
        if entry.event not in BILLED_EVENTS or not isinstance(priced, dict):
            continue
        if (until is not None and entry.ts >= until) or (
                requester is not None and entry.requester != requester):
            continue
        key = (entry.requester, entry.dataset or "-", str(priced.get("currency", "")))
        row = rows.setdefault(key, {**dict(zip(BILL_COLUMNS[:3], key, strict=True)),
                                    **{c: Decimal(0) for c in BILL_COLUMNS[3:]}})
        used = measures(entry.body, entry.rows)
        row["jobs"] += 1
        row["rows"] += used["row"]
        row["megabytes"] += used["megabyte"]
        row["rounds"] += used["round"]
        row["tuples"] += used["tuple"]
        row["ciphertext_ops"] += used["ciphertext_op"]
        row["cpu_seconds"] += used["cpu_second"]
        row["rho"] += used["rho"]
        row["amount"] += Decimal(str(priced["amount"]))
    return [_plain(rows[key]) for key in sorted(rows)]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Counts as int, measures as float, the amount as its exact decimal string."""
    out = dict(row)
    for column in ("jobs", "rows", "rounds", "tuples", "ciphertext_ops"):
        out[column] = int(row[column])
    for column in ("megabytes", "cpu_seconds", "rho"):
        out[column] = float(row[column])
    out["amount"] = str(row["amount"].quantize(CENT))
    return out


def ledger_bill(ledger_path: Path, since: str | None = None, until: str | None = None,
                requester: str | None = None) -> list[dict[str, Any]]:
    """The bill of one ledger for [since, until) (ISO dates or times, UTC if naive)."""
    from invisible.metering.ledger import Ledger
    from invisible.metering.report import parse_since

    start = parse_since(since) if since else None
    end = parse_since(until) if until else None
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"until {until!r} is not after since {since!r}")
    ledger = Ledger(ledger_path, "", None)
    try:
        return bill_rows(ledger.entries(since=start), end, requester)
    finally:
        ledger.close()


def bill_frame(rows: list[dict[str, Any]]) -> pandas.DataFrame:
    import pandas

    frame = pandas.DataFrame(rows, columns=list(BILL_COLUMNS))
    frame["amount"] = [Decimal(a) for a in frame["amount"]]  # exact, as the receipts say
    return frame


def bill_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no priced jobs in the period"
    headers = ("requester", "dataset", "jobs", "rows", "MB", "rounds", "tuples", "ciphertexts",
               "CPU s", "rho", "amount")
    cells = [headers] + [(r["requester"], r["dataset"], str(r["jobs"]), str(r["rows"]),
                          f"{r['megabytes']:.3f}", str(r["rounds"]), str(r["tuples"]),
                          str(r["ciphertext_ops"]), f"{r['cpu_seconds']:.3f}", f"{r['rho']:g}",
                          f"{r['amount']} {r['currency']}") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True)))
                     for line in cells)
