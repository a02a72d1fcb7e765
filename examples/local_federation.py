"""A whole federation on this machine, driven from Python: sums, statistics, meter reports.

    .venv/bin/python examples/local_federation.py

Makes certificates and configs in a temporary folder, runs the three party
nodes and a dealer node as threads of this process (real gRPC with mutual
TLS on loopback), asks for the city's total and per-district spending and
for statistics on secret shares, prints each result as the table it reads
as, and prints what each institution's ledger recorded.
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
        layout = write_local_federation(Path(folder), parties, sample_datasets(),
                                        dealers=("dealer",))
        inputs = {party: (SAMPLE_DATASET, "monthly_spend") for party in parties}
        with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as federation:
            total = federation.secure_sum(inputs, bound=100_000.0, max_rows=100_000)
            print(total.report(), end="\n\n")  # the total, then each party's record of the job
            by_district = federation.secure_sum(inputs, bound=100_000.0, max_rows=100_000,
                                                group_by="district", categories=8)
            print(by_district, end="\n\n")
            # On secret shares with the dealer's randomness; ddof=1: the sample variance.
            stats = federation.statistics(inputs, bound=5_000.0, max_rows=10_000,
                                          outputs=("count", "mean", "std"), dealer="dealer",
                                          ddof=1)
            print(stats)
        for party, config in layout.party_configs.items():
            print(f"\nmeter report of {party}:")
            print(meter_report(config).to_string(index=False))


if __name__ == "__main__":
    main()
