"""Metering at real nodes: refusals before compute, quotas across restarts, crashes, counters."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from invisible.api import meter_report
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, NodeProcesses, write_local_federation
from invisible.errors import InvisibleError, PolicyError
from invisible.jobspec import JobSpec
from invisible.metering.ledger import Ledger
from invisible.node.config import load_party_config
from invisible.samples import SAMPLE_COLUMNS, sample_datasets

PARTIES = list(SAMPLE_COLUMNS)
SUM = {"inputs": {p: {"dataset": "customers", "column": "monthly_spend"} for p in PARTIES},
       "bound": 1e5, "max_rows": 1000}


def policy(**changes):
    base = {"min_rows": 10, "recipients": ["requester"],
            "allow": [{"requesters": ["*"], "kinds": ["secure_sum"],
                       "columns": ["monthly_spend", "district"], "jobs_per_day": 2}]}
    return {**base, **changes}


def events(config_path, job_id=None):
    """A node's job events (countersigned peer heads, which come and go with timing, left out)."""
    config = load_party_config(config_path)
    ledger = Ledger(config.ledger.path, config.party_id, None)
    try:
        return [e.event for e in ledger.entries() if (job_id is None or e.job_id == job_id)
                and e.event != "witnessed"]
    finally:
        ledger.close()


def sum_inputs():
    return {p: ("customers", "monthly_spend") for p in PARTIES}


def test_quotas_hold_across_a_node_restart(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets(policy()))
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.secure_sum(sum_inputs(), 1e5, max_rows=1000)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.secure_sum(sum_inputs(), 1e5, max_rows=1000)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(PolicyError, match="rule 'quota': jobs per day .* \\(limit 2\\)"):
            fed.secure_sum(sum_inputs(), 1e5, max_rows=1000)


def test_a_k_threshold_refusal_stops_the_job_everywhere_and_reveals_no_count(tmp_path):
    datasets = sample_datasets(policy())
    datasets["telco"]["customers"] = type(datasets["telco"]["customers"])(
        datasets["telco"]["customers"].path, SAMPLE_COLUMNS["telco"], policy(min_rows=50))
    layout = write_local_federation(tmp_path, PARTIES, datasets)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(PolicyError) as refused:
            fed.secure_sum(sum_inputs(), 1e5, max_rows=1000, group_by="district", categories=8)
    message = str(refused.value)
    assert "party 'telco'" in message and "rule 'k-threshold'" in message
    assert "fewer than 50 rows" in message
    assert not any(char.isdigit() for char in message.split("fewer than 50")[0].split(
        "rule")[1])  # no row count of any district appears
    (kept,) = (tmp_path / "coordinator-receipts").glob("*.json")  # the refusal's evidence
    receipts = json.loads(kept.read_text())
    assert [r["event"] for r in receipts["telco"]] == ["refused"]
    assert receipts["telco"][0]["body"]["rule"] == "k-threshold"
    assert all(r["event"] != "finished" for rs in receipts.values() for r in rs)
    # a data check: only for an allowed job, told when it runs, charged like a job
    assert events(layout.party_configs["telco"]) == ["requested", "accepted", "refused"]
    assert receipts["telco"][0]["body"]["charged"] is True
    for party in ("bank", "hospital"):  # the job ran and was aborted by telco: it counts
        assert events(layout.party_configs[party]) == ["requested", "accepted", "failed"]


def test_a_refused_job_gives_back_the_other_parties_reservations(tmp_path):
    datasets = sample_datasets(policy())
    datasets["telco"]["customers"] = type(datasets["telco"]["customers"])(
        datasets["telco"]["customers"].path, SAMPLE_COLUMNS["telco"], None)  # no policy at all
    layout = write_local_federation(tmp_path, PARTIES, datasets)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        for _ in range(3):  # more than the daily quota of 2 at bank and hospital
            with pytest.raises(PolicyError, match="party 'telco'.*rule 'no-policy'"):
                fed.secure_sum(sum_inputs(), 1e5, max_rows=1000)
    for party in ("bank", "hospital"):
        report = meter_report(layout.party_configs[party])
        assert report["jobs"].sum() == 0 and report["refused"].sum() == 0


def test_report_is_a_dataframe_and_counts_what_happened(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets(policy()))
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.secure_sum(sum_inputs(), 1e5, max_rows=1000)
        with pytest.raises(PolicyError):
            fed.secure_sum(sum_inputs(), 1e5, max_rows=1000, recipient="telco")  # not allowed
    frame = meter_report(layout.party_configs["bank"])
    row = frame.set_index("kind").loc["secure_sum"]
    assert (row["jobs"], row["refused"], row["rows_touched"], row["bytes_released"]) == (1, 1, 240, 8)


def test_prometheus_counters_follow_jobs_and_refusals(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets(policy()))
    config = layout.party_configs["bank"]
    config.write_text(config.read_text() + '\n[metrics]\nlisten = "127.0.0.1:0"\n')
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        for _ in range(3):
            try:
                fed.secure_sum(sum_inputs(), 1e5, max_rows=1000)
            except PolicyError:
                pass
        for made_up in ("kind-a", "kind-b"):  # any name a requester sends: no series of its own
            with pytest.raises(InvisibleError, match="kind"):
                fed.clients["bank"].start_job(JobSpec(f"j-{made_up}", made_up, tuple(PARTIES), {}))
        port = nodes.nodes["bank"].metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    assert 'invisible_jobs_total{kind="secure_sum",outcome="finished"} 2.0' in text
    assert 'invisible_jobs_total{kind="unknown",outcome="refused"} 2.0' in text
    assert "kind-a" not in text and "kind-b" not in text
    assert 'invisible_job_duration_seconds_count{kind="secure_sum"} 2.0' in text
    assert 'invisible_refusals_total{rule="quota"} 1.0' in text
    assert 'invisible_rows_touched_total{dataset="customers"} 480.0' in text
    assert ('invisible_quota_remaining{dataset="customers",requester="coordinator",unit="jobs"} 0.0'
            in text)


