"""The evidence has no holes: a node checks its own chain before it appends to it, a PKI
command never replaces a ledger key, and the auditor's tools say what they really found."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from invisible.cli import main
from invisible.coordinator.federation import Federation
from invisible.coordinator.local import LocalLayout, write_local_federation
from invisible.errors import ConfigError
from invisible.metering.audit import verify_ledger
from invisible.metering.entries import TERMINAL_EVENTS, LedgerEntry, PendingEntry
from invisible.metering.exports import entries_digest
from invisible.metering.keys import KEY_ROTATED, load_key_history, rotation_body
from invisible.metering.ledger import Ledger
from invisible.metering.signing import (
    generate_signing_key,
    load_public_key,
    load_signing_key,
    public_pem,
    public_raw,
    signature_valid,
    write_signing_key,
)
from invisible.metering.startup import (
    ACCEPTED_BROKEN,
    MARK_DELAY_S,
    HeadMarker,
    lock_ledger,
    marker_path,
    open_node_ledger,
)
from invisible.metering.verify import sequence_problems, verify_receipt
from invisible.net.pki import init_pki
from invisible.node.config import PartyConfig, load_party_config
from invisible.node.node import PartyNode


@pytest.fixture
def layout(tmp_path: Path) -> LocalLayout:
    return write_local_federation(tmp_path / "fed", ["bank", "telco"])


def bank(layout: LocalLayout) -> PartyConfig:
    return load_party_config(layout.party_configs["bank"])


def entries_of(config: PartyConfig) -> list[LedgerEntry]:
    ledger = Ledger(config.ledger.path, config.party_id, None)
    try:
        return list(ledger.entries())
    finally:
        ledger.close()


def sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(statement)
    db.close()


def run_node(layout: LocalLayout, entries: int = 0, **options: bool) -> PartyNode:
    """Start bank's node, let it write `entries` witnessed entries, stop it."""
    node = PartyNode(bank(layout), **options).start()
    try:
        for index in range(entries):
            node.meter.witness_heads({"telco": (index + 1, f"{index:064x}")})
    finally:
        node.stop()
    return node


def refusal_without_flag(layout: LocalLayout) -> str:
    with pytest.raises(ConfigError) as refused:
        PartyNode(bank(layout))
    message = str(refused.value)
    assert "\n" not in message
    assert str(bank(layout).ledger.path) in message
    return message


def refusal(layout: LocalLayout) -> str:
    message = refusal_without_flag(layout)
    assert "--accept-broken-ledger" in message
    return message


# --- A. a PKI command never replaces a ledger key ----------------------------------------------

def test_pki_init_with_overwrite_keeps_every_ledger_key(tmp_path):
    first = init_pki(tmp_path, ["bank", "telco"], dealers=["dealer"])
    assert first.kept_ledger_keys == ()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*-ledger.*")}
    assert len(before) == 6
    tls_before = (tmp_path / "bank.pem").read_bytes()
    again = init_pki(tmp_path, ["bank", "telco", "insurer"], dealers=["dealer"], overwrite=True)
    assert (tmp_path / "bank.pem").read_bytes() != tls_before  # the PKI itself is new
    assert {p: (tmp_path / p).read_bytes() for p in before} == before  # the ledger keys are not
    assert again.kept_ledger_keys == ("bank", "telco", "dealer")
    assert (tmp_path / "insurer-ledger.key").exists()  # a new party still gets one


def test_a_public_ledger_key_without_its_private_key_is_never_replaced(tmp_path):
    init_pki(tmp_path, ["bank"])
    published = (tmp_path / "bank-ledger.pub").read_bytes()
    (tmp_path / "bank-ledger.key").unlink()
    with pytest.raises(ConfigError, match="bank-ledger.pub exists without its private key"):
        init_pki(tmp_path, ["bank"], overwrite=True)
    assert (tmp_path / "bank-ledger.pub").read_bytes() == published


def test_generating_a_signing_key_never_overwrites_one(tmp_path):
    generate_signing_key(tmp_path / "x.key", tmp_path / "x.pub")
    kept = (tmp_path / "x.key").read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        generate_signing_key(tmp_path / "x.key", tmp_path / "x.pub")
    assert (tmp_path / "x.key").read_bytes() == kept


# --- B. a node checks its own chain when it opens its ledger ------------------------------------

def test_a_node_starts_on_its_own_intact_ledger_again_and_again(layout):
    run_node(layout, entries=3)
    run_node(layout, entries=2)
    run_node(layout)
    assert [e.seq for e in entries_of(bank(layout))] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("tamper", "seq", "why"), [
    ("UPDATE entries SET rows = 7 WHERE seq = 3", 3, "altered"),
    ("DELETE FROM entries WHERE seq = 4", 4, "missing"),
    # The first byte flipped, whatever it was: writing a fixed byte left the signature
    # intact whenever it already started with that byte (1 run in 256, seen in CI).
    ("UPDATE entries SET signature = CASE WHEN substr(signature, 1, 2) = '00' THEN 'ff'"
     " ELSE '00' END || substr(signature, 3) WHERE seq = 2", 2, "signature"),
])
def test_a_node_refuses_to_start_on_an_edited_chain_naming_the_first_bad_entry(
        layout, tamper, seq, why):
    run_node(layout, entries=6)
    sql(bank(layout).ledger.path, tamper)
    message = refusal(layout)
    assert f"entry {seq}" in message and why in message
    assert len(entries_of(bank(layout))) in (5, 6)  # nothing was appended


