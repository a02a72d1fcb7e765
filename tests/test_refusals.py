"""Nothing learned from a refusal: each test is an attack that worked on an earlier main.

A requester probes a party's data through the errors of ordinary jobs: a
bound below the largest value, a group range on a column it may not use, a
row-count check, a column it may not see. The node now clips to the bound,
checks its policy before it reads anything, answers every forbidden probe
alike, charges data-dependent refusals like jobs, and records every refusal.
"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.errors import ConfigError, NodeBusyError, PolicyError, ProtocolError
from invisible.jobspec import JobSpec
from invisible.kinds.secure_sum import SecureSumParams
from invisible.net.pki import Identity, Role
from invisible.node.config import DatasetConfig
from invisible.node.datasets import load_dataset
from invisible.node.executor import Allowance
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets, sample_path

PARTIES = tuple(SAMPLE_COLUMNS)
#: The analyst may do anything; the prober only secure sums of monthly_spend, three a day.
POLICY = {
    "min_rows": 10, "recipients": ["requester", "telco"],  # telco: as a Paillier key holder
    "allow": [
        {"requesters": ["analyst"], "kinds": ["*"], "columns": ["*"], "jobs_per_day": 1000},
        {"requesters": ["prober"], "kinds": ["secure_sum"], "columns": ["monthly_spend"],
         "jobs_per_day": 3},
    ],
}


@pytest.fixture
def federation(tmp_path):
    layout = write_local_federation(tmp_path, list(PARTIES), sample_datasets(POLICY),
                                    coordinators=("analyst", "prober"), dealers=("dealer",),
                                    limits={"rpc_timeout_s": 20.0})
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_configs["analyst"]) as analyst, \
            Federation.from_config(layout.coordinator_configs["prober"]) as prober:
        yield analyst, prober, nodes


def column(party: str, name: str) -> np.ndarray:
    config = DatasetConfig(SAMPLE_DATASET, sample_path(party), SAMPLE_COLUMNS[party])
    return load_dataset(config).column(name)


def spend_inputs(column_name: str = "monthly_spend") -> dict[str, tuple[str, str]]:
    return {p: (SAMPLE_DATASET, column_name) for p in PARTIES}


def ledger_events(nodes, party: str) -> list[tuple[str, str, dict]]:
    return [(e.job_id, e.event, e.body) for e in nodes.nodes[party].ledger.entries()]


# --- 1. the bound is not an oracle --------------------------------------------------------------

def test_a_bound_below_the_largest_value_clips_instead_of_refusing(federation):
    analyst, _, nodes = federation
    largest = float(column("hospital", "monthly_spend").max())
    results = {}
    for bound in (largest - 0.01, largest, largest + 0.01):  # a binary search's last steps
        results[bound] = analyst.secure_sum(spend_inputs(), bound, max_rows=1000)
    expected = {b: sum(np.clip(column(p, "monthly_spend"), -b, b).sum() for p in PARTIES)
                for b in results}
    for bound, result in results.items():
        assert result.value == pytest.approx(expected[bound], abs=720 * 2.0**-17)
    # How many values each party clipped is in its own ledger, never in the receipt.
    job = results[largest - 0.01].job_id
    notes = [body for job_id, event, body in ledger_events(nodes, "hospital")
             if job_id == job and event == "clipped"]
    assert notes == [{"columns": ["monthly_spend"], "values": 1}]
    receipt = results[largest - 0.01].receipts["hospital"][0]
    assert receipt["event"] == "finished" and "clipped" not in str(receipt)
    # ... and the count of entries (the receipts' seq numbers) does not tell whether any
    # was clipped: a job that clipped none writes its note too
    gaps = {bound: [e for e in ledger_events(nodes, "hospital") if e[0] == r.job_id]
            for bound, r in results.items()}
    assert [len(entries) for entries in gaps.values()] == [len(gaps[largest])] * 3
    assert [body["values"] for job_id, event, body in ledger_events(nodes, "hospital")
            if job_id == results[largest].job_id and event == "clipped"] == [0]


def test_statistics_and_paillier_clip_too(federation):
    analyst, _, _ = federation
    values = np.concatenate([column(p, "monthly_spend") for p in PARTIES])
    stats = analyst.statistics(spend_inputs(), 100.0, outputs=["mean"], dealer="dealer",
                               max_rows=1000)
    clipped = np.clip(values, -100, 100)
    assert stats["mean"] == pytest.approx(clipped.mean(), abs=2.0**-16 * (3 * 100 + 4))
    by_paillier = analyst.paillier_sum(spend_inputs(), 100.0, max_rows=1000, key_holder="telco")
    assert by_paillier.value == pytest.approx(clipped.sum(), abs=720 * 2.0**-17)


# --- 2. the policy first: forbidden probes all look alike and are all recorded --------------------

def refusal(call) -> str:
    with pytest.raises(PolicyError) as caught:
        call()
    return str(caught.value).split(": ", 1)[1]  # without the job id


def test_probes_of_a_forbidden_column_all_get_the_same_refusal(federation):
    _, prober, nodes = federation
    before = len(ledger_events(nodes, "hospital"))
    answers = {refusal(lambda c=c: prober.secure_sum(
        spend_inputs(), 1000.0, max_rows=1000, group_by="visits", categories=c))
        for c in (5, 9, 10, 94, 95)}  # max(visits) = 9 leaked through [0, 10) once
    assert len(answers) == 1
    (answer,) = answers
    assert "rule 'columns'" in answer and "visits" in answer
    answers = {refusal(lambda n=n: prober.secure_sum(
        spend_inputs("patient_id"), 1000.0, max_rows=n)) for n in (100, 180, 181, 1000)}
    assert len(answers) == 1 and "rule 'columns'" in answers.pop()
    # a column that does not exist is refused by the policy too, and lists no other column
    missing = refusal(lambda: prober.secure_sum(spend_inputs("no_such"), 1000.0, max_rows=1000))
    assert "rule 'columns'" in missing and "district" not in missing and "visits" not in missing
    # every one of those refusals is in the ledger (the first party to refuse is "bank",
    # the others are cancelled: each records its own refusal or cancellation)
    recorded = [e for e in ledger_events(nodes, "bank")[before:] if e[1] == "refused"]
    assert len(recorded) == 5 + 4 + 1


def test_a_kind_the_requester_may_not_run_says_nothing_of_rows(federation):
    _, prober, _ = federation
    answers = {refusal(lambda n=n: prober.statistics(
        spend_inputs(), 1000.0, outputs=["count"], dealer="dealer", max_rows=n))
        for n in (100, 239, 240, 241)}  # the bank has 240 rows
    assert len(answers) == 1 and "rule 'not-allowed'" in answers.pop()


# --- 3. data-dependent checks only for allowed jobs, charged like jobs ----------------------------

def test_data_checks_are_charged_so_probing_costs_the_quota(federation):
    _, prober, _ = federation
    refusals = [refusal(lambda n=n: prober.secure_sum(spend_inputs(), 1000.0, max_rows=n))
                for n in (100, 200, 239)]
    assert all("rule 'data'" in r and "more rows than the job's max_rows" in r for r in refusals)
    assert not any(str(n) in r for r in refusals for n in (180, 240, 300))
    # three charged refusals used the day's three jobs: the probe has run out
    quota = refusal(lambda: prober.secure_sum(spend_inputs(), 1000.0, max_rows=1000))
    assert "rule 'quota'" in quota


def test_a_group_range_problem_is_charged_and_gives_no_value(federation):
    analyst, _, nodes = federation
    before = len(ledger_events(nodes, "bank"))
    answer = refusal(lambda: analyst.secure_sum(spend_inputs(), 1000.0, max_rows=1000,
                                                group_by="district", categories=5))
    assert answer.endswith("group column 'district' does not hold integers in [0, categories); "
                           "no result was released")
    events = [(event, body.get("charged")) for _, event, body in ledger_events(nodes, "bank")
              [before:] if event != "witnessed"]  # peers' heads, countersigned meanwhile
    assert events == [("requested", None), ("accepted", None), ("refused", True)]


# --- sizes are bounded by declared limits ---------------------------------------------------------

def test_a_huge_size_is_refused_by_its_declared_limit_everywhere(federation):
    analyst, _, nodes = federation
    with pytest.raises(ConfigError, match="'categories' must be an integer >= 1, <= 1048576"):
        analyst.secure_sum(spend_inputs(), 1000.0, group_by="district", categories=10**12)
    raw = {"inputs": {p: {"dataset": SAMPLE_DATASET, "column": "monthly_spend"} for p in PARTIES},
           "bound": 1000.0, "group_by": "district", "categories": 10**12}
    with pytest.raises(ConfigError, match="'categories' must be an integer"):
        analyst._run_checked("secure_sum", 1, raw, PARTIES, None, None)  # past the coordinator
    last = ledger_events(nodes, "telco")[-1]
    assert last[1] == "refused" and last[2]["rule"] == "invalid-request"


def test_a_refused_or_failed_job_still_gives_the_requester_signed_receipts(federation, tmp_path):
    import json

    from invisible.metering.audit import verify_ledger
    from invisible.metering.signing import load_public_key

    analyst, _, nodes = federation
    with pytest.raises(PolicyError) as refused:
        analyst.secure_sum(spend_inputs(), 1000.0, max_rows=100)  # a charged data refusal
    job_id = str(refused.value).split("job '")[1].split("'")[0]
    receipts = json.loads((analyst.config.receipts_dir / f"{job_id}.json").read_text())
    refusers = [p for p, rs in receipts.items() if rs and rs[-1]["event"] == "refused"]
    assert refusers and all(rs[-1]["event"] in ("refused", "cancelled")
                            for rs in receipts.values())
    node = nodes.nodes[refusers[0]]
    key = load_public_key(node.config.ledger.signing_key.with_suffix(".pub"))
    chain, problems = verify_ledger(node.config.ledger.path, refusers[0], key,
                                    analyst.config.receipts_dir,
                                    node.config.ledger.signing_key.parent)
    assert chain.ok and problems == []


def test_a_paillier_key_holder_is_a_recipient_the_policy_must_allow(tmp_path):
    only_requester = {**POLICY, "recipients": ["requester"]}
    layout = write_local_federation(tmp_path, list(PARTIES), sample_datasets(only_requester),
                                    coordinators=("analyst",))
    with InProcessNodes(layout), \
            Federation.from_config(layout.coordinator_configs["analyst"]) as analyst:
        answer = refusal(lambda: analyst.paillier_sum(spend_inputs(), 1000.0, max_rows=1000,
                                                      key_holder="bank"))
        assert "rule 'recipients'" in answer and "may not go to 'bank'" in answer


# --- the answer to Start does not depend on the data ---------------------------------------------

def sum_spec(job_id: str, **extra) -> JobSpec:
    params = SecureSumParams.parse({"inputs": {p: {"dataset": SAMPLE_DATASET,
                                                   "column": "monthly_spend"} for p in PARTIES},
                                    "bound": 1000.0, "max_rows": 1000, **extra}, PARTIES)
    return JobSpec(job_id, "secure_sum", PARTIES, params.to_json())


def test_a_job_accepted_and_cancelled_before_it_runs_reveals_nothing_and_costs_nothing(federation):
    """On an earlier main, the k threshold was decided at Start: a requester learned from
    an acceptance that every group held k rows, cancelled, and got its reservation back."""
    analyst, _, nodes = federation
    bank = analyst.clients["bank"]
    too_small = {"group_by": "district", "categories": 1000}  # most groups empty: below k
    for job_id, extra in (("k-met", {}), ("k-missed", too_small)):
        bank.start_job(sum_spec(job_id, **extra))  # accepted alike
        bank.cancel_job(job_id, "probe", 5.0)
    ends = {job_id: (event, body.get("released")) for job_id, event, body in
            ledger_events(nodes, "bank") if event == "cancelled"}
    assert ends == {"k-met": ("cancelled", True), "k-missed": ("cancelled", True)}
    with pytest.raises(PolicyError, match="rule 'k-threshold'"):  # run, it is refused, charged
        analyst.secure_sum(spend_inputs(), 1000.0, max_rows=1000, **too_small)


def test_a_duplicate_start_while_the_first_is_being_prepared_leaves_the_first_alone(federation,
                                                                                    monkeypatch):
    """On an earlier main, a concurrent duplicate could close the winning job's inbox."""
    _, _, nodes = federation
    bank = nodes.nodes["bank"]
    opening, release = threading.Event(), threading.Event()
    real_open = bank.executor._admission._open_channel

    def slow_open(spec):
        opening.set()
        release.wait(10)
        return real_open(spec)

    monkeypatch.setattr(bank.executor._admission, "_open_channel", slow_open)
    requester = Identity("analyst", Role.COORDINATOR)
    first = threading.Thread(target=bank.executor.start_job, args=(sum_spec("twice"), requester))
    first.start()
    assert opening.wait(10)
    before = len(ledger_events(nodes, "bank"))
    with pytest.raises(ProtocolError, match="job id 'twice' was used before") as duplicate:
        bank.executor.start_job(sum_spec("twice"), requester)
    release.set()
    first.join(10)
    assert bank.executor.running() == ["twice"]  # the first is prepared, its inbox open
    assert bank.mailbox.may_abort("twice", "hospital")
    refused = ledger_events(nodes, "bank")[before:before + 2]
    assert [(job_id, event) for job_id, event, _ in refused] == [("-", "requested"),
                                                                ("-", "refused")]
    assert duplicate.value.receipts and duplicate.value.receipts[0]["job_id"] == "-"
    bank.executor.cancel_job("twice", requester, "done")


