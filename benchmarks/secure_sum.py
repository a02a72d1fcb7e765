"""Benchmark `secure_sum`: three party nodes on loopback over mTLS, end to end.

Rows per size n (10^3, 10^5, 10^6; --quick: 10^3, 10^4, 10^5):
- `elements/s`, ours: n / (time from `Federation.secure_sum` call to decoded
  result), each party holding an n-vector (elementwise mode), three node
  processes and the coordinator in this process; peer `numpy`: the
  plaintext sum of the same three vectors; peer `grpc-raw`: n / (time to
  move one n-vector of uint64 from one node process to another over the same
  mTLS channel, measured by the node that sends — a `bandwidth` job).
- `bytes/element/party`: payload bytes each party sent (to peers and
  released to the requester) per element; gRPC/TLS framing not included.

The grpc-raw row's note also gives the CPU time (all node processes and
this one, from /proc) that one secure sum and one raw transfer cost: on a
2-core machine a CPU-bound job cannot finish faster than its CPU time / 2.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from invisible.benchmarking import Row, measure, timing_of
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import OPEN_POLICY, LocalDataset, NodeProcesses, write_local_federation

PARTIES = ("bank", "hospital", "telco")
FULL_SIZES = (10**3, 10**5, 10**6)
QUICK_SIZES = (10**3, 10**4, 10**5)
BOUND = 1000.0


def _write_vectors(folder: Path, sizes: tuple[int, ...]) -> dict[str, dict[str, LocalDataset]]:
    rng = np.random.default_rng(0)  # benchmark data, not secret
    datasets: dict[str, dict[str, LocalDataset]] = {p: {} for p in PARTIES}
    for party in PARTIES:
        for n in sizes:
            path = folder / f"{party}_{n}.csv"
            np.savetxt(path, rng.uniform(-BOUND, BOUND, n), fmt="%.4f", header="w", comments="")
            # Elementwise sums release one cell per element: this policy allows k = 1.
            policy = {**OPEN_POLICY, "min_rows": 1}
            datasets[party][f"v{n}"] = LocalDataset(path, {"w": "float"}, policy)
    return datasets


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the given processes and of this one, in seconds."""
    total = sum(os.times()[:2])
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cpu_per_call(action: Callable[[], object], pids: list[int], calls: int) -> float:
    started = _cpu_seconds(pids)
    for _ in range(calls):
        action()
    return (_cpu_seconds(pids) - started) / calls


def run(quick: bool) -> list[Row]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    repeats = 5 if quick else 7
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as folder:
        datasets = _write_vectors(Path(folder), sizes)
        layout = write_local_federation(Path(folder) / "federation", PARTIES, datasets)
        nodes = NodeProcesses(layout)
        with nodes, Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=120)
            pids = [p.pid for p in nodes.processes.values()]
            for n in sizes:
                inputs = {p: (f"v{n}", "w") for p in PARTIES}
                last = {}

                def secure(inputs: dict = inputs, n: int = n, last: dict = last) -> None:
                    last["result"] = fed.secure_sum(inputs, BOUND, elementwise=True, length=n)

                ours = measure(secure, repeats)
                vectors = [np.loadtxt(datasets[p][f"v{n}"].path, skiprows=1) for p in PARTIES]
                plain = measure(lambda v=vectors: np.sum(v, axis=0), repeats)
                # Against the plaintext answer: 3 inputs each rounded to 2^-17, summed exactly.
                error = float(np.max(np.abs(last["result"].total - np.sum(vectors, axis=0))))
                if error > 3 * 2.0**-17 + 1e-9:
                    raise RuntimeError(f"the secure sum is off by {error:.2e}")
                sends = []

                def probe(sends: list = sends, n: int = n) -> None:
                    sends.append(fed.bandwidth("bank", "hospital", n).send_seconds)

                for _ in range(repeats + 1):
                    probe()
                raw = timing_of(sends[1:])
                cpu_ours = _cpu_per_call(secure, pids, repeats) * 1000
                cpu_raw = _cpu_per_call(probe, pids, repeats) * 1000
                case = f"n={n:.0e} elements, 3 parties, mTLS loopback"
                rows += [
                    Row(case, "elements/s", "higher", n / ours.median, "numpy", n / plain.median,
                        f"ours {ours.describe()}, max error {error:.1e} against numpy; numpy "
                        f"{plain.describe()}", timing=ours,
                        peer_timing=plain, per=n),
                    Row(case, "elements/s", "higher", n / ours.median, "grpc-raw", n / raw.median,
                        f"raw = one {8 * n:,}-byte vector node->node, {raw.describe()}; CPU "
                        f"(all processes) per secure sum {cpu_ours:.0f} ms, per raw job "
                        f"{cpu_raw:.0f} ms (includes making the random vector)", timing=ours,
                        peer_timing=raw, per=n),
                ]
                records = last["result"].records.values()
                per_party = np.mean([(r.bytes_sent + r.bytes_released) / n for r in records])
                rows.append(Row(case, "bytes/element/party", "lower", float(per_party),
                                note="payload bytes: 8/element masked vector + 64 B of X25519 keys"))
    return rows