def test_a_node_refuses_to_start_on_a_chain_cut_while_it_was_stopped(layout):
    run_node(layout, entries=6)
    sql(bank(layout).ledger.path, "DELETE FROM entries WHERE seq >= 5")
    message = refusal(layout)
    assert "entry 5" in message and "ends at entry 4" in message and "entry 6" in message


def test_a_node_refuses_to_start_with_its_ledger_file_deleted(layout):
    run_node(layout, entries=2)
    path = bank(layout).ledger.path
    for leftover in path.parent.glob(path.name + "*"):
        leftover.unlink()
    message = refusal(layout)
    assert "entry 1" in message and "no entries" in message and "entry 2" in message


def test_a_replaced_or_forged_head_marker_is_refused(layout):
    run_node(layout, entries=2)
    marker = bank(layout).ledger.signing_key.with_suffix(".head")
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "seq": 1}))
    assert "not signed by this node's ledger key" in refusal(layout)


def test_the_head_is_marked_as_soon_as_the_ledger_has_an_entry(layout):
    config = bank(layout)
    ledger = open_node_ledger(config.ledger.path, "bank", config.ledger.signing_key)
    ledger.append(PendingEntry("j1", "requested", "analyst"))  # ... and then the node crashes
    for leftover in config.ledger.path.parent.glob(config.ledger.path.name + "*"):
        leftover.unlink()
    with pytest.raises(ConfigError, match="entry 1"):
        open_node_ledger(config.ledger.path, "bank", config.ledger.signing_key)
    ledger.close()


def test_the_head_is_marked_after_every_job_end_so_a_crash_leaves_little_unguarded(layout):
    config = bank(layout)
    ledger = open_node_ledger(config.ledger.path, "bank", config.ledger.signing_key)
    marker = HeadMarker(marker_path(config.ledger.signing_key), "bank",
                        load_signing_key(config.ledger.signing_key))
    for event in sorted(TERMINAL_EVENTS):
        ledger.append(PendingEntry(f"job-{event}", "requested", "analyst"),
                      PendingEntry(f"job-{event}", "accepted", "analyst"))
        [end] = ledger.append(PendingEntry(f"job-{event}", event, "analyst"))
        deadline = time.monotonic() + 5  # marked soon after (MARK_DELAY_S), no close needed
        while marker.recorded() != (end.seq, end.hash) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.recorded() == (end.seq, end.hash)
    ledger.append(PendingEntry("job-open", "requested", "analyst"))  # not an end: may lag
    time.sleep(3 * MARK_DELAY_S)
    assert marker.recorded() == (end.seq, end.hash)
    # ... the node crashes here (no close); then the last job's end is cut off its ledger
    sql(config.ledger.path, f"DELETE FROM entries WHERE seq >= {end.seq}")
    with pytest.raises(ConfigError, match=f"ends at entry {end.seq - 1}, but this node signed "
                                          f"up to entry {end.seq}"):
        open_node_ledger(config.ledger.path, "bank", config.ledger.signing_key)
    ledger.close()


def test_accepting_a_broken_chain_is_signed_recorded_and_covers_only_that_damage(layout):
    run_node(layout, entries=6)
    config = bank(layout)
    sql(config.ledger.path, "UPDATE entries SET rows = 7 WHERE seq = 3")
    run_node(layout, accept_broken_ledger=True)
    accepted = entries_of(config)[-1]
    assert accepted.seq == 7 and accepted.event == ACCEPTED_BROKEN
    assert accepted.body["broken_at"] == 3 and "altered" in accepted.body["problem"]
    assert accepted.problem(load_public_key(config.ledger.signing_key.with_suffix(".pub"))) is None
    report, problems = verify_ledger(config.ledger.path, "bank", load_public_key(
        config.ledger.signing_key.with_suffix(".pub")))
    assert (report.ok, report.seq) == (False, 3)  # an auditor still sees the damage ...
    assert problems == [problems[0]] and "recorded at entry 7" in problems[0]  # ... and the choice
    run_node(layout, entries=1)  # the recorded choice covers that damage: no flag needed again
    sql(config.ledger.path, "UPDATE entries SET rows = 9 WHERE seq = 8")
    assert "entry 8" in refusal(layout)  # but not damage after it
    sql(config.ledger.path, "UPDATE entries SET rows = 0 WHERE seq = 8")
    run_node(layout)
    sql(config.ledger.path, "UPDATE entries SET rows = 5 WHERE seq = 2")
    assert "entry 2" in refusal(layout)  # nor other damage before it


