"""A bill for every job: what it used at each party, priced, signed, and summed.

The amounts are in the signed terminal entries, so the requester's receipts carry them;
`meter bill` and `api.meter_bill` sum them and must equal the receipts' sums. A measure the
receipt does not show (the rows of a private alignment) is never priced.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from invisible.api import meter_bill
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import OPEN_POLICY, InProcessNodes, write_local_federation
from invisible.errors import ConfigError
from invisible.metering.billing import bill_rows, measures, parse_prices
from invisible.metering.ledger import Ledger
from invisible.metering.meter import JobMeta, Meter
from invisible.metering.metrics import NodeMetrics
from invisible.metering.policy import UseRequest, parse_policy
from invisible.metering.signing import generate_signing_key, load_signing_key
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets

ROOT = Path(__file__).resolve().parent.parent
PRICES = {"currency": "CNY", "job": "1.5", "row": "0.001", "megabyte": 0.25, "round": "0.01",
          "tuple": "0.000002", "ciphertext_op": "0.0003", "cpu_second": 2, "rho": "10"}


def test_a_price_list_is_exact_decimals_and_its_mistakes_are_named():
    prices = parse_prices(PRICES, "p")
    assert prices.prices["row"] == Decimal("0.001") and prices.prices["megabyte"] == Decimal("0.25")
    used = measures({"bytes_sent": 1_500_000, "bytes_received": 500_000, "rounds": 7,
                     "tuples": 1000, "ciphertext_ops": 10, "cpu_s": 0.125, "rho": 250_000_000},
                    rows=720)
    # 1.5 + 0.72 + 0.5 + 0.07 + 0.002 + 0.003 + 0.25 + 2.5
    assert prices.amount(used) == Decimal("5.545000")
    for table, message in (
            ({**PRICES, "per_byte": 1}, "p has unknown key\\(s\\) per_byte"),
            ({k: v for k, v in PRICES.items() if k != "currency"}, "p.currency must name"),
            ({**PRICES, "row": -1}, "p.row must be a non-negative decimal number"),
            ({**PRICES, "row": float("nan")}, "p.row must be a non-negative"),
            ({**PRICES, "row": float("inf")}, "p.row must be a non-negative"),
            ({**PRICES, "row": "lots"}, "p.row must be a non-negative"),
            ({**PRICES, "row": True}, "p.row must be a non-negative"),
            ("free", "p must be a table")):
        with pytest.raises(ConfigError, match=f"^{message}"):
            parse_prices(table, "p")
    with pytest.raises(ConfigError, match="test.prices.currency"):
        parse_policy({**OPEN_POLICY, "prices": {"row": 1}}, "test")


def test_a_node_s_own_price_list_prices_its_jobs_without_data(tmp_path):
    from invisible.metering.policy import parse_node_policy

    table = {"requesters": ["*"], "kinds": ["*"], "prices": PRICES}
    node_policy = parse_node_policy(table, "bank.toml [policy]")
    assert node_policy.prices is not None and node_policy.prices.currency == "CNY"
    with pytest.raises(ConfigError, match="^bank.toml \\[policy\\].prices.currency must name"):
        parse_node_policy({**table, "prices": {"job": 1}}, "bank.toml [policy]")
    generate_signing_key(tmp_path / "l.key", tmp_path / "l.pub")
    ledger = Ledger(tmp_path / "l.sqlite", "bank", load_signing_key(tmp_path / "l.key"))
    try:
        meter = Meter("bank", ledger, {}, NodeMetrics(), node_policy)
        diagnostic = JobMeta("d1", "analyst", "connectivity")
        meter.admit(diagnostic)
        ended = meter.close(diagnostic, "finished", {"rounds": 1})
        assert ended.body["bill"] == {"amount": "1.510000", "currency": "CNY"}
    finally:
        ledger.close()


@pytest.fixture
def meter(tmp_path):
    generate_signing_key(tmp_path / "l.key", tmp_path / "l.pub")
    ledger = Ledger(tmp_path / "l.sqlite", "bank", load_signing_key(tmp_path / "l.key"))
    yield Meter("bank", ledger, {"loans": parse_policy({**OPEN_POLICY, "prices": PRICES}, "t")},
                NodeMetrics())
    ledger.close()


def job(index: int, private: bool = False) -> JobMeta:
    return JobMeta(f"j{index}", "analyst", "secure_sum",
                   UseRequest(f"j{index}", "analyst", "secure_sum", "loans", ("x",), 100),
                   rows_private=private)


def test_each_ended_job_is_billed_in_its_receipt_and_a_private_count_is_never_priced(meter):
    record = {"bytes_sent": 10**6, "bytes_received": 0, "rounds": 2, "cpu_s": 0.5}
    meter.admit(job(1))
    finished = meter.close(job(1), "finished", record, rows=100)
    assert finished.body["bill"] == {"amount": "2.870000", "currency": "CNY"}  # 1.5+.1+.25+.02+1
    meter.admit(job(2))
    cancelled = meter.close(job(2), "cancelled", {}, released=True)
    assert "bill" not in cancelled.body  # given back, not billed
    meter.admit(job(3, private=True))
    private = meter.close(job(3, private=True), "finished", {**record, "tuples": 5000},
                          rows=100)
    # rows, rounds, tuples and CPU grow with the private count: none in the receipt or bill
    assert private.rows == 0 and private.body["bill"]["amount"] == "1.750000"
    assert [private.body[k] for k in ("rounds", "tuples", "cpu_s")] == [0, 0, 0]
    [kept] = [e for e in meter.store.entries() if e.event == "rows" and e.job_id == "j3"]
    assert (kept.rows, kept.body["rounds"], kept.body["tuples"], kept.body["cpu_s"]) == \
        (100, 2, 5000, 0.5)
    meter.admit(job(5, private=True))  # an empty private count: its entry all the same,
    meter.close(job(5, private=True), "finished", {}, rows=0)  # or the count would tell
    assert [e.event for e in meter.store.entries() if e.job_id == "j5"] == \
        [e.event for e in meter.store.entries() if e.job_id == "j3"]
    meter.admit(job(4))
    failed = meter.close(job(4), "failed", {"rounds": 1}, error="x", released=False)
    assert failed.body["bill"]["amount"] == "1.510000"
    [row] = bill_rows(meter.store.entries())
    assert (row["jobs"], row["rows"], row["amount"]) == (4, 100, "7.630000")  # j5: 1.5 + 0


@pytest.fixture(scope="module")
def priced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bills")
    policy = {**OPEN_POLICY, "prices": PRICES}
    layout = write_local_federation(folder, list(SAMPLE_COLUMNS), sample_datasets(policy),
                                    dealers=["dealer"], coordinators=("analyst", "auditor"))
    with InProcessNodes(layout), \
            Federation.from_config(layout.coordinator_configs["analyst"]) as analyst, \
            Federation.from_config(layout.coordinator_configs["auditor"]) as auditor:
        inputs = {p: (SAMPLE_DATASET, "monthly_spend") for p in SAMPLE_COLUMNS}
        analyst.secure_sum(inputs, 100_000.0, max_rows=1000)
        analyst.paillier_sum(inputs, 100_000.0, max_rows=1000, key_holder="telco")
        analyst.statistics(inputs, 5000.0, outputs=["mean"], dealer="dealer", max_rows=1000)
        auditor.secure_sum(inputs, 100_000.0, max_rows=1000)
    yield folder, layout


def receipts_of(folder: Path, party: str) -> list[dict]:
    found = []
    for path in sorted(folder.glob("*-receipts/*.json")):
        found += json.loads(path.read_text()).get(party, [])
    return found


def test_the_bill_adds_up_to_the_receipts_and_counts_what_each_kind_uses(priced):
    folder, layout = priced
    for party in SAMPLE_COLUMNS:
        receipts = [r for r in receipts_of(folder, party) if "bill" in r["body"]]
        assert len(receipts) == 4
        bill = meter_bill(layout.party_configs[party])
        assert sorted(bill["requester"]) == ["analyst", "auditor"]
        assert bill["amount"].sum() == sum(Decimal(r["body"]["bill"]["amount"]) for r in receipts)
        assert bill["jobs"].sum() == 4 and bill["rows"].sum() == sum(r["rows"] for r in receipts)
        by_kind = {r["kind"]: r["body"] for r in receipts if r["requester"] == "analyst"}
        assert by_kind["statistics"]["tuples"] > 0 and by_kind["secure_sum"]["tuples"] == 0
        assert by_kind["paillier_sum"]["ciphertext_ops"] > 0
        assert by_kind["secure_sum"]["ciphertext_ops"] == 0
        assert all(b["rounds"] >= 1 and b["cpu_s"] > 0 for b in by_kind.values())
    only = meter_bill(layout.party_configs["bank"], requester="auditor")
    assert list(only["jobs"]) == [1]


def test_meter_bill_on_the_command_line_takes_a_period(priced):
    _, layout = priced

    def bill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invisible", "meter", "bill", "--config",
                               str(layout.party_configs["bank"]), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    everything = json.loads(bill("--json").stdout)
    assert sum(Decimal(r["amount"]) for r in everything) == \
        meter_bill(layout.party_configs["bank"])["amount"].sum()
    assert json.loads(bill("--json", "--until", "2000-01-01").stdout) == []
    table = bill("--since", "2000-01-01", "--requester", "analyst")
    assert table.returncode == 0 and "CNY" in table.stdout and "auditor" not in table.stdout
    backwards = bill("--since", "2026-12-01", "--until", "2026-11-01")
    assert backwards.returncode != 0 and "is not after since" in backwards.stderr
