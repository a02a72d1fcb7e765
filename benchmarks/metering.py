"""Benchmark `metering`: what the ledger costs a job, and how fast a ledger verifies.

Rows:
- `ms/job/node`, lower is better: the end-to-end time of a small secure sum
  (three node processes on loopback over mTLS, the sample tables, 720 rows)
  with every node's ledger on (ours) against the same nodes with a no-op
  ledger store (peer `no-ledger`), in the same run. The three nodes meter in
  parallel, so the difference is the latency metering adds per node and job.
  Jobs are started 50 ms apart, so each meets idle nodes: this is latency,
  not throughput (the chain-head countersigning after each result is off
  the job's path but takes CPU on a 2-core machine).
- `entries/s`, higher is better: `meter verify` (hash chain and Ed25519
  signatures, signatures in parallel worker processes) over a ledger of
  10^5 entries (--quick: 10^4), from reading the SQLite file to the verdict:
  the median of five runs after a warm-up.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from invisible.benchmarking import Row, Timing, measure, timing_of
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import NodeProcesses, write_local_federation
from invisible.metering.entries import PendingEntry
from invisible.metering.ledger import Ledger
from invisible.metering.meter import JobMeta, Meter, NullLedgerStore
from invisible.metering.metrics import NodeMetrics
from invisible.metering.policy import UseRequest, parse_policy
from invisible.metering.signing import generate_signing_key, load_public_key, load_signing_key
from invisible.metering.verify import verify_rows
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets

PARTIES = tuple(SAMPLE_COLUMNS)
PAUSE_S = 0.05


def _job_latency(folder: Path, store: str, repeats: int) -> Timing:
    layout = write_local_federation(folder, PARTIES, sample_datasets())
    for config in layout.party_configs.values():
        config.write_text(config.read_text() + f'\n[ledger]\nstore = "{store}"\n')
    inputs = {p: (SAMPLE_DATASET, "monthly_spend") for p in PARTIES}
    with NodeProcesses(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.health(timeout_s=60)

        def isolated_job() -> None:
            # Latency of one job on idle nodes: let the previous job's countersigning (which
            # runs after its result is released) finish before the next one starts.
            time.sleep(PAUSE_S)
            started = time.perf_counter()
            fed.secure_sum(inputs, 1e5, max_rows=1000)
            samples.append(time.perf_counter() - started)

        samples: list[float] = []
        measure(isolated_job, repeats, warmup=3)
    return timing_of(samples[3:])


def _meter_calls(folder: Path, store: str, repeats: int) -> Timing:
    """Median time of one job's metering at one node (admit, then close), in this process."""
    policy = parse_policy({"allow": [{"requesters": ["*"], "kinds": ["*"], "columns": ["*"]}]},
                          "benchmark")
    if store == "sqlite":
        generate_signing_key(folder / "m-ledger.key", folder / "m-ledger.pub")
        ledger = Ledger(folder / "m.sqlite", "m", load_signing_key(folder / "m-ledger.key"))
        meter = Meter("m", ledger, {SAMPLE_DATASET: policy}, NodeMetrics())
    else:
        meter = Meter("m", NullLedgerStore("m"), {SAMPLE_DATASET: policy}, NodeMetrics())
    counter = iter(range(10**9))

    def one_job() -> None:
        job_id = f"job-{next(counter)}"
        job = JobMeta(job_id, "coordinator", "secure_sum", UseRequest(
            job_id, "coordinator", "secure_sum", SAMPLE_DATASET, ("monthly_spend",), 240, 240))
        meter.admit(job)
        meter.close(job, "finished", {"bytes_sent": 64, "bytes_received": 64}, rows=240,
                    outputs={"to": "coordinator"})

    return measure(one_job, repeats, warmup=5)


def _verify_timing(folder: Path, entries: int, repeats: int) -> Timing:
    generate_signing_key(folder / "n-ledger.key", folder / "n-ledger.pub")
    ledger = Ledger(folder / "n.sqlite", "n", load_signing_key(folder / "n-ledger.key"))
    batch = [PendingEntry(f"job-{i // 4}", ("requested", "accepted", "finished", "witnessed")[i % 4],
                          "analyst", "secure_sum", "customers", 240,
                          {"columns": ["monthly_spend"], "bytes_sent": 64})
             for i in range(entries)]
    for start in range(0, entries, 10_000):
        ledger.append(*batch[start:start + 10_000])
    ledger.close()
    key = load_public_key(folder / "n-ledger.pub")

    def verify() -> None:
        reader = Ledger(folder / "n.sqlite", "n", None)
        report = verify_rows(reader.raw_rows(), key)  # what `invisible meter verify` runs
        reader.close()
        if not report.ok or report.entries != entries:
            raise RuntimeError(f"benchmark ledger did not verify: {report}")

    return measure(verify, repeats)


def run(quick: bool) -> list[Row]:
    repeats = 15 if quick else 41
    entries = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as folder:
        root = Path(folder)
        # Alternate the two configurations so drift on the machine hits both alike.
        on, off = [], []
        for round_ in range(2):
            on.append(_job_latency(root / f"on{round_}", "sqlite", repeats))
            off.append(_job_latency(root / f"off{round_}", "none", repeats))
        ledger_on = min(on, key=lambda t: t.median)
        ledger_off = min(off, key=lambda t: t.median)
        calls_on = _meter_calls(root, "sqlite", repeats * 10)
        calls_off = _meter_calls(root, "none", repeats * 10)
        verified = _verify_timing(root, entries, repeats=5)
    added = ledger_on.median - ledger_off.median

    def medians(timings: list[Timing]) -> list[str]:
        return [f"{t.median * 1000:.1f}" for t in timings]

    return [
        Row("small secure sum (3 nodes, 720 rows), mTLS loopback", "ms/job/node", "lower",
            ledger_on.median * 1000, "no-ledger", ledger_off.median * 1000,
            f"added by metering: {added * 1000:.2f} ms per job (each node meters in parallel); "
            f"best of 2 rounds of medians over {repeats} jobs after 3 warm-up jobs: on "
            f"{medians(on)}, off {medians(off)}",
            timing=ledger_on, peer_timing=ledger_off, scale=1000),
        Row("one node's metering of one job (admit + close), in process", "ms/job/node", "lower",
            calls_on.median * 1000, "no-ledger", calls_off.median * 1000,
            f"added: {(calls_on.median - calls_off.median) * 1000:.2f} ms: policy check, quota "
            "read, 3 signed entries in 2 durable SQLite transactions (WAL, synchronous=FULL)",
            timing=calls_on, peer_timing=calls_off, scale=1000),
        Row(f"meter verify, ledger of {entries:,} entries", "entries/s", "higher",
            entries / verified.median,
            note=f"{verified.describe()} for the whole ledger (goal for 10^5: under 10 s)",
            timing=verified, per=entries),
    ]
