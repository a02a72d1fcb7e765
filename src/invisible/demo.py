"""`invisible demo`: the embedded default, on this machine with nothing but the install.

1. Creates a CA and certificates for three institutions (a bank, a hospital,
   a telco), a dealer and two requesters in a temporary folder, and a config
   per node on free loopback ports, with the bundled sample tables.
2. Starts the three party nodes and the dealer node as separate processes
   and waits until each answers its health check over mutual TLS.
3. Runs a connectivity job: every pair of nodes agrees on a fresh X25519
   secret over mTLS gRPC and confirms it.
4. Runs a secure sum of every party's ``monthly_spend`` (the city's total,
   and per district): each node sends one masked vector, only the total
   comes back. The demo alone also computes the plaintext total from the
   sample files, to show that the two agree.
5. Prints each party's job record.
6. Computes count, mean and standard deviation on secret shares, with a
   fourth node serving as dealer, and shows them beside numpy's.
7. A second requester, `marketing`, whose allowance at every institution is
   one job a day, asks twice: the second request is refused by the parties'
   policies before any data is touched, and the refusal names the rule.
8. Prints each institution's meter report from its own signed ledger, checks
   every ledger's chain and the requesters' receipts against it, stops the
   nodes, and exits non-zero if anything failed or disagreed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import LocalLayout, NodeProcesses, write_local_federation
from invisible.errors import InvisibleError, PolicyError
from invisible.kinds.secure_sum import SecureSumResult
from invisible.metering import report
from invisible.metering.audit import verify_ledger
from invisible.metering.signing import load_public_key
from invisible.node.config import DatasetConfig, load_party_config
from invisible.node.datasets import load_dataset
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets, sample_path

STARTUP_TIMEOUT_S = 20.0
STEPS = 8
#: Each institution's policy for its customers table: the city's statistics office
#: ("coordinator") may run 100 jobs a day, marketing one; every cell needs 10 rows.
DEMO_POLICY = {
    "min_rows": 10,
    "recipients": ["requester"],
    "allow": [
        {"requesters": ["coordinator"], "kinds": ["secure_sum", "statistics"],
         "columns": ["monthly_spend", "district"], "jobs_per_day": 100},
        {"requesters": ["marketing"], "kinds": ["secure_sum"], "columns": ["monthly_spend"],
         "jobs_per_day": 1},
    ],
}
#: Every node's rule for jobs that use none of its data (connectivity, the dealer's service).
DEMO_NODE_POLICY = {"requesters": ["coordinator"], "kinds": ["*"], "jobs_per_day": 100}
BOUND = 100_000.0
DISTRICTS = 8
FRACTIONAL_BITS = 16


def _plaintext(column: str) -> tuple[float, np.ndarray]:
    """What the secure sum must equal; only the demo may look at all tables at once."""
    total, per_district = 0.0, np.zeros(DISTRICTS)
    for party, columns in SAMPLE_COLUMNS.items():
        data = load_dataset(DatasetConfig(SAMPLE_DATASET, sample_path(party), columns))
        values = data.column(column)
        total += float(values.sum())
        per_district += np.bincount(data.column("district"), values, DISTRICTS)
    return total, per_district


def _print_records(result: SecureSumResult) -> None:
    print(f"      {'party':<9} {'rows':>5} {'msgs out/in':>11} {'bytes out/in':>13} "
          f"{'released':>9} {'ms':>6}")
    for party, record in result.records.items():
        print(f"      {party:<9} {record.rows_used:>5} "
              f"{record.messages_sent:>5}/{record.messages_received:<5} "
              f"{record.bytes_sent:>6}/{record.bytes_received:<6} "
              f"{record.bytes_released:>7} B {record.duration_s * 1000:>6.1f}")


def _joint_jobs(federation: Federation, parties: list[str]) -> bool:
    connectivity = federation.connectivity()
    print(f"[3/{STEPS}] connectivity: every pair agreed on a fresh X25519 secret "
          f"({connectivity.seconds * 1000:.0f} ms)")
    inputs = {p: (SAMPLE_DATASET, "monthly_spend") for p in parties}
    total = federation.secure_sum(inputs, BOUND, max_rows=100_000)
    by_district = federation.secure_sum(inputs, BOUND, max_rows=100_000,
                                        group_by="district", categories=DISTRICTS)
    expected_total, expected_by_district = _plaintext("monthly_spend")
    rows = sum(r.rows_used for r in total.records.values())
    tolerance = rows * 2.0 ** -(FRACTIONAL_BITS + 1)  # fixed-point rounding, per value
    districts = by_district.total if by_district.total is not None else np.full(DISTRICTS, np.nan)
    ok = abs(total.value - expected_total) <= tolerance and bool(
        np.all(np.abs(districts - expected_by_district) <= tolerance))
    print(f"[4/{STEPS}] secure sum of monthly_spend over {rows} rows at {len(parties)} parties "
          f"({total.seconds * 1000:.0f} ms):")
    print(f"      secure total    {total.value:>14,.2f}")
    print(f"      plaintext total {expected_total:>14,.2f}   "
          f"{'MATCH' if ok else 'MISMATCH'} (within {tolerance:.1e})")
    print("      per district    " + " ".join(f"{v:,.0f}" for v in districts))
    print(f"[5/{STEPS}] job records of the secure sum (each party sent one masked value):")
    _print_records(total)
    return _statistics(federation, parties, inputs) and ok


def _statistics(federation: Federation, parties: list[str],
                inputs: dict[str, tuple[str, str]]) -> bool:
    """Count, mean and standard deviation computed on shares, with the dealer node."""
    stats = federation.statistics(inputs, 5_000.0, outputs=["count", "mean", "std"],
                                  dealer="dealer", max_rows=100_000)
    values = np.concatenate([
        load_dataset(DatasetConfig(SAMPLE_DATASET, sample_path(p), SAMPLE_COLUMNS[p]))
        .column("monthly_spend") for p in parties])
    # Stated bound: |mean error| <= 2^-f (3 |mean| + 4); std likewise, through the variance.
    tolerance = 2.0 ** -FRACTIONAL_BITS * (3 * abs(values.mean()) + 4)
    ok = (stats["count"] == values.size and abs(stats["mean"] - values.mean()) <= tolerance
          and abs(stats["std"] - values.std()) <= 10 * tolerance)
    print(f"[6/{STEPS}] statistics on shares (Beaver products, exact comparisons and "
          f"truncations from the dealer node), only count, mean and std opened:")
    print(f"      count {stats['count']:>8.0f}   mean {stats['mean']:>9.3f}   std "
          f"{stats['std']:>9.3f}")
    print(f"      numpy {values.size:>8d}   mean {values.mean():>9.3f}   std {values.std():>9.3f}"
          f"   {'MATCH' if ok else 'MISMATCH'} (within {tolerance:.1e} / {10 * tolerance:.1e})")
    return ok


def _second_requester(config: Path, parties: list[str]) -> bool:
    inputs = {p: (SAMPLE_DATASET, "monthly_spend") for p in parties}
    with Federation.from_config(config) as marketing:
        first = marketing.secure_sum(inputs, BOUND, max_rows=100_000)
        print(f"[7/{STEPS}] a second requester, 'marketing' (1 job a day allowed): first job "
              f"total {first.value:,.2f}")
        try:
            marketing.secure_sum(inputs, BOUND, max_rows=100_000)
        except PolicyError as refusal:
            print(f"      second job refused before any data was touched:\n      {refusal}")
            return True
    print("      second job was NOT refused", file=sys.stderr)
    return False


def _meter_reports(layout: LocalLayout) -> bool:
    print(f"[8/{STEPS}] meter reports, each from the institution's own signed ledger:")
    intact = True
    for party, config_path in layout.party_configs.items():
        config = load_party_config(config_path)
        print(f"      --- {party} ---")
        for line in report.to_table(report.ledger_report(config.ledger.path)).splitlines():
            print(f"      {line}")
        key = load_public_key(config.ledger.signing_key.with_suffix(".pub"))
        for requester in layout.coordinator_configs:
            chain, problems = verify_ledger(config.ledger.path, party, key,
                                            layout.directory / f"{requester}-receipts",
                                            config.ledger.signing_key.parent)
            intact = intact and chain.ok and not problems
        print(f"      {chain}; consistent with every requester's receipts: "
              f"{'yes' if intact else 'NO'}")
    return intact


def run_demo() -> int:
    started = time.perf_counter()
    parties = list(SAMPLE_COLUMNS)
    with tempfile.TemporaryDirectory(prefix="invisible-demo-") as folder:
        layout = write_local_federation(Path(folder), parties, sample_datasets(DEMO_POLICY),
                                        coordinators=("coordinator", "marketing"),
                                        dealers=("dealer",), node_policy=DEMO_NODE_POLICY)
        print(f"[1/{STEPS}] certificates and configs for {', '.join(parties)} in {folder}")
        nodes = NodeProcesses(layout).start()
        try:
            with Federation.from_config(layout.coordinator_config) as federation:
                health = federation.health(timeout_s=STARTUP_TIMEOUT_S)
                nodes.check_alive()
                print(f"[2/{STEPS}] three party nodes and a dealer node serving over mutual TLS:")
                for party, info in health.items():
                    print(f"      {party:<9} {layout.addresses[party]:<16} {info.role:<7} "
                          f"datasets: {', '.join(info.datasets) or '-'}")
                ok = _joint_jobs(federation, parties)
            ok = _second_requester(layout.coordinator_configs["marketing"], parties) and ok
            time.sleep(0.2)  # let the nodes countersign each other's last chain heads
            ok = _meter_reports(layout) and ok
        except InvisibleError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            for party in parties:
                tail = nodes.log_tail(party)
                if tail:
                    print(f"  {party} log: {tail}", file=sys.stderr)
            return 1
        finally:
            codes = nodes.stop()
        if any(codes.values()):
            print(f"demo failed: a node exited uncleanly: {codes}", file=sys.stderr)
            return 1
    if not ok:
        print("demo failed: a result, a refusal or a ledger check was not as it must be",
              file=sys.stderr)
        return 1
    print(f"demo finished in {time.perf_counter() - started:.1f} s; all nodes stopped cleanly")
    return 0
