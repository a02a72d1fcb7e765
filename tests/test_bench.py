"""The benchmark harness keeps its contract (rows, peers, JSON); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from invisible.benchmarking import NOT_RUN, Row, table, timing_of

ROOT = Path(__file__).resolve().parent.parent


def test_timing_reports_median_and_quartiles():
    timing = timing_of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (timing.median, timing.q1, timing.q3, timing.runs) == (3.0, 2.0, 4.0, 5)


def test_table_shows_the_ratio_in_the_direction_that_is_better():
    rendered = table("t", [
        Row("c", "values/s", "higher", 200.0, "phe", 100.0),
        Row("c", "ms/job", "lower", 2.0, "no-ledger", 1.0),
        Row("c", "bytes/value", "lower", 8.0),
    ])
    assert "| 2.00x |" in rendered and "| 0.50x |" in rendered
    assert Row("c", "m", "lower", 1.0).to_json().keys() == {"case", "metric", "better", "ours", "note"}


def test_an_unknown_benchmark_is_named():
    done = subprocess.run([sys.executable, "-m", "invisible", "bench", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert ("no benchmark 'nope' (known: datasets, dp, horizontal_lr, metering, paillier, psi, "
            "secure_sum, "
            "ss_mul, vertical_lr)") in done.stderr


def ran_or_said_why(row: dict) -> bool:
    """A peer row has its value, or its note says why the peer did not run here."""
    return row.get("peer_value") is not None or any(r in row["note"] for r in NOT_RUN)


def run_quick(name: str, folder: Path, timeout: float) -> dict:
    """`invisible bench NAME --quick --json`, as a user runs it; the JSON document."""
    out = folder / f"{name}.json"
    done = subprocess.run(
        [sys.executable, "-m", "invisible", "bench", name, "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["quick"] is True and document["cpus"] >= 1
    [entry] = document["benchmarks"]  # one shape, for one benchmark or several
    for row in entry["rows"]:
        if is_timed(row["metric"]):  # ours: the median of five or more, with its quartiles
            assert row["runs"] >= 5, row
            assert within(row["q1"], row["ours"], row["q3"]), row
            if row.get("peer_value") is not None and row["peer"] not in DERIVED:
                # a peer's too; slow peers that start processes run once in --quick
                assert row["peer_runs"] >= 1, row
                assert within(row["peer_q1"], row["peer_value"], row["peer_q3"]), row
    return entry


#: Peer values computed from other measurements rather than timed runs of a peer.
DERIVED = ("compute-limit",)


def is_timed(metric: str) -> bool:
    return metric == "seconds" or "/s" in metric or metric.startswith("ms/")


def within(low: float, value: float, high: float) -> bool:
    return low <= value * (1 + 1e-9) and value <= high * (1 + 1e-9)


def timed(rows: list[dict], metric: str) -> list[dict]:
    return [r for r in rows if r["metric"] == metric]


@pytest.mark.timeout(180)
def test_secure_sum_quick_emits_every_row(tmp_path):
    document = run_quick("secure_sum", tmp_path, 170)
    assert document["benchmark"] == "secure_sum"
    rows = document["rows"]
    cases = sorted({r["case"] for r in rows})
    assert len(cases) == 3
    for case in cases:
        kinds = {(r["metric"], r.get("peer")) for r in rows if r["case"] == case}
        assert kinds == {("elements/s", "numpy"), ("elements/s", "grpc-raw"),
                         ("bytes/element/party", None)}
    for row in rows:
        assert row["ours"] > 0 and row["better"] in ("higher", "lower")
        if "peer" in row:
            assert row["peer_value"] > 0
    per_party = [r["ours"] for r in rows if r["metric"] == "bytes/element/party"]
    assert all(8.0 <= b < 8.1 for b in per_party)  # one masked 8-byte element per party + keys


@pytest.mark.timeout(240)
def test_metering_quick_emits_every_row(tmp_path):
    rows = run_quick("metering", tmp_path, 230)["rows"]
    assert [(r["metric"], r.get("peer")) for r in rows] == [
        ("ms/job/node", "no-ledger"), ("ms/job/node", "no-ledger"), ("entries/s", None)]
    assert all(r["ours"] > 0 for r in rows)


@pytest.mark.timeout(300)
def test_paillier_quick_emits_every_row_with_both_peers(tmp_path):
    rows = run_quick("paillier", tmp_path, 290)["rows"]
    assert [(r["metric"], r.get("peer")) for r in rows] == [
        ("encryptions/s", "phe"), ("encryptions/s", "heu"), ("values/s", "phe"),
        ("values/s", "heu"), ("bytes/value", None)]
    for row in rows[:4]:  # phe and sf-heu are installed with the dev extra: both run
        assert row["peer_value"] > 0, row["note"]
        assert row["runs"] == 5  # the median of five after a warm-up
    assert 8.0 < rows[-1]["ours"] < 9.0


@pytest.mark.timeout(240)
def test_ss_mul_quick_emits_every_row(tmp_path):
    rows = run_quick("ss_mul", tmp_path, 230)["rows"]
    assert [(r["metric"], r.get("peer")) for r in rows] == [
        ("mults/s", "spu"), ("mults/s", "spu"), ("mults/s", "bandwidth-limit"),
        ("mults/s", "mpyc"), ("bytes/mult/party", None)]
    for row in rows:
        assert row["ours"] > 0
    assert rows[3]["peer_value"] > 0, rows[3]["note"]  # MPyC runs in this venv (dev extra)
    assert all(ran_or_said_why(row) for row in rows[:2])  # SPU: its own venv, if made
    assert rows[-1]["ours"] == pytest.approx(48.0, abs=0.1)  # 3 parties: 2 x 16 + 2 x 8 bytes


@pytest.mark.timeout(240)
def test_psi_quick_emits_every_row_with_every_peer_named(tmp_path):
    rows = run_quick("psi", tmp_path, 230)["rows"]
    seconds = [r for r in rows if r["metric"] == "seconds"]
    assert {r["peer"] for r in seconds} == {"compute-limit", "openmined-psi", "spu-ecdh",
                                            "spu-rr22"}
    assert len(seconds) == 8 and all(r["better"] == "lower" and r["ours"] > 0 for r in seconds)
    for row in seconds:  # a peer that did not run says why, never silently
        assert ran_or_said_why(row), row["note"]
    assert len([r for r in rows if r["metric"] == "ids/s/side"]) == 2
    assert len([r for r in rows if r["metric"] == "MB"]) == 2


@pytest.mark.timeout(240)
def test_horizontal_lr_quick_emits_every_row_with_every_peer_named(tmp_path):
    rows = run_quick("horizontal_lr", tmp_path, 230)["rows"]
    by_metric = {}
    for row in rows:
        by_metric.setdefault(row["metric"], []).append(row)
    assert {r["peer"] for r in by_metric["seconds"]} == {"flwr", "flwr-secagg+"}
    assert {r["peer"] for r in by_metric["auc"]} == {"plaintext-fedavg", "scikit-learn", "flwr",
                                                     "flwr-secagg+"}
    assert [r["peer"] for r in by_metric["ms/round"]] == ["flwr-secagg+"]
    for row in rows:  # a peer that did not run says why, never silently
        assert row["ours"] > 0 and ("peer" not in row or ran_or_said_why(row)), row["note"]
    [plaintext] = [r for r in by_metric["auc"] if r["peer"] == "plaintext-fedavg"]
    assert plaintext["ours"] == pytest.approx(plaintext["peer_value"], abs=1e-4)


@pytest.mark.timeout(240)
def test_vertical_lr_quick_emits_every_row_with_every_peer_named(tmp_path):
    rows = run_quick("vertical_lr", tmp_path, 230)["rows"]
    peers = {(r["metric"], r.get("peer")) for r in rows}
    assert peers == {("seconds", "spu"), ("seconds", "scikit-learn"), ("auc", "scikit-learn"),
                     ("auc", "float64"), ("auc", "spu"), ("bytes/party", None),
                     ("rounds/epoch", None)}
    for row in rows:  # a peer that did not run says why, never silently
        assert row["ours"] > 0 and ("peer" not in row or ran_or_said_why(row)), row["note"]
    [plain] = [r for r in rows if r.get("peer") == "float64"]
    assert plain["ours"] == pytest.approx(plain["peer_value"], abs=1e-3)


@pytest.mark.timeout(240)
def test_datasets_quick_emits_every_row_against_pandas(tmp_path):
    rows = run_quick("datasets", tmp_path, 230)["rows"]
    assert [(r["metric"], r["peer"]) for r in rows] == [("seconds", "pandas"), ("MB", "pandas")] * 3
    assert all(r["ours"] > 0 and r["peer_value"] > 0 for r in rows)
    assert [f in rows[i]["case"] for f, i in (("csv", 0), ("parquet", 2), ("postgres", 4))] == \
        [True] * 3  # the PostgreSQL rows need the server the dev extra installs


@pytest.mark.timeout(240)
def test_dp_quick_emits_every_row(tmp_path):
    rows = run_quick("dp", tmp_path, 230)["rows"]
    assert [(r["metric"], r.get("peer")) for r in rows] == [("samples/s", None)] + [
        ("seconds", "plain")] * 3
    assert all(r["ours"] > 0 for r in rows) and rows[1]["peer_value"] > 0
    assert "noise in the totals: sd" in rows[1]["note"]  # checked against the exact totals
