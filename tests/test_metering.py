"""Metering: policy, quotas, the signed ledger, receipts and reports."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from concurrent_admits import admit_at_once

from invisible.errors import ConfigError
from invisible.metering.audit import check_receipts, verify_ledger
from invisible.metering.entries import LedgerEntry, PendingEntry
from invisible.metering.ledger import Ledger
from invisible.metering.meter import JobMeta, Meter
from invisible.metering.metrics import NodeMetrics
from invisible.metering.policy import (
    Refusal,
    UseRequest,
    authorise,
    parse_policy,
    threshold_problem,
)
from invisible.metering.report import report_rows, to_table
from invisible.metering.signing import generate_signing_key, load_public_key, load_signing_key
from invisible.metering.verify import verify_against_receipts, verify_chain


@pytest.fixture
def keys(tmp_path):
    generate_signing_key(tmp_path / "bank-ledger.key", tmp_path / "bank-ledger.pub")
    return load_signing_key(tmp_path / "bank-ledger.key"), load_public_key(tmp_path / "bank-ledger.pub")


@pytest.fixture
def ledger(tmp_path, keys):
    book = Ledger(tmp_path / "bank-ledger.sqlite", "bank", keys[0])
    yield book
    book.close()


def fill(ledger: Ledger, jobs: int) -> list[LedgerEntry]:
    written = []
    for index in range(jobs):
        job = JobMeta(f"job-{index}", "analyst", "secure_sum",
                      UseRequest(f"job-{index}", "analyst", "secure_sum", "loans", ("amount",), 100))
        written += ledger.append(job.pending("requested"), job.pending("accepted", rows=100))
        written += ledger.append(job.pending("finished", rows=100, bytes_sent=64))
    return written


def sql(path: Path, statement: str) -> None:
    """Tamper with a ledger the way an operator with the sqlite3 tool would."""
    if shutil.which("sqlite3"):
        subprocess.run(["sqlite3", str(path), statement], check=True, timeout=30)
    else:
        with sqlite3.connect(path) as db:
            db.execute(statement)


# --- policy -----------------------------------------------------------------------------------

POLICY = {
    "min_rows": 10, "recipients": ["requester", "bank"], "jobs_per_day": 5,
    "allow": [{"requesters": ["analyst"], "kinds": ["secure_sum"], "columns": ["amount"],
               "jobs_per_day": 3}],
}


def use(**changes):
    base = dict(job_id="j", requester="analyst", kind="secure_sum", dataset="loans",
                columns=("amount",), rows=100, smallest_cell=100, recipient=None)
    return UseRequest(**{**base, **changes})


@pytest.mark.parametrize(("change", "rule"), [
    ({"requester": "marketing"}, "not-allowed"),
    ({"kind": "logistic_regression"}, "not-allowed"),
    ({"columns": ("amount", "age")}, "columns"),
    ({"recipient": "telco"}, "recipients"),
    ({"recipient": "bank", "requester_too": True, "requester": "analyst"}, None),
])
def test_each_rule_on_the_request_refuses_and_names_itself(change, rule):
    policy = parse_policy(POLICY, "test")
    if rule is None:  # the requester and the bank may both receive: allowed
        assert authorise("bank", policy, use(**change)).jobs_per_day == 3
        only_bank = parse_policy({**POLICY, "recipients": ["bank"]}, "test")
        with pytest.raises(Refusal, match="may not go to 'requester'"):
            authorise("bank", only_bank, use(**change))  # the requester receives them too
        return
    with pytest.raises(Refusal, match=f"rule '{rule}'") as refused:
        authorise("bank", policy, use(**change))
    assert refused.value.rule == rule


def test_the_k_threshold_is_a_data_check_and_never_tells_the_count():
    policy = parse_policy(POLICY, "test")
    assert authorise("bank", policy, use(smallest_cell=9)).jobs_per_day == 3  # not on the request
    assert threshold_problem(policy, use(smallest_cell=10)) is None  # exactly k is enough
    rule, detail = threshold_problem(policy, use(smallest_cell=9))
    assert rule == "k-threshold" and "9" not in detail


def test_a_dataset_without_policy_allows_nothing():
    with pytest.raises(Refusal, match="rule 'no-policy'"):
        authorise("bank", None, use())


def test_policy_mistakes_are_named():
    with pytest.raises(ConfigError, match=r"p.allow\[0\].kinds must be a non-empty list"):
        parse_policy({"allow": [{"requesters": ["a"], "columns": ["x"]}]}, "p")
    with pytest.raises(ConfigError, match="p has unknown key\\(s\\) quota"):
        parse_policy({"quota": 1}, "p")
    with pytest.raises(ConfigError, match="p.min_rows must be a positive integer"):
        parse_policy({"min_rows": 0}, "p")


# --- quotas -----------------------------------------------------------------------------------

def make_meter(ledger: Ledger, policy=POLICY) -> Meter:
    return Meter("bank", ledger, {"loans": parse_policy(policy, "test")}, NodeMetrics())


def test_twenty_concurrent_reservations_at_the_edge_of_a_quota_never_overspend(tmp_path, keys):
    # Two ledger connections on one file stand for two processes; ten threads on each.
    ledgers = [Ledger(tmp_path / "bank-ledger.sqlite", "bank", keys[0]) for _ in range(2)]
    meters = [make_meter(book) for book in ledgers]
    outcomes = admit_at_once(meters, [JobMeta(f"job-{i}", "analyst", "secure_sum",
                                              use(job_id=f"job-{i}")) for i in range(20)])
    assert outcomes.count("accepted") == 3  # the requester's allowance
    assert outcomes.count("quota") == 17
    entries = list(ledgers[0].entries())
    assert sum(e.event == "accepted" for e in entries) == 3
    assert verify_chain(entries, keys[1]).ok
    for book in ledgers:
        book.close()


def test_the_dataset_quota_binds_across_requesters(ledger):
    policy = {**POLICY, "allow": [{"requesters": ["*"], "kinds": ["*"], "columns": ["*"]}]}
    meter = make_meter(ledger, policy)
    for index in range(5):
        meter.admit(JobMeta(f"j{index}", f"cert-{index}", "secure_sum",
                            use(job_id=f"j{index}", requester=f"cert-{index}")))
    with pytest.raises(Refusal, match="jobs per day on dataset 'loans' \\(limit 5\\)"):
        meter.admit(JobMeta("j5", "cert-5", "secure_sum", use(job_id="j5", requester="cert-5")))


def test_a_job_cancelled_before_it_ran_gives_its_reservation_back(ledger):
    meter = make_meter(ledger)
    jobs = [JobMeta(f"j{i}", "analyst", "secure_sum", use(job_id=f"j{i}")) for i in range(4)]
    for job in jobs[:3]:
        meter.admit(job)
    meter.close(jobs[0], "cancelled", {}, released=True)
    meter.admit(jobs[3])  # fits again
    with pytest.raises(Refusal, match="rule 'quota'"):
        meter.admit(JobMeta("j9", "analyst", "secure_sum", use(job_id="j9")))


# --- the chain --------------------------------------------------------------------------------

def test_an_untouched_ledger_verifies(ledger, keys):
    fill(ledger, 5)
    report = verify_chain(ledger.entries(), keys[1])
    assert report.ok and report.entries == 15


@pytest.mark.parametrize(("tamper", "seq", "why"), [
    ("UPDATE entries SET rows = 1 WHERE seq = 5", 5, "altered"),
    ("UPDATE entries SET body = replace(body, '64', '65') WHERE seq = 6", 6, "altered"),
    ("DELETE FROM entries WHERE seq = 7", 7, "missing"),
    ("UPDATE entries SET seq = CASE seq WHEN 4 THEN 1004 WHEN 5 THEN 4 END WHERE seq IN (4, 5);"
     "UPDATE entries SET seq = 5 WHERE seq = 1004", 4, "altered"),
])
def test_editing_deleting_or_reordering_one_row_fails_at_that_entry(ledger, keys, tamper, seq, why):
    fill(ledger, 5)
    sql(ledger.path, tamper)
    report = verify_chain(ledger.entries(), keys[1])
    assert not report.ok
    assert report.seq == seq and why in report.problem


def test_a_forged_signature_is_caught(ledger, keys):
    fill(ledger, 2)
    # The first byte changed, whatever it was (writing '00' left 1 signature in 256 intact).
    sql(ledger.path, "UPDATE entries SET signature = CASE WHEN substr(signature, 1, 2) = '00' "
                     "THEN 'ff' ELSE '00' END || substr(signature, 3) WHERE seq = 3")
    report = verify_chain(ledger.entries(), keys[1])
    assert report.seq == 3 and "signature" in report.problem


def test_a_truncated_tail_is_caught_with_receipts(ledger, keys):
    receipts = [e for e in fill(ledger, 5) if e.event == "finished"]
    sql(ledger.path, "DELETE FROM entries WHERE seq > 9")
    assert verify_chain(ledger.entries(), keys[1]).ok  # on its own the chain looks fine
    problems = verify_against_receipts("bank", {e.seq: e.hash for e in ledger.entries()}, receipts)
    assert problems == [
        "the ledger no longer contains entry 12 (receipt for job 'job-3'); it ends at entry 9",
        "the ledger no longer contains entry 15 (receipt for job 'job-4'); it ends at entry 9",
    ]


def test_a_chain_re_signed_whole_contradicts_the_receipts(tmp_path, ledger, keys):
    receipts = [e for e in fill(ledger, 3) if e.event == "finished"]
    ledger.close()
    (tmp_path / "bank-ledger.sqlite").unlink()
    rewritten = Ledger(tmp_path / "bank-ledger.sqlite", "bank", keys[0])
    fill(rewritten, 3)  # the same jobs, fresh timestamps: a node rewriting its history
    assert verify_chain(rewritten.entries(), keys[1]).ok
    problems = verify_against_receipts("bank", {e.seq: e.hash for e in rewritten.entries()}, receipts)
    assert len(problems) == 3 and all("contradicts the receipt" in p for p in problems)
    rewritten.close()


def test_a_receipt_with_one_changed_byte_fails(ledger, keys):
    receipt = next(e for e in fill(ledger, 1) if e.event == "finished")
    assert check_receipts([receipt], keys[1], "bank") == []
    text = json.dumps(receipt.to_json())
    for changed in (text.replace('"rows": 100', '"rows": 101'),
                    text.replace(receipt.signature[:4], "ffff" if receipt.signature[:4] != "ffff"
                                 else "0000")):
        forged = LedgerEntry.from_json(json.loads(changed))
        assert check_receipts([forged], keys[1], "bank") != []


def test_countersigned_heads_catch_a_cut_tail_too(ledger, keys, tmp_path):
    fill(ledger, 3)
    seq, digest = ledger.head()
    witness = LedgerEntry("telco", 40, "t", "job-2", "witnessed", "analyst", "secure_sum", "", 0,
                          {"heads": {"bank": [seq, digest]}}, "0" * 64)
    sql(ledger.path, f"DELETE FROM entries WHERE seq = {seq}")
    problems = verify_against_receipts("bank", {e.seq: e.hash for e in ledger.entries()}, [witness])
    assert problems == [f"the ledger no longer contains entry {seq} (head countersigned by "
                        f"'telco'); it ends at entry {seq - 1}"]


def test_a_ledger_file_shared_by_two_nodes_is_refused(tmp_path, ledger, keys):
    fill(ledger, 1)
    with pytest.raises(ConfigError, match="holds another node's entries"):
        Ledger(ledger.path, "telco", keys[0])


def test_open_jobs_become_interrupted_and_still_count(ledger):
    meter = make_meter(ledger)
    job = JobMeta("j1", "analyst", "secure_sum", use(job_id="j1"))
    meter.admit(job)
    interrupted = ledger.mark_interrupted()
    assert [(e.job_id, e.event) for e in interrupted] == [("j1", "interrupted")]
    assert ledger.mark_interrupted() == []
    assert ledger.usage("loans", interrupted[0].ts[:10], "analyst").jobs == 1


def test_report_counts_per_requester_dataset_and_kind(ledger):
    fill(ledger, 2)
    ledger.append(PendingEntry("x", "requested", "marketing", "secure_sum", "loans"),
                  PendingEntry("x", "refused", "marketing", "secure_sum", "loans", 0,
                               {"rule": "quota"}))
    rows = report_rows(ledger.entries())
    assert [(r["requester"], r["jobs"], r["refused"], r["rows_touched"], r["bytes_sent"])
            for r in rows] == [("analyst", 2, 0, 200, 128), ("marketing", 0, 1, 0, 0)]


def test_the_report_table_shows_interrupted_jobs(ledger):
    fill(ledger, 1)
    make_meter(ledger).admit(JobMeta("j1", "analyst", "secure_sum", use(job_id="j1")))
    ledger.mark_interrupted()
    header, row = to_table(report_rows(ledger.entries())).splitlines()
    columns = header.split()
    assert "interrupted" in columns
    assert row.split()[columns.index("interrupted")] == "1"
    assert row.split()[columns.index("jobs")] == "1"


def test_verify_ledger_uses_only_evidence_that_verifies(tmp_path, ledger, keys):
    receipts = [e.to_json() for e in fill(ledger, 2) if e.event == "finished"]
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    forged = dict(receipts[0], hash="ab" * 32)
    (evidence / "job.json").write_text(json.dumps({"bank": [receipts[1], forged]}))
    report, problems = verify_ledger(ledger.path, "bank", keys[1], evidence, tmp_path)
    assert report.ok
    assert len(problems) == 1 and "is not genuine" in problems[0]


def test_a_ledger_written_before_keys_could_rotate_opens_and_still_verifies(ledger, keys):
    fill(ledger, 2)
    ledger.close()
    with sqlite3.connect(ledger.path) as db:  # the table as it was: no column for a new key
        db.execute("ALTER TABLE entries DROP COLUMN key_signature")
    db.close()
    reopened = Ledger(ledger.path, "bank", keys[0])
    try:
        fill(reopened, 1)
        assert verify_chain(reopened.entries(), keys[1]).ok
        assert [e.seq for e in reopened.entries()] == list(range(1, 10))
    finally:
        reopened.close()


def test_a_rules_own_limit_counts_only_the_jobs_of_its_kinds(ledger):
    """A requester's psi rule allows one intersection a day whatever its sums: on an earlier
    main a rule's limit counted every job of the requester on the dataset."""
    policy = {"min_rows": 10, "allow": [
        {"requesters": ["analyst"], "kinds": ["secure_sum"], "columns": ["amount"],
         "jobs_per_day": 10},
        {"requesters": ["analyst"], "kinds": ["psi"], "columns": ["id"], "jobs_per_day": 1}]}
    meter = make_meter(ledger, policy)
    for index in range(3):
        meter.admit(JobMeta(f"s{index}", "analyst", "secure_sum", use(job_id=f"s{index}")))
    psi = use(job_id="p1", kind="psi", columns=("id",))
    meter.admit(JobMeta("p1", "analyst", "psi", psi))  # the sums do not count against it
    with pytest.raises(Refusal, match="rule 'quota'"):
        meter.admit(JobMeta("p2", "analyst", "psi", replace(psi, job_id="p2")))
    meter.admit(JobMeta("s9", "analyst", "secure_sum", use(job_id="s9")))  # nor psi for sums


def test_what_stays_at_its_owners_node_needs_no_recipient_rule(ledger):
    """A job whose outputs stay at this party (a psi alignment, a total it receives) releases
    nothing of its data to anyone else: the recipients rule is not asked."""
    meter = make_meter(ledger, {**POLICY, "recipients": ["requester"]})
    meter.authorise(JobMeta("j1", "analyst", "secure_sum", use(recipient="bank")))
    with pytest.raises(Refusal, match="may not go to 'telco'"):
        meter.authorise(JobMeta("j2", "analyst", "secure_sum", use(recipient="telco")))