def test_a_requester_refused_too_often_is_told_to_wait_without_a_ledger_entry(tmp_path):
    """On an earlier main, refused Starts wrote about 7,000 signed entries in 5 s."""
    layout = write_local_federation(tmp_path, list(PARTIES), sample_datasets(POLICY),
                                    coordinators=("analyst", "prober"),
                                    limits={"refused_burst": 5, "refused_per_s": 0.01})
    with InProcessNodes(layout) as nodes:
        bank = nodes.nodes["bank"].executor
        prober = Identity("prober", Role.COORDINATOR)
        for i in range(5):  # prober may not use 'age': each is refused and recorded
            with pytest.raises(PolicyError, match="rule 'columns'"):
                bank.start_job(sum_spec(f"probe-{i}", group_by="age", categories=100), prober)
        entries = len(ledger_events(nodes, "bank"))
        with pytest.raises(NodeBusyError, match="requester 'prober' had 5 requests refused"):
            bank.start_job(sum_spec("probe-5"), prober)  # even a valid one, until it refills
        assert len(ledger_events(nodes, "bank")) == entries
        bank.start_job(sum_spec("analyst-1"), Identity("analyst", Role.COORDINATOR))


def test_the_refused_allowance_refills_over_time():
    now = [0.0]
    allowance = Allowance(2, 0.5, clock=lambda: now[0])
    allowance.spend("x")
    allowance.spend("x")
    assert not allowance.allows("x") and allowance.allows("y")
    now[0] = 1.9
    assert not allowance.allows("x")
    now[0] = 2.0
    assert allowance.allows("x")
    now[0] = 100.0
    allowance.spend("x")
    assert allowance.allows("x")  # refilled to the burst, not beyond
    allowance.spend("x")
    assert not allowance.allows("x")


