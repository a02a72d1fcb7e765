"""A peer's chain heads are countersigned only when a shared job entitles it, never backwards.

On an earlier main, 300 forged `!head` notices from one peer wrote 300 signed,
fsynced ledger entries in 0.8 s, and a sequence number of 1,000,000,299 was
accepted.
"""

from __future__ import annotations

import time

import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.errors import ProtocolError
from invisible.node.witness import MAX_SAVED_ANNOUNCEMENTS, HeadWitness, encode_head


class Recorder:
    def __init__(self) -> None:
        self.heads: list[dict] = []
        self.store = self

    def witnessed_heads(self):
        return {}

    def witness_heads(self, heads):
        self.heads.append(heads)


def test_a_head_needs_a_shared_job_and_never_goes_back():
    meter = Recorder()
    witness = HeadWitness(meter)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="no job prepared here entitles it"):
        witness.record("bank", encode_head(1_000_000_299, "a" * 64))
    witness.expect(["bank", "telco"])
    witness.expect(["bank"])
    witness.record("bank", encode_head(10, "a" * 64))
    with pytest.raises(ProtocolError, match="goes back on one it announced before"):
        witness.record("bank", encode_head(9, "b" * 64))  # spent the second allowance
    witness.expect(["bank"])
    with pytest.raises(ProtocolError, match="goes back"):
        witness.record("bank", encode_head(10, "c" * 64))  # same number, another hash
    witness.expect(["bank", "bank"])
    witness.record("bank", encode_head(10, "a" * 64))  # the same head: not written again
    witness.record("bank", encode_head(12, "d" * 64))
    assert meter.heads == [{"bank": (10, "a" * 64)}, {"bank": (12, "d" * 64)}]


def test_allowances_do_not_pile_up():
    meter = Recorder()
    witness = HeadWitness(meter)  # type: ignore[arg-type]
    for _ in range(100):
        witness.expect(["bank"])
    for seq in range(1, MAX_SAVED_ANNOUNCEMENTS + 1):
        witness.record("bank", encode_head(seq, "a" * 64))
    with pytest.raises(ProtocolError, match="entitles"):
        witness.record("bank", encode_head(99, "a" * 64))


def test_forged_heads_from_a_peer_write_no_entries(tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b", "c"])
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.connectivity()  # a job shared by all: each may announce once
        ledger = nodes.nodes["a"].ledger

        def heads_of_b() -> int:
            return sum(1 for e in ledger.entries() if e.event == "witnessed"
                       and "b" in e.body["heads"])

        b_to_a = nodes.nodes["b"].clients["a"]
        refused = 0
        for seq in range(300):
            try:
                b_to_a.deliver("meter-heads", "!head", encode_head(10**9 + seq, "f" * 64))
            except ProtocolError:
                refused += 1
        time.sleep(0.3)  # b's honest announcement, if still under way
        assert heads_of_b() <= 1 and refused >= 299  # at most the one the shared job allows


def test_what_a_node_witnessed_holds_across_its_restart(tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b"])
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.connectivity()
        deadline = time.monotonic() + 5
        while "b" not in nodes.nodes["a"].ledger.witnessed_heads() and time.monotonic() < deadline:
            time.sleep(0.05)
        seq, _ = nodes.nodes["a"].ledger.witnessed_heads()["b"]
    with InProcessNodes(layout) as nodes:
        witness = nodes.nodes["a"].witness
        witness.expect(["b"])
        with pytest.raises(ProtocolError, match="goes back on one it announced before"):
            witness.record("b", encode_head(seq - 1, "e" * 64))