def test_accepting_a_deleted_ledger_starts_a_new_chain_that_says_so(layout):
    run_node(layout, entries=4)
    config = bank(layout)
    for leftover in config.ledger.path.parent.glob(config.ledger.path.name + "*"):
        leftover.unlink()
    run_node(layout, accept_broken_ledger=True)
    [accepted] = entries_of(config)
    assert (accepted.seq, accepted.event, accepted.body["broken_at"]) == (1, ACCEPTED_BROKEN, 1)
    assert "entry 4" in accepted.body["problem"]
    run_node(layout)  # the new chain is the node's chain from now on


# --- C. the auditor's tools -------------------------------------------------------------------

def three_ledgers(folder: Path) -> dict[str, list[LedgerEntry]]:
    """Receipts of three nodes, as a coordinator's receipts file holds them."""
    signed = {}
    for party in ("bank", "hospital", "telco"):
        generate_signing_key(folder / f"{party}-ledger.key", folder / f"{party}-ledger.pub")
        ledger = Ledger(folder / f"{party}.sqlite", party, load_signing_key(
            folder / f"{party}-ledger.key"))
        signed[party] = ledger.append(PendingEntry("job-1", "requested", "analyst"),
                                      PendingEntry("job-1", "finished", "analyst", rows=10))[-1:]
        ledger.close()
    return signed


def write_receipts(path: Path, receipts: dict[str, list[LedgerEntry]]) -> str:
    path.write_text(json.dumps({p: [e.to_json() for e in es] for p, es in receipts.items()}))
    return str(path)


def test_verify_receipt_checks_each_receipt_against_its_own_partys_key(tmp_path, capsys):
    receipts = three_ledgers(tmp_path)
    path = write_receipts(tmp_path / "job-1.json", receipts)
    assert main(["meter", "verify-receipt", path, "--public-key",
                 str(tmp_path / "bank-ledger.pub")]) == 0
    out = capsys.readouterr().out
    assert out.count(": valid") == 3 and "hospital#2" in out and "signature" not in out


def test_verify_receipt_takes_several_keys_and_says_which_receipt_it_cannot_check(
        tmp_path, capsys):
    receipts = three_ledgers(tmp_path)
    path = write_receipts(tmp_path / "job-1.json", receipts)
    elsewhere = tmp_path / "given"
    elsewhere.mkdir()
    for party in ("bank", "hospital"):
        (elsewhere / f"{party}-ledger.pub").write_bytes(
            (tmp_path / f"{party}-ledger.pub").read_bytes())
    keys = [str(elsewhere / "bank-ledger.pub"), str(elsewhere / "hospital-ledger.pub")]
    assert main(["meter", "verify-receipt", path, "--public-key", keys[0], "--public-key",
                 keys[1], "--party", "hospital"]) == 0
    assert capsys.readouterr().out.count(": valid") == 1
    (elsewhere / "hospital-ledger.pub").unlink()
    assert main(["meter", "verify-receipt", path, "--public-key", keys[0]]) == 1
    out = capsys.readouterr().out
    assert out.count(": valid") == 1
    assert "no public key for 'hospital'" in out and "no public key for 'telco'" in out
    assert "does not verify" not in out  # a missing key is not a bad signature


def test_verify_receipt_still_reports_a_really_bad_signature(tmp_path, capsys):
    receipts = three_ledgers(tmp_path)
    forged = receipts["telco"][0].to_json()
    forged["signature"] = receipts["bank"][0].signature  # bank's signature on telco's receipt
    (tmp_path / "job-1.json").write_text(json.dumps(
        {"bank": [receipts["bank"][0].to_json()], "telco": [forged]}))
    assert main(["meter", "verify-receipt", str(tmp_path / "job-1.json"), "--public-key",
                 str(tmp_path / "bank-ledger.pub")]) == 1
    out = capsys.readouterr().out
    assert "receipt bank#2 (finished, job 'job-1'): valid" in out
    assert "receipt telco#2 (job 'job-1'): its signature does not verify" in out


def test_a_single_key_with_another_name_serves_a_file_of_one_partys_receipts(tmp_path, capsys):
    receipts = three_ledgers(tmp_path)
    path = write_receipts(tmp_path / "job-1.json", {"bank": receipts["bank"]})
    (tmp_path / "given.pub").write_bytes((tmp_path / "bank-ledger.pub").read_bytes())
    assert main(["meter", "verify-receipt", path, "--public-key", str(tmp_path / "given.pub")]) == 0
    assert capsys.readouterr().out.count(": valid") == 1


