"""A peer's chain heads are countersigned only when a shared job entitles it, never backwards.

On an earlier main, 300 forged `!head` notices from one peer wrote 300 signed,
fsynced ledger entries in 0.8 s, and a sequence number of 1,000,000,299 was
accepted.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.errors import PolicyError, ProtocolError
from invisible.metering.entries import GENESIS_HASH, LedgerEntry
from invisible.node.witness import (
    MAX_SAVED_ANNOUNCEMENTS,
    HeadAnnouncer,
    HeadWitness,
    encode_head,
    encode_prove,
)


def wait_for(condition, seconds: float = 5.0) -> None:
    """Wait until `condition()` holds (announcements travel in the background), or time out."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


class Recorder:
    def __init__(self) -> None:
        self.heads: list[dict] = []
        self.notes: list[tuple[str, str]] = []
        self.store = self

    def witnessed_heads(self):
        return {}

    def contradicted_peers(self):
        return {}

    def witness_heads(self, heads):
        self.heads.append(heads)

    def note_peer(self, event, peer, **body):
        self.notes.append((event, peer))


def test_a_head_needs_a_shared_job_and_never_goes_back():
    meter = Recorder()
    witness = HeadWitness(meter)  # type: ignore[arg-type]
    witness.record("bank", encode_head(1_000_000_299, "a" * 64))  # compared, not written
    assert meter.heads == []
    witness = HeadWitness(meter)  # type: ignore[arg-type]
    honest = chain("bank", 12)
    witness.expect(["bank", "telco"])
    witness.expect(["bank"])
    witness.record("bank", encode_head(10, honest[9].hash))
    with pytest.raises(ProtocolError, match="goes back on one it announced before"):
        witness.record("bank", encode_head(9, "b" * 64))  # spent the second allowance
    witness.expect(["bank"])
    with pytest.raises(ProtocolError, match="goes back"):
        witness.record("bank", encode_head(10, "c" * 64))  # same number, another hash
    witness.expect(["bank", "bank"])
    # the same head again, with the witnessed entry as proof: trusted, not written again
    witness.record("bank", encode_head(10, honest[9].hash, honest[9:10]))
    witness.record("bank", encode_head(12, honest[11].hash))
    assert meter.heads == [{"bank": (10, honest[9].hash)}, {"bank": (12, honest[11].hash)}]


def test_allowances_do_not_pile_up():
    meter = Recorder()
    witness = HeadWitness(meter)  # type: ignore[arg-type]
    for _ in range(100):
        witness.expect(["bank"])
    for seq in range(1, MAX_SAVED_ANNOUNCEMENTS + 1):
        witness.record("bank", encode_head(seq, "a" * 64))
    witness.record("bank", encode_head(99, "a" * 64))
    assert len(meter.heads) == MAX_SAVED_ANNOUNCEMENTS  # the 9th was not written