def test_a_refusal_keeps_its_receipt_however_long_the_names_in_the_request(federation):
    """On an earlier main, a 20,000-character column name made the refusal's receipt pass
    gRPC's 16 KiB metadata limit: the requester got a transport error and no receipt."""
    _, prober, _ = federation
    long_name = "x" * 20_000
    with pytest.raises(ConfigError, match="each name of at most 128 characters"):
        prober.secure_sum({p: (SAMPLE_DATASET, long_name) for p in PARTIES}, 1000.0)
    raw = {"inputs": {p: {"dataset": SAMPLE_DATASET, "column": long_name} for p in PARTIES},
           "bound": 1000.0}
    with pytest.raises(ConfigError, match="each name of at most 128 characters") as refused:
        prober._run_checked("secure_sum", 1, raw, PARTIES, None, None)  # past the coordinator
    assert refused.value.receipts and refused.value.receipts[0]["event"] == "refused"


def test_a_refused_start_leaves_no_id_taken_and_no_inbox_open(federation, monkeypatch):
    """On an earlier main, a reused id stayed in the set of ids being prepared for ever, and a
    ledger failing during admission left the job's inbox open for good."""
    analyst, _, nodes = federation
    bank = nodes.nodes["bank"]
    requester = Identity("analyst", Role.COORDINATOR)
    analyst.secure_sum(spend_inputs(), 1000.0, max_rows=1000, job_id="used")
    with pytest.raises(ProtocolError, match="job id 'used' was used before"):
        bank.executor.start_job(sum_spec("used"), requester)
    assert bank.executor._starting == set()

    def ledger_fails(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(bank.meter, "admit", ledger_fails)
    with pytest.raises(sqlite3.OperationalError):
        bank.executor.start_job(sum_spec("ledger-fails"), requester)
    assert not bank.mailbox.may_abort("ledger-fails", "hospital")  # its inbox is closed
    assert bank.executor._starting == set()