def test_sequence_problems_name_gaps_repeats_and_broken_links(tmp_path):
    generate_signing_key(tmp_path / "b.key", tmp_path / "b.pub")
    ledger = Ledger(tmp_path / "b.sqlite", "bank", load_signing_key(tmp_path / "b.key"))
    run = ledger.append(*[PendingEntry(f"j{i}", "requested") for i in range(7)])
    ledger.close()
    assert sequence_problems(run, 1) == []
    assert sequence_problems(run[2:], None) == []
    assert sequence_problems(run[2:], 1) == ["entries 1 to 2 of 'bank' are missing"]
    assert sequence_problems([*run[:3], *run[4:], run[1]]) == [
        "entry 2 of 'bank' appears more than once", "entry 4 of 'bank' is missing"]
    relinked = LedgerEntry(**{**run[5].to_json(), "prev_hash": run[3].hash})
    assert sequence_problems([*run[:5], relinked, run[6]]) == [
        "entry 6 of 'bank' does not link to the entry before it (replaced or re-chained)"]


@pytest.fixture
def exported(layout, capsys) -> tuple[str, Path]:
    run_node(layout, entries=8)
    out = layout.directory / "export.json"
    assert main(["meter", "export", "--config", str(layout.party_configs["bank"]),
                 "--out", str(out)]) == 0
    capsys.readouterr()
    return str(layout.directory / "pki" / "bank-ledger.pub"), out


def verify_export(key: str, path: Path) -> int:
    return main(["meter", "verify-receipt", str(path), "--public-key", key])


def edit_export(path: Path, drop: int) -> None:
    data = json.loads(path.read_text())
    data["entries"] = [e for e in data["entries"] if e["seq"] != drop]
    path.write_text(json.dumps(data))


def test_an_intact_export_verifies(exported, capsys):
    assert verify_export(*exported) == 0
    out = capsys.readouterr().out
    assert out.count(": valid") == 8
    assert ("export of 'bank' signed by its ledger key: 8 entries of every event (entries 1 "
            "to 8), none missing; its ledger ended at entry 8 when exported") in out


@pytest.mark.parametrize("drop", [1, 5, 8])
def test_an_export_with_one_entry_deleted_is_not_all_valid(exported, capsys, drop):
    key, path = exported
    edit_export(path, drop)
    assert verify_export(key, path) == 1
    out = capsys.readouterr().out
    assert "it holds 7 entries where 'bank' exported and signed 8" in out
    assert (f"entry {drop} of 'bank' is missing" if drop < 8 else  # a cut tail shows too
            "entries 8 to 8 of 'bank' are missing (its ledger ended at entry 8") in out


@pytest.mark.parametrize("relabel", [
    {"events": ["witnessed"]},  # "only some events": a gap would be expected
    {"since": "2000-01-01T00:00:00.000000Z"},  # "from somewhere": a missing first entry hidden
    {"count": 7},
    {"head": [4, "0" * 64]},
])
def test_relabelling_an_export_header_to_hide_a_deleted_entry_is_detected(exported, capsys,
                                                                          relabel):
    key, path = exported
    edit_export(path, 5)
    data = json.loads(path.read_text())
    kept = [LedgerEntry.from_json(e) for e in data["entries"]]
    path.write_text(json.dumps({**data, **relabel, "digest": entries_digest(kept)}))
    assert verify_export(key, path) == 1
    out = capsys.readouterr().out
    assert "the export: its header is not signed by the ledger key of 'bank' (edited" in out
    assert out.count(": valid") == 7  # every entry still verifies on its own


def test_an_export_without_a_signed_header_is_read_but_never_vouched_complete(
        exported, capsys, tmp_path):
    key, path = exported
    data = json.loads(path.read_text())
    older = {"export_of": "bank", "since": None, "events": None, "entries": data["entries"]}
    for document in (older, data["entries"]):  # the two formats before headers were signed
        path.write_text(json.dumps(document))
        assert verify_export(key, path) == 1
        out = capsys.readouterr().out
        assert out.count(": valid") == 8 and "the export has no signed header" in out


def test_an_export_of_some_events_says_so_and_still_shows_a_deleted_entry(layout, capsys):
    run_node(layout, entries=3)
    out_path = layout.directory / "heads.json"
    assert main(["meter", "export", "--config", str(layout.party_configs["bank"]),
                 "--out", str(out_path), "--event", "witnessed"]) == 0
    capsys.readouterr()
    key = str(layout.directory / "pki" / "bank-ledger.pub")
    assert verify_export(key, out_path) == 0
    out = capsys.readouterr().out
    assert out.count(": valid") == 3 and "3 entries of only events witnessed" in out
    edit_export(out_path, 2)
    assert verify_export(key, out_path) == 1
    assert "it holds 2 entries where 'bank' exported and signed 3" in capsys.readouterr().out


