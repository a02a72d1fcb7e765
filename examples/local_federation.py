"""A whole federation on this machine, driven from Python: secure sums and meter reports.

    .venv/bin/python examples/local_federation.py

Makes certificates and configs in a temporary folder, runs the three party
nodes as threads of this process (real gRPC with mutual TLS on loopback),
asks for the city's total and per-district spending, and prints what each
institution's ledger recorded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from invisible.api import Federation, meter_report
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets


def main() -> None:
    parties = list(SAMPLE_COLUMNS)
    with tempfile.TemporaryDirectory() as folder:
        layout = write_local_federation(Path(folder), parties, sample_datasets())
        inputs = {party: (SAMPLE_DATASET, "monthly_spend") for party in parties}
        with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as federation:
            total = federation.secure_sum(inputs, bound=100_000.0, max_rows=100_000)
            print(f"total monthly spending: {total.value:,.2f}")
            by_district = federation.secure_sum(inputs, bound=100_000.0, max_rows=100_000,
                                                group_by="district", categories=8)
            print("per district:", [round(v, 2) for v in by_district.total.tolist()])
            for party, record in total.records.items():
                print(f"  {party}: {record.rows_used} rows, {record.bytes_sent} bytes sent, "
                      f"{record.duration_s * 1000:.1f} ms")
        for party, config in layout.party_configs.items():
            print(f"\nmeter report of {party}:")
            print(meter_report(config).to_string(index=False))


if __name__ == "__main__":
    main()