def test_forged_heads_from_a_peer_write_no_entries(tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b", "c"])
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.connectivity()  # a job shared by all: each may announce once
        ledger = nodes.nodes["a"].ledger

        def heads_of_b() -> int:
            return sum(1 for e in ledger.entries() if e.event == "witnessed"
                       and "b" in e.body["heads"])

        b_to_a = nodes.nodes["b"].clients["a"]
        for seq in range(300):
            try:
                b_to_a.deliver("meter-heads", "!head", encode_head(10**9 + seq, "f" * 64))
            except ProtocolError as refused:
                # When a forged head came before b's honest one, a countersigned it (the
                # shared job allows one) and now asks b to prove its chain extends it: an
                # answer to the forger, never another entry. Seen once under load.
                assert "must prove that its chain extends head" in str(refused)
        time.sleep(0.3)  # b's honest announcement, if still under way
        assert heads_of_b() <= 1  # at most the one the shared job allows


def test_what_a_node_witnessed_holds_across_its_restart(tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b"])
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.connectivity()
        wait_for(lambda: "b" in nodes.nodes["a"].ledger.witnessed_heads())
        seq, _ = nodes.nodes["a"].ledger.witnessed_heads()["b"]
    with InProcessNodes(layout) as nodes:
        witness = nodes.nodes["a"].witness
        witness.expect(["b"])
        with pytest.raises(ProtocolError, match="goes back on one it announced before"):
            witness.record("b", encode_head(seq - 1, "e" * 64))


def test_a_node_restarted_on_a_cut_chain_is_refused_by_its_peers(tmp_path):
    from invisible.errors import PolicyError

    layout = write_local_federation(tmp_path, ["a", "b"])
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        for _ in range(3):
            fed.connectivity()
        wait_for(lambda: nodes.nodes["b"].ledger.witnessed_heads().get("a", (0, ""))[0] >= 3)
    # a's operator loses the ledger and starts anew (the node would refuse without the flag)
    ledger = nodes.nodes["a"].config.ledger.path
    for leftover in ledger.parent.glob(ledger.name + "*"):
        leftover.unlink()
    from invisible.node.config import load_party_config
    from invisible.node.node import PartyNode

    nodes = InProcessNodes(layout, {  # a restarted with the flag, b as it was
        "a": PartyNode(load_party_config(layout.party_configs["a"]), accept_broken_ledger=True),
        "b": PartyNode(load_party_config(layout.party_configs["b"]))})
    with nodes, Federation.from_config(layout.coordinator_config) as fed:
        # a announces its new, shorter head when it starts
        wait_for(lambda: "a" in nodes.nodes["b"].witness._contradicted, 10)
        with pytest.raises(PolicyError, match="party 'b' refused .*party 'a' announced a chain "
                                              "head that goes back on head"):
            fed.connectivity()


def chain(node: str, length: int, salt: str = "") -> list[LedgerEntry]:
    """A hash chain of `length` entries of `node` (unsigned: the witness checks links)."""
    entries, prev = [], GENESIS_HASH
    for seq in range(1, length + 1):
        entry = LedgerEntry(node, seq, "2026-11-30T00:00:00Z", f"j{seq}{salt}", "finished", "",
                            "", "", 0, {}, prev)
        entry = replace(entry, hash=entry.compute_hash())
        entries.append(entry)
        prev = entry.hash
    return entries


def test_a_contradicted_peer_is_trusted_again_only_with_a_proof_that_its_chain_extends():
    """On an earlier main, any later head cleared the refusal: a chain cut and grown again
    past the witnessed number was trusted at once."""
    asked: list[tuple[str, int]] = []
    witness = HeadWitness(Recorder(), lambda peer, seq: asked.append((peer, seq)))  # type: ignore[arg-type]
    honest, regrown = chain("bank", 9), chain("bank", 9, salt="-again")
    witness.expect(["bank"] * 8)
    witness.record("bank", encode_head(5, honest[4].hash))
    with pytest.raises(ProtocolError, match="goes back"):
        witness.record("bank", encode_head(3, regrown[2].hash))  # cut back to 3
    with pytest.raises(ProtocolError, match="must prove that its chain extends head 5"):
        witness.record("bank", encode_head(9, regrown[8].hash))  # grown again past 5
    assert asked == [("bank", 5)]
    with pytest.raises(ProtocolError, match="the proof it sent does not"):
        witness.record("bank", encode_head(9, regrown[8].hash, regrown[4:]))
    tampered = [*honest[4:6], replace(honest[6], body={"rows": 1}), *honest[7:]]
    with pytest.raises(ProtocolError, match="the proof it sent does not"):
        witness.record("bank", encode_head(9, honest[8].hash, tampered))
    skipping = [*honest[4:6], *honest[7:]]
    with pytest.raises(ProtocolError, match="the proof it sent does not"):
        witness.record("bank", encode_head(9, honest[8].hash, skipping))
    assert asked == [("bank", 5)]  # a bad proof is not asked for again
    with pytest.raises(PolicyError, match="party 'bank' announced a chain head that goes back"):
        witness.check_peers(["bank"])
    witness.record("bank", encode_head(9, honest[8].hash, honest[4:]))  # the chain from 5 to 9
    witness.check_peers(["bank"])  # trusted again
    # both turns are in the witness's own ledger, once each
    assert witness._meter.notes == [("peer-contradicted", "bank"), ("peer-proved", "bank")]


def test_a_node_on_a_cut_chain_stays_refused_after_its_chain_grows_past_the_witnessed_head(
        tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b"])
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.connectivity()
        wait_for(lambda: "a" in nodes.nodes["b"].ledger.witnessed_heads())
        witnessed, _ = nodes.nodes["b"].ledger.witnessed_heads()["a"]
    ledger = nodes.nodes["a"].config.ledger.path
    for leftover in ledger.parent.glob(ledger.name + "*"):
        leftover.unlink()
    from invisible.node.config import load_party_config
    from invisible.node.node import PartyNode

    nodes = InProcessNodes(layout, {
        "a": PartyNode(load_party_config(layout.party_configs["a"]), accept_broken_ledger=True),
        "b": PartyNode(load_party_config(layout.party_configs["b"]))})
    with nodes, Federation.from_config(layout.coordinator_config) as fed:
        a, b = nodes.nodes["a"], nodes.nodes["b"]
        wait_for(lambda: "a" in b.witness._contradicted, 10)  # a's head announced at start
        while a.ledger.head()[0] <= witnessed + 2:  # refused jobs still grow a's chain
            with pytest.raises(PolicyError):
                fed.connectivity()
        a._announce_head(["b"])  # a head past the witnessed one, but not extending it
        time.sleep(1.0)
        assert "a" in b.witness._contradicted
        with pytest.raises(PolicyError, match="party 'a' announced a chain head that goes back"):
            fed.connectivity()
        with pytest.raises(ProtocolError, match="no proof from head 1000000 can be given"):
            a._prove("b", encode_prove(10**6))  # beyond its head: nothing is sent
    # b restarts: what it recorded of a's chain holds (it forgot it on an earlier main)
    nodes = InProcessNodes(layout, {name: PartyNode(load_party_config(layout.party_configs[name]))
                                    for name in ("a", "b")})
    with nodes, Federation.from_config(layout.coordinator_config) as fed:
        assert nodes.nodes["b"].witness._contradicted == {"a": witnessed}
        nodes.nodes["a"]._announce_head(["b"])
        time.sleep(1.0)
        with pytest.raises(PolicyError, match="party 'a' announced a chain head that goes back"):
            fed.connectivity()


def test_a_flood_of_unproven_heads_asks_for_a_proof_once_and_proofs_are_sent_once():
    """On an earlier main, each of 400 proof-less heads from a contradicted peer queued a
    request on the node's job send pool: jobs with other peers stalled for minutes."""
    asked: list[tuple[str, int]] = []
    witness = HeadWitness(Recorder(), lambda peer, seq: asked.append((peer, seq)))  # type: ignore[arg-type]
    honest = chain("bank", 9)
    witness.expect(["bank"])
    witness.record("bank", encode_head(5, honest[4].hash))
    with pytest.raises(ProtocolError, match="goes back"):
        witness.record("bank", encode_head(3, "b" * 64))
    for _ in range(400):
        with pytest.raises(ProtocolError, match="must prove"):
            witness.record("bank", encode_head(9, "c" * 64))
    assert asked == [("bank", 5)]  # once per PROOF_INTERVAL_S
    sent: list[tuple[str, int]] = []

    class Peer:
        def __init__(self, name: str) -> None:
            self.name = name

        def deliver(self, job_id, step, payload, **options):
            sent.append((self.name, len(json.loads(payload).get("proof", []))))

    clients = {name: Peer(name) for name in ("telco", "hospital")}
    announcer = HeadAnnouncer(lambda: (9, honest[8].hash), clients, 1.0,  # type: ignore[arg-type]
                              lambda seq: honest[seq - 1:])
    try:
        assert announcer.prove("telco", 5)
        assert not announcer.prove("telco", 5)  # asking is free, proving is not
        assert announcer.prove("hospital", 5)  # each peer has its own allowance
        wait_for(lambda: len(sent) == 2)
    finally:
        announcer.stop()
    assert sorted(sent) == [("hospital", 5), ("telco", 5)]  # entries 5 to 9, once each