def test_an_event_filtered_export_is_still_evidence_for_meter_verify(layout, capsys, tmp_path):
    run_node(layout, entries=2)
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    assert main(["meter", "export", "--config", str(layout.party_configs["bank"]),
                 "--out", str(evidence / "heads.json"), "--event", "witnessed"]) == 0
    assert main(["meter", "verify", "--config", str(layout.party_configs["bank"]),
                 "--receipts", str(evidence)]) == 0
    assert "consistent with every receipt" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["report", "--since", "2026-11-31"],
    ["report", "--since", "yesterday"],
    ["export", "--since", "2026-13-01", "--out", "x.json"],
    ["export", "--event", "bogus", "--out", "x.json"],
])
def test_an_impossible_filter_is_refused_not_answered_with_nothing(layout, capsys, monkeypatch,
                                                                   argv):
    run_node(layout, entries=1)
    config = str(layout.party_configs["bank"])
    monkeypatch.chdir(layout.directory)
    assert main(["meter", argv[0], "--config", config, *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("invisible: error: ")
    assert ("2026-11-31" in err or "yesterday" in err or "2026-13-01" in err
            or "'bogus'" in err)
    assert not (layout.directory / "x.json").exists()


@pytest.mark.parametrize("since", ["2026-11-30", "2026-11-30T10:00:00", "2026-11-30T10:00Z",
                                   "2026-11-30T12:00:00+02:00"])
def test_a_valid_since_is_accepted(layout, capsys, since):
    run_node(layout, entries=1)
    assert main(["meter", "report", "--config", str(layout.party_configs["bank"]),
                 "--since", since]) == 0


# --- D. the coordinator's receipts folder ---------------------------------------------------------

def signed_entries(config: PartyConfig, count: int, job_id: str | None = None,
                   ) -> list[LedgerEntry]:
    """`count` entries signed into a node's ledger with its own key from the PKI folder, of
    jobs job-0, job-1, ... or all of `job_id`."""
    ledger = Ledger(config.ledger.path, config.party_id, load_signing_key(config.ledger.signing_key))
    try:
        return ledger.append(*[PendingEntry(job_id or f"job-{i}", "finished", "analyst", rows=10)
                               for i in range(count)])
    finally:
        ledger.close()


def test_the_coordinator_keeps_only_receipts_that_parse_and_verify(layout, caplog):
    telco = load_party_config(layout.party_configs["telco"])
    ours, theirs = signed_entries(bank(layout), 2, "job-1"), signed_entries(telco, 1, "job-1")
    forged = {**ours[1].to_json(), "signature": theirs[0].signature}  # telco's signature
    sent = {"bank": [ours[0].to_json(), forged, theirs[0].to_json(), "junk", {"seq": 1},
                     {**ours[1].to_json(), "body": ["not", "a", "body"]}],
            "telco": [theirs[0].to_json()]}
    with Federation.from_config(layout.coordinator_config) as federation:
        federation._write_receipts("job-1", sent)
        kept = json.loads((federation.config.receipts_dir / "job-1.json").read_text())
    assert kept == {"bank": [ours[0].to_json()], "telco": [theirs[0].to_json()]}
    dropped = [r.getMessage() for r in caplog.records if "is not kept" in r.getMessage()]
    assert len(dropped) == 5 and all("'bank'" in line and "'job-1'" in line for line in dropped)
    assert any("signature does not verify" in line for line in dropped)
    assert any("an entry of 'telco', not of 'bank'" in line for line in dropped)
    assert not any(theirs[0].signature in line for line in dropped)


def test_without_a_nodes_key_the_coordinator_still_keeps_malformed_receipts_out(layout):
    (layout.directory / "pki" / "bank-ledger.pub").unlink()
    [ours] = signed_entries(bank(layout), 1, "job-1")
    unchecked = {**ours.to_json(), "signature": "00" * 64}  # intact hash, signature not checked
    with Federation.from_config(layout.coordinator_config) as federation:
        federation._write_receipts("job-1", {"bank": [unchecked, {"seq": 1}, []]})
        kept = json.loads((federation.config.receipts_dir / "job-1.json").read_text())
    assert kept == {"bank": [unchecked]}


def test_meter_verify_names_each_file_that_is_not_evidence_and_checks_all_the_others(
        layout, capsys):
    telco = load_party_config(layout.party_configs["telco"])
    ours, theirs = signed_entries(bank(layout), 4), signed_entries(telco, 2)
    folder = layout.directory / "coordinator-receipts"
    folder.mkdir()
    (folder / "job-1.json").write_text(json.dumps(
        {"bank": [ours[3].to_json()], "telco": [theirs[1].to_json()]}))
    junk = {"binary.json": b"\x89PNG\r\n\x1a\n\xff\xfe", "text.json": b"not json",
            "shape.json": b'{"bank": [{"seq": 1}]}',
            "types.json": json.dumps({"bank": [{**ours[0].to_json(), "body": []}]}).encode()}
    for name, content in junk.items():
        (folder / name).write_bytes(content)
    sql(bank(layout).ledger.path, "DELETE FROM entries WHERE seq = 4")  # a cut tail
    for party, contradicted in (("bank", True), ("telco", False)):
        assert main(["meter", "verify", "--config", str(layout.party_configs[party]),
                     "--receipts", str(folder)]) == 1
        captured = capsys.readouterr()
        assert captured.err == ""
        lines = captured.out.splitlines()
        for name in junk:
            [line] = [line for line in lines if name in line]
            assert "skipped" in line
        cut = "the ledger no longer contains entry 4 (receipt for job 'job-3'); it ends at entry 3"
        assert any(cut in line for line in lines) == contradicted


# --- E. rotating a ledger key ---------------------------------------------------------------------

def rotate(layout: LocalLayout, party: str = "bank") -> int:
    return main(["meter", "rotate-key", "--config", str(layout.party_configs[party])])


def keys_of(config: PartyConfig) -> tuple[Path, Path, Path]:
    """A node's private key, public key and keys history files."""
    key = config.ledger.signing_key
    return key, key.with_suffix(".pub"), key.with_suffix(".keys")


def test_a_rotated_key_is_recorded_signed_by_both_keys_and_signs_everything_after(
        layout, capsys, tmp_path):
    run_node(layout, entries=3)
    config = bank(layout)
    key_file, pub_file, history_file = keys_of(config)
    old = load_signing_key(key_file)
    old_pub = tmp_path / "bank-old.pub"  # an auditor's copy from before the rotation
    old_pub.write_bytes(pub_file.read_bytes())
    assert rotate(layout) == 0
    out = capsys.readouterr().out
    assert "rotated at entry 4" in out and str(history_file) in out
    new = load_signing_key(key_file)
    assert public_raw(new.public_key()) != public_raw(old.public_key())
    assert public_raw(load_public_key(pub_file)) == public_raw(new.public_key())
    assert not key_file.with_name(key_file.name + ".new").exists()
    rotation = entries_of(config)[-1]
    assert (rotation.seq, rotation.event) == (4, KEY_ROTATED)
    assert rotation.body == rotation_body(old.public_key(), new.public_key())
    assert rotation.problem(old.public_key()) is None  # signed by the old key ...
    assert signature_valid(new.public_key(), bytes.fromhex(rotation.key_signature),
                           bytes.fromhex(rotation.hash))  # ... and by the new one
    run_node(layout, entries=2)  # the node checks the rotated chain at start, signs with the new key
    after = entries_of(config)[4:]
    assert [e.seq for e in after] == [5, 6]
    assert all(e.problem(new.public_key()) is None and e.problem(old.public_key()) is not None
               for e in after)
    before = entries_of(config)[1]
    assert verify_receipt(before, old.public_key()) is None  # an old receipt, the old key
    receipts = tmp_path / "receipts"
    receipts.mkdir()
    (receipts / "job.json").write_text(json.dumps({"bank": [before.to_json(), after[-1].to_json()]}))
    for given in (pub_file, old_pub):  # the keys history beside the new key; the old key alone
        assert main(["meter", "verify-receipt", str(receipts / "job.json"),
                     "--public-key", str(given)]) == (0 if given == pub_file else 1)
        assert capsys.readouterr().out.count(": valid") == (2 if given == pub_file else 1)
    assert main(["meter", "verify", "--config", str(layout.party_configs["bank"]),
                 "--receipts", str(receipts)]) == 0
    assert "ledger intact: 6 entries verified" in capsys.readouterr().out
    assert main(["meter", "export", "--config", str(layout.party_configs["bank"]),
                 "--out", str(tmp_path / "export.json")]) == 0
    assert verify_export(str(pub_file), tmp_path / "export.json") == 0
    assert capsys.readouterr().out.count(": valid") == 6
    rotated = key_file.read_bytes(), pub_file.read_bytes()
    kept = init_pki(layout.directory / "pki", ["bank", "telco"], overwrite=True).kept_ledger_keys
    assert "bank" in kept and (key_file.read_bytes(), pub_file.read_bytes()) == rotated


def test_the_coordinator_checks_receipts_from_before_and_after_a_rotation(layout):
    run_node(layout, entries=2)
    assert rotate(layout) == 0
    run_node(layout, entries=1)
    config = bank(layout)
    old_receipt, new_receipt = entries_of(config)[1], entries_of(config)[-1]
    forged = {**new_receipt.to_json(), "signature": old_receipt.signature}
    with Federation.from_config(layout.coordinator_config) as federation:
        # run_node's entries are countersigned heads, recorded under job id '-'
        federation._write_receipts("-", {"bank": [old_receipt.to_json(),
                                                  new_receipt.to_json(), forged]})
        kept = json.loads((federation.config.receipts_dir / "-.json").read_text())
    assert kept == {"bank": [old_receipt.to_json(), new_receipt.to_json()]}


def test_a_retired_key_cannot_fork_the_chain_with_a_rotation_of_its_own(layout, tmp_path):
    run_node(layout, entries=1)
    key_file, pub_file, _ = keys_of(bank(layout))
    retired = load_signing_key(key_file)
    assert rotate(layout) == 0  # the genuine rotation, at entry 2
    forged = tmp_path / "forged.sqlite"  # whoever kept the retired key writes a ledger of its own
    ledger = Ledger(forged, "bank", retired)
    ledger.append(PendingEntry("job-1", "requested", "analyst"))
    ledger.rotate_key(Ed25519PrivateKey.generate())  # valid in itself: both keys sign it
    ledger.append(PendingEntry("job-2", "requested", "analyst"))
    ledger.close()
    report, _ = verify_ledger(forged, "bank", load_key_history(pub_file))  # the keys history
    assert (report.ok, report.seq) == (False, 3)
    assert "another key than the node's published keys history says" in report.problem
    report, _ = verify_ledger(forged, "bank", load_public_key(pub_file))  # the new key alone
    assert (report.ok, report.seq) == (False, 1) and "none of the keys" in report.problem


def forge_rotation(config: PartyConfig, signer: Ed25519PrivateKey, old: Ed25519PrivateKey,
                   new: Ed25519PrivateKey) -> int:
    """Append a key-rotated entry naming `old` -> `new`, but signed by `signer`."""
    ledger = Ledger(config.ledger.path, "bank", signer)
    try:
        seq, digest = ledger.head()
    finally:
        ledger.close()
    entry = LedgerEntry("bank", seq + 1, "2026-01-01T00:00:00.000000Z", "-", KEY_ROTATED, "",
                        "ledger", "", 0, rotation_body(old.public_key(), new.public_key()),
                        digest).sealed(signer).cosigned(new)
    with sqlite3.connect(config.ledger.path) as db:
        db.execute("INSERT INTO entries (seq, node, ts, job_id, event, requester, kind, dataset, "
                   "rows, body, prev_hash, hash, signature, key_signature) VALUES "
                   "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (entry.seq, entry.node, entry.ts, entry.job_id, entry.event, entry.requester,
                    entry.kind, entry.dataset, entry.rows, json.dumps(entry.body), entry.prev_hash,
                    entry.hash, entry.signature, entry.key_signature))
    db.close()
    return entry.seq


def after_old_key_signs(layout: LocalLayout, old: Ed25519PrivateKey) -> int:
    assert rotate(layout) == 0
    ledger = Ledger(bank(layout).ledger.path, "bank", old)  # the retired key, restored by hand
    try:
        return ledger.append(PendingEntry("job-x", "requested", "analyst"))[0].seq
    finally:
        ledger.close()


def new_key_signature_missing(layout: LocalLayout, old: Ed25519PrivateKey) -> int:
    assert rotate(layout) == 0
    sql(bank(layout).ledger.path, "UPDATE entries SET key_signature = '' WHERE seq = 4")
    return 4


def not_signed_by_old_key(layout: LocalLayout, old: Ed25519PrivateKey) -> int:
    config = bank(layout)
    new = Ed25519PrivateKey.generate()
    seq = forge_rotation(config, new, old, new)  # whoever holds only the new key
    key_file, pub_file, _ = keys_of(config)
    key_file.unlink()
    write_signing_key(key_file, new)
    pub_file.write_bytes(public_pem(new))
    return seq


@pytest.mark.parametrize(("forgery", "why"), [
    (after_old_key_signs, "signature does not verify with the node's public key in force since "
                          "the key rotation at entry 4"),
    (new_key_signature_missing, "lacks a valid signature by the new key"),
    (not_signed_by_old_key, "signature does not verify with the node's public key"),
])
def test_a_chain_that_changes_keys_other_than_by_a_valid_rotation_is_refused(layout, capsys, forgery,
                                                                      why):
    run_node(layout, entries=3)
    seq = forgery(layout, load_signing_key(bank(layout).ledger.signing_key))
    message = refusal(layout)  # the node at start
    assert f"entry {seq}" in message and why in message
    config = str(layout.party_configs["bank"])
    assert main(["meter", "verify", "--config", config]) == 1  # the auditor
    out = capsys.readouterr().out
    assert f"ledger broken at entry {seq}: " in out and why in out


def test_rotate_key_is_refused_while_the_node_runs_and_the_node_while_a_rotation_does(
        layout, capsys):
    config = bank(layout)
    key_file, pub_file, history_file = keys_of(config)
    before = key_file.read_bytes(), pub_file.read_bytes()
    node = PartyNode(config).start()
    try:
        assert rotate(layout) == 2
    finally:
        node.stop()
    err = capsys.readouterr().err.strip()
    assert err == (f"invisible: error: ledger {config.ledger.path} is open in a running node: "
                   "stop the node first")
    assert (key_file.read_bytes(), pub_file.read_bytes()) == before
    assert not history_file.exists() and KEY_ROTATED not in {e.event for e in entries_of(config)}
    held = lock_ledger(config.ledger.path, exclusive=True)  # as a rotation holds it
    try:
        with pytest.raises(ConfigError, match="is being changed by a key rotation"):
            PartyNode(config)
    finally:
        held.close()


def test_a_rotation_cut_short_is_finished_by_running_it_again(layout, monkeypatch, capsys):
    run_node(layout, entries=2)
    config = bank(layout)
    key_file, _, history_file = keys_of(config)
    old = key_file.read_bytes()

    def crash(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("invisible.metering.rotation.replace_file", crash)
    monkeypatch.setattr("invisible.metering.keys.replace_file", crash)
    with pytest.raises(OSError):
        rotate(layout)  # the entry is written, nothing is published
    monkeypatch.undo()
    assert key_file.read_bytes() == old and entries_of(config)[-1].event == KEY_ROTATED
    message = refusal_without_flag(layout)
    assert "handed on to another key at entry 3" in message and "rotate-key" in message
    assert rotate(layout) == 0  # finishes; no second rotation
    assert [e.event for e in entries_of(config)].count(KEY_ROTATED) == 1
    assert key_file.read_bytes() != old and history_file.exists()
    run_node(layout, entries=1)
    assert main(["meter", "verify", "--config", str(layout.party_configs["bank"])]) == 0


def test_a_rotation_stopped_before_its_entry_leaves_a_key_the_next_run_discards(layout):
    run_node(layout, entries=1)
    config = bank(layout)
    staged = config.ledger.signing_key.with_name(config.ledger.signing_key.name + ".new")
    write_signing_key(staged, Ed25519PrivateKey.generate())  # never recorded in the ledger
    assert rotate(layout) == 0
    assert not staged.exists()
    run_node(layout, entries=1)
    assert [e.event for e in entries_of(config)][-2:] == [KEY_ROTATED, "witnessed"]


def edited_body(rotation: dict, new: Ed25519PrivateKey) -> dict:
    impostor = Ed25519PrivateKey.generate().public_key()  # "that was our key"
    return {**rotation, "body": {**rotation["body"], "old_key": public_raw(impostor).hex()}}


def signed_by_the_new_key_alone(rotation: dict, new: Ed25519PrivateKey) -> dict:
    return LedgerEntry.from_json(rotation).sealed(new).cosigned(new).to_json()


@pytest.mark.parametrize(("edit", "why"), [
    (edited_body, "entry 2 is not an intact key rotation of 'bank'"),
    (signed_by_the_new_key_alone, "does not hand the key on: entry 2: its key rotation is not "
                                  "signed by the old key"),
])
def test_an_edited_keys_history_is_refused_naming_the_file(layout, edit, why):
    run_node(layout, entries=1)
    assert rotate(layout) == 0
    key_file, pub_file, history_file = keys_of(bank(layout))
    data = json.loads(history_file.read_text())
    data["rotations"][0] = edit(data["rotations"][0], load_signing_key(key_file))
    history_file.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"{history_file.name}:? {why}"):
        load_key_history(pub_file)
    assert f"{history_file.name}" in refusal_without_flag(layout)  # nor does the node start


def test_an_export_is_never_signed_over_a_damaged_chain(layout, capsys):
    """On an earlier main, `meter export --event` signed a header that vouched for an export
    of a ledger whose entry had been deleted straight from its SQLite file."""
    run_node(layout, entries=4)
    config = bank(layout)
    sql(config.ledger.path, "DELETE FROM entries WHERE seq = 2")
    out_path = layout.directory / "export.json"
    assert main(["meter", "export", "--config", str(layout.party_configs["bank"]),
                 "--out", str(out_path), "--event", "witnessed"]) != 0
    assert ("is broken at entry 2: entry 2 is missing (the sequence jumps to 3); an export is "
            "signed only over a chain the node can vouch for") in capsys.readouterr().err
    assert not out_path.exists()


def test_a_coordinator_started_before_a_rotation_keeps_the_receipts_signed_after_it(layout):
    """On an earlier main, the coordinator read the ledger keys once: after a node rotated its
    key, every receipt it signed was dropped, and a node could hand back an old genuine entry
    of another job in place of this job's."""
    run_node(layout, entries=1)
    with Federation.from_config(layout.coordinator_config) as federation:
        assert rotate(layout) == 0  # while the coordinator runs with the old key loaded
        [after] = signed_entries(bank(layout), 1, "job-9")
        [other_job] = signed_entries(bank(layout), 1, "job-8")
        federation._write_receipts("job-9", {"bank": [after.to_json(), other_job.to_json()]})
        folder = federation.config.receipts_dir
        kept = json.loads((folder / "job-9.json").read_text())
        [rejected] = json.loads((folder / "rejected" / "job-9.bank.rejected").read_text())
    assert kept == {"bank": [after.to_json()]}
    assert rejected["receipt"] == other_job.to_json()
    assert rejected["why"] == "it is an entry of job 'job-8', not of this job"
    assert not list(folder.rglob("*.rejected.json"))  # never read as evidence by meter verify
