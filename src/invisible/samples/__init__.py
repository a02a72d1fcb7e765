"""Synthetic sample data shipped with the package, for the demo (parties/ holds a copy).

Three institutions of one city (a bank, a hospital, a telco), each with its
own customers; every table has a ``district`` (0-7), a ``monthly_spend`` and a
``late_payment`` column (0 or 1, drawn from a logistic model of the other two,
for learning). Made once with a fixed seed; no real person is in them. The second
row's `monthly_spend` in each table is a canary (1357.91, 1468.02,
1579.13) that the test suite checks never appears in a log line, an error,
a ledger entry or a receipt.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from invisible.coordinator.local import OPEN_POLICY, LocalDataset

SAMPLE_COLUMNS = {
    "bank": {"customer_id": "int", "district": "int", "monthly_spend": "float", "balance": "float",
             "late_payment": "int"},
    "hospital": {"patient_id": "int", "district": "int", "monthly_spend": "float", "visits": "int",
                 "late_payment": "int"},
    "telco": {"subscriber_id": "int", "district": "int", "monthly_spend": "float",
              "data_gb": "float", "late_payment": "int"},
}
SAMPLE_DATASET = "customers"


def sample_path(party: str) -> Path:
    return Path(str(resources.files(__package__).joinpath(f"{party}.csv")))


def sample_datasets(policy: Mapping[str, Any] | None = None,
                    ) -> dict[str, dict[str, LocalDataset]]:
    """The bundled tables as a local federation's datasets, one per party.

    `policy`: the datasets' policy table; by default any coordinator may run
    anything, with k = 10 (see :data:`invisible.coordinator.local.OPEN_POLICY`).
    """
    chosen = dict(OPEN_POLICY) if policy is None else policy
    return {
        party: {SAMPLE_DATASET: LocalDataset(sample_path(party), columns, chosen)}
        for party, columns in SAMPLE_COLUMNS.items()
    }
