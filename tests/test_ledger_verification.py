"""The ledger's verification rules one by one, on small chains built here.

Guards `invisible.metering.verify`: rows read back from SQLite are the entries that were
signed (field by field); an export's first entry must link to the genesis; and a ledger is
checked against every receipt and countersigned head that a requester or a peer holds — a
gap, a cut-off tail or a contradicting hash is named, and evidence about other nodes is not
taken as a claim about this one.
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_metering import fill

from invisible.metering.entries import GENESIS_HASH, LedgerEntry
from invisible.metering.ledger import Ledger
from invisible.metering.signing import generate_signing_key, load_signing_key
from invisible.metering.verify import (
    entry_row,
    row_entry,
    sequence_problems,
    verify_against_receipts,
    verify_receipt,
)


@pytest.fixture
def chain(tmp_path) -> list[LedgerEntry]:
    generate_signing_key(tmp_path / "bank.key", tmp_path / "bank.pub")
    ledger = Ledger(tmp_path / "bank.sqlite", "bank", load_signing_key(tmp_path / "bank.key"))
    try:
        return fill(ledger, jobs=3)
    finally:
        ledger.close()


def entry(node: str, seq: int, digest: str, event: str = "finished",
          body: dict | None = None) -> LedgerEntry:
    return LedgerEntry(node, seq, "2026-11-30T00:00:00Z", f"job-{seq}", event, "analyst",
                       "secure_sum", "loans", 100, body or {}, "prev", digest, "sig")


def test_a_stored_row_reads_back_as_the_entry_that_was_signed(chain):
    for written in chain:
        assert row_entry(entry_row(written)) == written
    # every field goes back to its own place: no two fields could be swapped unnoticed
    assert len({str(v) for v in dataclasses.astuple(chain[0])}) == len(dataclasses.fields(chain[0]))


def test_an_export_whose_first_entry_does_not_link_to_the_genesis_is_named(chain):
    assert sequence_problems(chain, first_seq=1) == []
    assert chain[0].prev_hash == GENESIS_HASH
    rechained = [dataclasses.replace(chain[0], prev_hash="f" * 64), *chain[1:]]
    assert sequence_problems(rechained, first_seq=1) == [
        "entry 1 of 'bank' does not link to the entry before it (replaced or re-chained)"]
    # A run that may start anywhere is checked from its second entry on, not against genesis.
    assert sequence_problems(chain[2:], first_seq=None) == []
    relinked = [chain[2], dataclasses.replace(chain[3], prev_hash="f" * 64), *chain[4:]]
    assert sequence_problems(relinked, first_seq=None) == [
        "entry 4 of 'bank' does not link to the entry before it (replaced or re-chained)"]


def test_a_receipt_against_an_empty_ledger_says_it_ends_at_entry_zero():
    assert verify_against_receipts("bank", {}, [entry("bank", 3, "h3")]) == [
        "the ledger no longer contains entry 3 (receipt for job 'job-3'); it ends at entry 0"]


def test_a_receipt_for_an_entry_missing_inside_the_ledger_is_named():
    hashes = {1: "h1", 2: "h2", 4: "h4"}
    assert verify_against_receipts("bank", hashes, [entry("bank", 3, "h3")]) == [
        "the ledger no longer contains entry 3 (receipt for job 'job-3'); it ends at entry 4"]


def test_a_countersigned_head_that_the_ledger_contradicts_is_named():
    hashes = {1: "h1", 2: "h2"}
    witness = entry("telco", 9, "t9", "witnessed", {"heads": {"bank": [2, "forged"]}})
    assert verify_against_receipts("bank", hashes, [witness]) == [
        "entry 2 contradicts the head countersigned by 'telco'"]
    agreeing = entry("telco", 9, "t9", "witnessed", {"heads": {"bank": [2, "h2"]}})
    assert verify_against_receipts("bank", hashes, [agreeing]) == []


def test_evidence_about_other_nodes_is_no_claim_about_this_one_and_does_not_stop_the_check():
    hashes = {1: "h1", 2: "h2"}
    others = [
        entry("telco", 7, "t7"),  # the peer's own receipt: its seq means nothing here
        entry("telco", 8, "t8", "witnessed", {"heads": {"hospital": [5, "x"]}}),
        entry("telco", 9, "t9", "witnessed"),  # a witnessed entry without heads
    ]
    assert verify_against_receipts("bank", hashes, others) == []
    assert verify_against_receipts("bank", hashes, [*others, entry("bank", 2, "altered")]) == [
        "entry 2 contradicts the receipt for job 'job-2'"]


def test_any_entry_the_node_signed_is_a_receipt_its_own_witnessed_entries_included():
    own = entry("bank", 5, "h5", "witnessed", {"heads": {"telco": [9, "t9"]}})
    assert verify_against_receipts("bank", {1: "h1", 2: "h2"}, [own]) == [
        "the ledger no longer contains entry 5 (receipt for job 'job-5'); it ends at entry 2"]


def test_a_key_rotated_receipt_must_carry_the_new_key_s_signature_too(tmp_path):
    generate_signing_key(tmp_path / "bank.key", tmp_path / "bank.pub")
    old = load_signing_key(tmp_path / "bank.key")
    ledger = Ledger(tmp_path / "bank.sqlite", "bank", old)
    try:
        fill(ledger, jobs=1)
        rotated = ledger.rotate_key(Ed25519PrivateKey.generate())
    finally:
        ledger.close()
    assert verify_receipt(rotated, old.public_key()) is None
    unproven = dataclasses.replace(rotated, key_signature="")  # intact hash, old signature
    assert unproven.problem(old.public_key()) is None
    assert verify_receipt(unproven, old.public_key()) == (
        "its key rotation lacks a valid signature by the new key it names (no proof the node "
        "holds that key)")


def rotated_chain(tmp_path):
    """Three jobs, a key rotation, two more jobs: (rows, history of keys)."""
    from invisible.metering.keys import KeyHistory
    from invisible.metering.signing import public_raw
    from invisible.metering.verify import entry_row

    generate_signing_key(tmp_path / "bank.key", tmp_path / "bank.pub")
    old = load_signing_key(tmp_path / "bank.key")
    new = Ed25519PrivateKey.generate()
    ledger = Ledger(tmp_path / "bank.sqlite", "bank", old)
    try:
        fill(ledger, jobs=3)
        rotated = ledger.rotate_key(new)
        fill(ledger, jobs=2)
        rows = [entry_row(e) for e in ledger.entries()]
    finally:
        ledger.close()
    history = KeyHistory(((1, public_raw(old.public_key())),
                          (rotated.seq + 1, public_raw(new.public_key()))))
    return rows, history, rotated.seq


def retold(row, **changes):
    fields = list(row)
    for index, value in changes.items():
        fields[int(index.removeprefix("f"))] = value
    return tuple(fields)


def test_each_row_s_own_problem_is_named_exactly_with_the_key_in_force(tmp_path):
    from invisible.metering.verify import verify_rows

    rows, history, rotation = rotated_chain(tmp_path)
    assert verify_rows(rows, history).ok
    altered = [*rows[:2], retold(rows[2], f8=999), *rows[3:]]
    report = verify_rows(altered, history)
    assert (report.seq, report.problem) == (3, "its content does not match its hash (altered)")
    for at, since in ((1, ""), (rotation + 2, f" in force since the key rotation at entry "
                                                f"{rotation}")):
        for signature in ("00" * 64, "not hex"):
            forged = [*rows[:at], retold(rows[at], f12=signature), *rows[at + 1:]]
            report = verify_rows(forged, history)
            assert (report.seq, report.problem) == (
                at + 1, f"its signature does not verify with the node's public key{since}")


def test_long_ledgers_are_checked_in_worker_processes_with_the_same_verdict(tmp_path,
                                                                          monkeypatch):
    from invisible.metering import verify

    rows, history, _ = rotated_chain(tmp_path)
    monkeypatch.setattr(verify, "_PARALLEL_FROM", 4)  # every ledger here is long
    monkeypatch.setattr(verify, "_BATCH", 3)  # in uneven batches
    assert verify.verify_rows(rows, history).ok
    last = len(rows) - 1
    broken = [*rows[:last], retold(rows[last], f8=999)]
    report = verify.verify_rows(broken, history)
    assert (report.seq, report.entries) == (last + 1, len(rows))
    assert report.problem == "its content does not match its hash (altered)"
    first = verify.verify_rows([retold(rows[0], f8=999), *rows[1:]], history)
    assert (first.seq, first.problem) == (1, "its content does not match its hash (altered)")


def test_a_gap_a_step_back_and_a_broken_link_are_each_named_exactly(tmp_path):
    from invisible.metering.verify import entry_row, verify_rows

    generate_signing_key(tmp_path / "bank.key", tmp_path / "bank.pub")
    key = load_signing_key(tmp_path / "bank.key")
    ledger = Ledger(tmp_path / "bank.sqlite", "bank", key)
    try:
        chain = fill(ledger, jobs=2)
    finally:
        ledger.close()
    rows = [entry_row(e) for e in chain]
    gap = verify_rows([*rows[:2], *rows[3:]], key.public_key())
    assert (gap.seq, gap.problem) == (3, "entry 3 is missing (the sequence jumps to 4)")
    assert gap.keys is not None and gap.keys.raw_keys()  # a failed report still says its keys
    back = verify_rows([*rows[:3], rows[1], *rows[3:]], key.public_key())
    assert (back.seq, back.problem) == (4, "the sequence goes backwards (reordered)")
    # entry 3 re-chained: intact on its own (hashed and signed again), but its link is not
    rechained = dataclasses.replace(chain[2], prev_hash="f" * 64).sealed(key)
    link = verify_rows([*rows[:2], entry_row(rechained), *rows[3:]], key.public_key())
    assert (link.seq, link.problem) == (
        3, "it does not link to the entry before it (reordered, replaced or re-chained)")


def test_the_chain_s_keys_are_checked_against_the_published_history_up_to_its_end(tmp_path):
    from invisible.metering.keys import KeyHistory
    from invisible.metering.signing import public_raw
    from invisible.metering.verify import entry_row, verify_rows

    def chain_of(first: Ed25519PrivateKey, *then: Ed25519PrivateKey) -> list:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.sqlite"
        ledger = Ledger(path, "bank", first)
        try:
            fill(ledger, jobs=1)  # entries 1-3
            for key in then:
                ledger.rotate_key(key)  # entries 4, 5, ...
            fill(ledger, jobs=1)
            return [entry_row(e) for e in ledger.entries()]
        finally:
            ledger.close()

    a, b, c, d = (Ed25519PrivateKey.generate() for _ in range(4))
    raw = {k: public_raw(k.public_key()) for k in (a, b, c, d)}
    published = KeyHistory(((1, raw[a]), (5, raw[b])))  # A, rotated to B at entry 4
    # a chain whose rotations are all its own, under keys the node never published
    forged = verify_rows(chain_of(c, d), KeyHistory.single(a.public_key()))
    assert (forged.seq, forged.problem) == (
        1, "none of the keys its key-rotated entries name is a key the node published")
    # signed from entry 1 by another key than the published one, then rotated to B
    other_start = verify_rows(chain_of(c, b), published)
    assert (other_start.seq, other_start.problem) == (
        1, "it is signed by another key than the node's published keys history says was in "
           "force")
    # a rotation newer than the published history (B to D at entry 5) is the chain's own
    # to prove: it is checked by its signatures, not against keys the verifier lacks
    assert verify_rows(chain_of(a, b, d), published).ok
