"""The `invisible` command end to end: real processes, real files, real mTLS on loopback."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import stat
import subprocess
import sys

import numpy as np
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import NodeProcesses, write_local_federation
from invisible.net.pki import Role, identity_from_pem
from invisible.samples import SAMPLE_COLUMNS, sample_datasets, sample_path

PARTIES = list(SAMPLE_COLUMNS)


def invisible(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invisible", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_pki_init_writes_a_ca_and_one_certificate_per_identity(tmp_path):
    done = invisible("pki", "init", str(tmp_path), "--parties", "bank,hospital,telco",
                     "--dealers", "dealer")
    assert done.returncode == 0, done.stderr
    roles = {p: identity_from_pem((tmp_path / f"{p}.pem").read_bytes()).role
             for p in ("bank", "hospital", "telco", "coordinator", "dealer")}
    assert roles == {"bank": Role.PARTY, "hospital": Role.PARTY, "telco": Role.PARTY,
                     "coordinator": Role.COORDINATOR, "dealer": Role.DEALER}
    for key in tmp_path.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = invisible("pki", "init", str(tmp_path), "--parties", "bank")
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0
    assert "already holds a CA" in again.stderr


def test_pki_init_force_keeps_the_ledger_keys_and_says_so(tmp_path):
    assert invisible("pki", "init", str(tmp_path), "--parties", "bank,telco").returncode == 0
    ledger_keys = {p.name: p.read_bytes() for p in tmp_path.glob("*-ledger.*")}
    ca = (tmp_path / "ca.pem").read_bytes()
    again = invisible("pki", "init", str(tmp_path), "--parties", "bank,telco", "--force")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "ca.pem").read_bytes() != ca
    assert {name: (tmp_path / name).read_bytes() for name in ledger_keys} == ledger_keys
    assert "ledger signing keys kept (never replaced by a PKI command): bank, telco" \
        in again.stdout


def test_node_serve_refuses_a_broken_ledger_unless_told_and_records_the_choice(tmp_path):
    layout = write_local_federation(tmp_path, ["bank", "telco"])
    config = str(layout.party_configs["bank"])
    serve = [sys.executable, "-m", "invisible", "node", "serve", "--config", config]

    def serve_once(*extra: str) -> None:
        serve_then_stop([*serve, *extra], signal.SIGTERM)

    serve_once()
    ledger_path = tmp_path / "bank-ledger.sqlite"
    from invisible.metering.entries import PendingEntry
    from invisible.metering.ledger import Ledger
    from invisible.metering.signing import load_signing_key

    ledger = Ledger(ledger_path, "bank", load_signing_key(tmp_path / "pki" / "bank-ledger.key"))
    ledger.append(*[PendingEntry(f"j{i}", "requested", "analyst") for i in range(3)])
    ledger.close()
    with sqlite3.connect(ledger_path) as db:
        db.execute("UPDATE entries SET requester = 'nobody' WHERE seq = 2")
    db.close()
    refused = invisible("node", "serve", "--config", config)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert str(ledger_path) in line and "entry 2" in line and "--accept-broken-ledger" in line
    serve_once("--accept-broken-ledger")
    with sqlite3.connect(ledger_path) as db:
        events = [row[0] for row in db.execute("SELECT event FROM entries ORDER BY seq")]
    db.close()
    assert events == ["requested"] * 3 + ["ledger-accepted-broken"]
    serve_once()  # the recorded choice stands; no flag needed again


def test_meter_rotate_key_waits_for_the_node_process_to_stop(tmp_path):
    layout = write_local_federation(tmp_path, ["bank", "telco"])
    config = str(layout.party_configs["bank"])
    key = (tmp_path / "pki" / "bank-ledger.key").read_bytes()
    process = subprocess.Popen([sys.executable, "-m", "invisible", "node", "serve", "--config",
                                config], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving on 127.0.0.1:" in process.stdout.readline()
        refused = invisible("meter", "rotate-key", "--config", config)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert "bank-ledger.sqlite is open in a running node: stop the node first" in line
    assert (tmp_path / "pki" / "bank-ledger.key").read_bytes() == key
    done = invisible("meter", "rotate-key", "--config", config)
    assert done.returncode == 0, done.stderr
    assert "rotated at entry" in done.stdout and "bank-ledger.keys" in done.stdout
    assert (tmp_path / "pki" / "bank-ledger.key").read_bytes() != key
    assert stat.S_IMODE((tmp_path / "pki" / "bank-ledger.key").stat().st_mode) == 0o600
    serve_then_stop([sys.executable, "-m", "invisible", "node", "serve", "--config", config],
                    signal.SIGTERM)  # the node starts on its rotated ledger
    assert invisible("meter", "verify", "--config", config).returncode == 0


def test_node_startup_errors_print_one_line_and_exit_non_zero(tmp_path):
    done = invisible("node", "serve", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"invisible: error: config file not found: {tmp_path}/missing.toml"

    layout = write_local_federation(tmp_path / "f", ["bank", "telco"])
    (layout.directory / "pki" / "bank.key").unlink()
    done = invisible("node", "serve", "--config", str(layout.party_configs["bank"]))
    assert done.returncode == 2
    assert "private key file not found" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_three_node_processes_reach_each_other_and_stop_cleanly(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets())
    nodes = NodeProcesses(layout).start()
    try:
        with Federation.from_config(layout.coordinator_config) as federation:
            health = federation.health(timeout_s=20)
        assert all(h.serving and h.datasets == ("customers",) for h in health.values())
        assert all(364 < h.certificate_days_left <= 365 and 364 < h.ca_days_left <= 365
                   and (h.revocation_list_number, h.revoked_certificates) == (1, 0)
                   for h in health.values())
        nodes.check_alive()

        report = invisible("health", "--coordinator", str(layout.coordinator_config))
        assert report.returncode == 0, report.stdout + report.stderr
        assert report.stdout.count("serving") == 3
        assert report.stdout.count("certificate 365 days left, CA 365; revocation list 1 "
                                   "(0 revoked)") == 3
        # a requester is told the columns its policy lets it use, never a row count
        assert "customers (customer_id:int district:int monthly_spend:float balance:float " \
            "late_payment:int)" in report.stdout
        # each node lists its datasets at start, in its operator's log only
        assert re.search(r"dataset customers \(.*bank\.csv\): 240 rows; customer_id int, ",
                         (layout.directory / "bank.log").read_text())

        job = tmp_path / "connectivity.job.toml"
        job.write_text('[job]\nkind = "connectivity"\ncoordinator = "coordinator.toml"\n')
        ran = invisible("job", "run", str(job), "--json")
        assert ran.returncode == 0, ran.stderr
        result = json.loads(ran.stdout)
        rows = {row["party"]: row for row in result["result"]}
        assert set(rows["bank"]["peers confirmed"]) == {"hospital", "telco"}
        assert all(r["messages_received"] == 4 for r in result["records"].values())

        job = tmp_path / "sum.job.toml"
        job.write_text(
            '[job]\nkind = "secure_sum"\ncoordinator = "coordinator.toml"\nbound = 1e5\n'
            'max_rows = 1000\n[inputs]\n' + "".join(
                f'{p} = {{ dataset = "customers", column = "monthly_spend" }}\n' for p in PARTIES)
        )
        ran = invisible("job", "run", str(job), "--json")
        assert ran.returncode == 0, ran.stderr
        result = json.loads(ran.stdout)
        expected = sum(
            np.loadtxt(sample_path(p), delimiter=",", skiprows=1, usecols=2).sum() for p in PARTIES
        )
        assert result["total"][0] == pytest.approx(expected, abs=720 * 2.0**-17)
        assert result["recipient"] == "coordinator"
        assert {p: r["rows_used"] for p, r in result["records"].items()} == {
            "bank": 240, "hospital": 180, "telco": 300}

        job.write_text(job.read_text().replace("bound = 1e5", "bound = 10.0"))
        clipped = invisible("job", "run", str(job), "--json")
        assert clipped.returncode == 0, clipped.stderr  # values beyond the bound are clipped
        expected = sum(np.clip(np.loadtxt(sample_path(p), delimiter=",", skiprows=1, usecols=2),
                               -10, 10).sum() for p in PARTIES)
        assert json.loads(clipped.stdout)["total"][0] == pytest.approx(expected, abs=0.01)

        job.write_text(job.read_text().replace("max_rows = 1000", "max_rows = 100"))
        refused = invisible("job", "run", str(job))
        assert refused.returncode == 2
        assert "rule 'data': dataset 'customers' has more rows than the job's max_rows" \
            in refused.stderr
        assert "total" not in refused.stdout
    finally:
        codes = nodes.stop()
    assert codes == {p: 0 for p in PARTIES}  # SIGTERM is a clean stop


def test_sigint_stops_a_node_cleanly(tmp_path):
    layout = write_local_federation(tmp_path, ["bank", "telco"])
    serve_then_stop([sys.executable, "-m", "invisible", "node", "serve", "--config",
                     str(layout.party_configs["bank"])], signal.SIGINT)


def serve_then_stop(command: list[str], stop: signal.Signals) -> None:
    """Start `invisible node serve`, wait until it serves, stop it with `stop`: exit 0."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert "serving on 127.0.0.1:" in process.stdout.readline()
        process.send_signal(stop)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_dealer_node_serves_with_a_dealer_certificate_only(tmp_path):
    layout = write_local_federation(tmp_path, ["bank", "telco"], dealers=["dealer"])
    dealer_config = str(layout.dealer_configs["dealer"])
    as_party = invisible("node", "serve", "--config", dealer_config)
    assert as_party.returncode == 2
    assert "is a dealer certificate; this needs a party certificate" in as_party.stderr
    party_as_dealer = invisible("node", "serve", "--config", str(layout.party_configs["bank"]),
                                "--role", "dealer")
    assert party_as_dealer.returncode == 2
    assert "a dealer holds no data" in party_as_dealer.stderr or \
        "is a party certificate; this needs a dealer certificate" in party_as_dealer.stderr
    nodes = NodeProcesses(layout).start()
    try:
        with Federation.from_config(layout.coordinator_config) as federation:
            health = federation.clients["dealer"].health(timeout_s=20)
            assert health.serving and health.role == "dealer" and health.datasets == ()
            roles = {p: h.role for p, h in federation.health(timeout_s=20).items()}
            assert roles == {"bank": "party", "telco": "party", "dealer": "dealer"}
            assert federation.parties == ("bank", "telco")  # a dealer is not a data party
    finally:
        codes = nodes.stop()
    assert codes == {"bank": 0, "telco": 0, "dealer": 0}


def test_health_reports_a_node_that_is_down(tmp_path):
    layout = write_local_federation(tmp_path, ["bank", "telco"])
    done = invisible("health", "--coordinator", str(layout.coordinator_config),
                     "--timeout", "0.5")
    assert done.returncode == 1
    assert "bank" in done.stdout and "DOWN" in done.stdout


@pytest.mark.timeout(90)
def test_demo_exits_zero_and_prints_matching_totals():
    done = invisible("demo", timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo finished" in done.stdout
    assert "MATCH" in done.stdout and "MISMATCH" not in done.stdout
    assert "statistics on shares" in done.stdout and "dealer" in done.stdout
    assert done.stdout.count("consistent with every requester's receipts: yes") == 3
    secure = next(line for line in done.stdout.splitlines() if "secure total" in line)
    plain = next(line for line in done.stdout.splitlines() if "plaintext total" in line)
    assert secure.split()[-1] == plain.split()[2]
    for party in PARTIES:
        assert f"      {party}" in done.stdout


def test_cli_reports_a_bad_job_file(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("[job]\n")
    done = invisible("job", "run", str(job))
    assert done.returncode == 2
    assert "[job] with a 'kind' is required" in done.stderr