def start_a_job_that_waits(fed, job_id):
    """A secure sum accepted everywhere and running at bank and hospital, which wait for telco:
    telco is never told to run it."""
    spec = JobSpec(job_id, "secure_sum", tuple(PARTIES), SUM)
    for party in PARTIES:
        fed.clients[party].start_job(spec)
    for party in ("bank", "hospital"):
        fed.clients[party].run_job(spec.job_id)
    time.sleep(0.5)


@pytest.mark.timeout(90)
def test_a_node_killed_mid_job_shows_the_job_interrupted_after_restart(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets(policy()),
                                    limits={"rpc_timeout_s": 30.0})
    nodes = NodeProcesses(layout).start()
    try:
        with Federation.from_config(layout.coordinator_config) as fed:
            fed.health(timeout_s=20)
            start_a_job_that_waits(fed, "crash-1")
        nodes.processes["bank"].send_signal(signal.SIGKILL)
        nodes.processes["bank"].wait(10)
    finally:
        nodes.stop()
    assert events(layout.party_configs["bank"], "crash-1") == ["requested", "accepted"]
    restarted = subprocess.Popen(
        [sys.executable, "-m", "invisible", "node", "serve", "--config",
         str(layout.party_configs["bank"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert "serving" in restarted.stdout.readline()
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(15)
    assert events(layout.party_configs["bank"], "crash-1") == ["requested", "accepted",
                                                                "interrupted"]
    verify = subprocess.run(
        [sys.executable, "-m", "invisible", "meter", "verify", "--config",
         str(layout.party_configs["bank"])], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "ledger intact: 3 entries" in verify.stdout


@pytest.mark.timeout(90)
def test_a_node_stopping_mid_job_records_how_its_jobs_ended(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets(policy()),
                                    limits={"rpc_timeout_s": 30.0})
    nodes = InProcessNodes(layout).__enter__()
    try:
        with Federation.from_config(layout.coordinator_config) as fed:
            start_a_job_that_waits(fed, "stop-1")
        started = time.monotonic()
        nodes.nodes["bank"].stop(grace_s=2.0)
        assert time.monotonic() - started < 5  # its job was interrupted, not waited out (30 s)
    finally:
        nodes.__exit__(None, None, None)
    # Every node recorded the end while its ledger was open: nothing is left "interrupted".
    assert events(layout.party_configs["bank"], "stop-1") == ["requested", "accepted", "failed"]
    assert events(layout.party_configs["hospital"], "stop-1") == [
        "requested", "accepted", "failed"]
    assert events(layout.party_configs["telco"], "stop-1") == [
        "requested", "accepted", "cancelled"]


def test_cli_verify_names_the_altered_entry_and_receipts_catch_a_cut_tail(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets(policy()))
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.secure_sum(sum_inputs(), 1e5, max_rows=1000)
        time.sleep(0.3)  # countersigning happens just after the result is released
    bank = str(layout.party_configs["bank"])

    def meter(*args):
        return subprocess.run([sys.executable, "-m", "invisible", "meter", *args],
                              capture_output=True, text=True, timeout=60)

    receipts = str(tmp_path / "coordinator-receipts")
    ok = meter("verify", "--config", bank, "--receipts", receipts)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ledger_path = load_party_config(bank).ledger.path
    import sqlite3

    with sqlite3.connect(ledger_path) as db:
        (finished,) = db.execute("SELECT seq FROM entries WHERE event = 'finished'").fetchone()
        db.execute("DELETE FROM entries WHERE seq >= ?", (finished,))  # the finished entry on
    alone = meter("verify", "--config", bank)
    assert alone.returncode == 0  # a clean cut is invisible to the chain alone ...
    caught = meter("verify", "--config", bank, "--receipts", receipts)
    assert caught.returncode == 1  # ... but not to the requester's receipt
    assert f"no longer contains entry {finished}" in caught.stdout
    receipt_file = next((tmp_path / "coordinator-receipts").glob("*.json"))
    pub = str(tmp_path / "pki" / "bank-ledger.pub")
    assert meter("verify-receipt", str(receipt_file), "--public-key", pub, "--party",
                 "bank").returncode == 0
    data = json.loads(receipt_file.read_text())
    data["bank"][0]["rows"] += 1
    receipt_file.write_text(json.dumps(data))
    bad = meter("verify-receipt", str(receipt_file), "--public-key", pub, "--party", "bank")
    assert bad.returncode == 1 and "altered" in bad.stdout


def test_only_the_requester_may_run_a_prepared_job(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets(policy()),
                                    coordinators=("coordinator", "other"))
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        spec = JobSpec("j-1", "secure_sum", tuple(PARTIES), SUM)
        fed.clients["bank"].start_job(spec)
        with Federation.from_config(layout.coordinator_configs["other"]) as other:
            with pytest.raises(PolicyError, match="requested by another identity"):
                other.clients["bank"].run_job("j-1")
        fed.clients["bank"].cancel_job("j-1", "test over")
        assert nodes.nodes["bank"].executor.running() == []
    assert events(layout.party_configs["bank"]) == ["requested", "accepted", "cancelled"]
