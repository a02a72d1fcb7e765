"""Benchmark `dp`: what differential privacy costs.

Rows:
- `samples/s`, higher is better: discrete Gaussian noise drawn by
  :func:`invisible.crypto.noise.discrete_gaussian` from an AES-CTR generator,
  10^6 samples per call (--quick: 10^5) at sigma = 1.3 x 10^10 grid units (a
  secure sum's for a bound of 10^5 at 16 fractional bits, rho = 0.5). Goal: at least 10^6/s.
- `seconds` per job, lower is better: one secure sum of n per-category totals (every
  row its own category; n = 10^6, --quick: 10^5) by three node processes
  on loopback over mTLS, noised (rho = 0.5: each node draws n samples and
  checks and charges four privacy budgets) against the same job without
  noise (peer `plain`), in the same run, jobs alternating. Goal: the noised
  job within 10% of the plain one.

- `seconds` per job, lower is better: the same tables' single total (one noise
  sample per party: what remains is the budgets' reads and charges), noised
  against plain.
- `seconds` per job, lower is better: a `statistics` job (count, mean, std of
  the sample tables' 720 rows; three node processes and a dealer), noised
  (rho = 0.5: noised moments, opened and divided in the clear) against the
  same job without noise (peer `plain`: division and square root on secret
  shares with the dealer's tuples), jobs alternating. Both are checked
  against numpy's answer on the same rows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from invisible.benchmarking import Row, Timing, measure, timing_of
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import (
    OPEN_POLICY,
    LocalDataset,
    NodeProcesses,
    write_local_federation,
)
from invisible.crypto.noise import discrete_gaussian
from invisible.crypto.prg import Prg
from invisible.metering.privacy import noise_sigma
from invisible.node.config import DatasetConfig
from invisible.node.datasets import load_dataset
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets, sample_path

PARTIES = ("bank", "hospital", "telco")
BOUND = 1e5
RHO = 0.5
COLUMN = "monthly_spend"
STATS_BOUND = 5000.0


def _noise_rate(samples: int, repeats: int) -> tuple[float, object]:
    prg = Prg.from_os()
    sigma = noise_sigma(RHO, 2 * int(BOUND * 2**16))  # a secure sum's, for a row replaced
    timing = measure(lambda: discrete_gaussian(prg, sigma, samples), repeats, warmup=2)
    return samples / timing.median, timing


def _datasets(folder: Path, rows: int) -> tuple[dict[str, dict[str, LocalDataset]],
                                                 np.ndarray]:
    """Each party's table (an amount per row, every row its own cell) and the exact
    per-cell totals."""
    rng = np.random.default_rng(0)  # benchmark data, not secret
    policy = {"min_rows": 1, "rho_per_day": 1e6, "rho_total": 1e9,
              "allow": [{"requesters": ["*"], "kinds": ["*"], "columns": ["*"],
                         "rho_per_day": 1e6, "rho_total": 1e9}]}
    datasets = {}
    exact = np.zeros(rows)
    for party in PARTIES:
        path = folder / f"{party}.csv"
        table = np.column_stack([rng.uniform(0, BOUND, rows).round(2), np.arange(rows)])
        exact += table[:, 0]
        np.savetxt(path, table, fmt=["%.2f", "%d"], delimiter=",", header="amount,cell",
                   comments="")
        datasets[party] = {"cells": LocalDataset(path, {"amount": "float", "cell": "int"},
                                                 policy)}
    return datasets, exact


def run(quick: bool) -> list[Row]:
    samples = 10**5 if quick else 10**6
    rows = 10**5 if quick else 10**6
    repeats = 5 if quick else 9
    rate, noise_timing = _noise_rate(samples, repeats * 2)
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as folder:
        root = Path(folder)
        datasets, exact = _datasets(root, rows)
        layout = write_local_federation(root / "fed", PARTIES, datasets)
        inputs = {p: ("cells", "amount") for p in PARTIES}
        with NodeProcesses(layout), Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=60)
            times: dict[tuple[bool, bool], list[float]] = {
                (n, g): [] for n in (True, False) for g in (True, False)}
            results = {}
            totals = {}

            def job(noised: bool, grouped: bool) -> None:
                started = time.perf_counter()
                result = fed.secure_sum(inputs, BOUND, group_by="cell" if grouped else None,
                                        categories=rows if grouped else None, max_rows=rows,
                                        rho=RHO if noised else None)
                times[(noised, grouped)].append(time.perf_counter() - started)
                (results if grouped else totals)[noised] = result.total

            for index in range(2 + repeats):  # alternating, after two rounds of warm-up
                for key in times:
                    job(*key)
                if index < 2:
                    for taken in times.values():
                        taken.clear()
    noised, plain = timing_of(times[(True, True)]), timing_of(times[(False, True)])
    total_noised = timing_of(times[(True, False)])
    total_plain = timing_of(times[(False, False)])
    stats_noised, stats_plain, stats_note = _statistics(repeats)
    error = float(np.abs(results[False] - exact).max())  # rounding to 2^-16 only
    spread = float((results[True] - exact).std())
    # each party: sigma = 2B 2^f / sqrt(2 rho) (a row replaced moves a total by up to 2B)
    promised = float(np.sqrt(len(PARTIES)) * noise_sigma(RHO, 2 * int(BOUND * 2**16)) / 2**16)
    total_error = abs(float(totals[False][0]) - float(exact.sum()))
    if error > len(PARTIES) * 2.0**-16 or not 0.95 < spread / promised < 1.05 \
            or total_error > len(PARTIES) * rows * 2.0**-17:
        raise RuntimeError(f"dp benchmark: plain error {error:g}, noise sd {spread:.4g} "
                           f"where {promised:.4g} was promised")
    return [
        Row(f"discrete Gaussian noise, {samples:,} samples per call (sigma 1.3e10 grid units)",
            "samples/s", "higher", rate, note=f"{noise_timing.describe()} per call; goal: "
            "at least 10^6/s", timing=noise_timing, per=samples),
        Row(f"secure sum of {rows:,} per-category totals (3 nodes, mTLS loopback), noised "
            f"(rho {RHO}) vs plain", "seconds", "lower", noised.median, "plain", plain.median,
            f"overhead {100 * (noised.median / plain.median - 1):+.1f}% (goal: at most +10%); "
            f"noise in the totals: sd {spread:.4g} (promised {promised:.4g}); plain totals' "
            f"largest error {error:.2g}",
            timing=noised, peer_timing=plain),
        Row(f"secure sum of one total of {rows:,} rows (3 nodes, mTLS loopback), noised "
            f"(rho {RHO}) vs plain", "seconds", "lower", total_noised.median, "plain",
            total_plain.median, f"overhead {100 * (total_noised.median / total_plain.median - 1):+.1f}%"
            f" (goal: at most +10%): one noise sample per party, and the privacy budgets read "
            f"and charged; plain total's error {total_error:.2g} (bound 3 x {rows:,} x 2^-17)",
            timing=total_noised, peer_timing=total_plain),
        Row("statistics (count, mean, std; 3 nodes and a dealer, 720 rows), noised "
            f"(rho {RHO}) vs plain", "seconds", "lower", stats_noised.median, "plain",
            stats_plain.median, stats_note, timing=stats_noised, peer_timing=stats_plain),
    ]


def _statistics(repeats: int) -> tuple[Timing, Timing, str]:
    policy = {**OPEN_POLICY, "rho_per_day": 1e6, "rho_total": 1e9}
    values = np.concatenate([load_dataset(DatasetConfig(SAMPLE_DATASET, sample_path(p),
                                                        SAMPLE_COLUMNS[p])).column(COLUMN)
                             for p in SAMPLE_COLUMNS])
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as folder:
        layout = write_local_federation(Path(folder), list(SAMPLE_COLUMNS),
                                        sample_datasets(policy), dealers=["dealer"])
        inputs = {p: (SAMPLE_DATASET, COLUMN) for p in SAMPLE_COLUMNS}
        times: dict[bool, list[float]] = {True: [], False: []}
        results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        with NodeProcesses(layout), Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=60)

            def job(noised: bool) -> None:
                started = time.perf_counter()
                result = fed.statistics(inputs, STATS_BOUND, outputs=["count", "mean", "std"],
                                        dealer="dealer", max_rows=1000,
                                        rho=RHO if noised else None)
                times[noised].append(time.perf_counter() - started)
                results[noised].append(dict(result))

            for index in range(2 + repeats):
                job(True)
                job(False)
                if index < 2:  # warm-up
                    times[True].clear()
                    times[False].clear()
    plain_error = max(abs(r["mean"] - values.mean()) for r in results[False])
    noised_error = float(np.median([abs(r["mean"] - values.mean()) for r in results[True]]))
    if plain_error > 2.0**-16 * (3 * abs(values.mean()) + 4) \
            or any(r["count"] != values.size for r in results[False]):
        raise RuntimeError(f"dp benchmark: plain statistics off by {plain_error:g}")
    note = (f"overhead {100 * (np.median(times[True]) / np.median(times[False]) - 1):+.1f}%; "
            f"plain mean's error {plain_error:.2g} (bound 2^-16 (3|mean| + 4)); noised "
            f"mean's median error {noised_error:.3g}")
    return timing_of(times[True]), timing_of(times[False]), note
