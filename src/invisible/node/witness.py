"""Countersigned chain heads: each node's peers keep a signed copy of its latest head.

After every finished joint job a node announces its chain head (sequence
number and hash) to the job's peers, who record it in a signed `witnessed`
entry of their own ledgers. A head commits to every entry before it through
the hash chain, so a node that later cuts off its tail, or re-signs its
chain whole, contradicts what its peers hold (`invisible meter verify
--receipts`).

Announcements travel one way, as a message on the reserved step ``!head``
of the peer exchange (the sender is the verified certificate). They leave a
short moment after the job, off the path of its result, and announcements
due to the same peer coalesce into one: the latest head covers the earlier.

A node countersigns a peer's head only if (:class:`HeadWitness`):

- a job it prepared with that peer entitles the peer to one announcement
  (so a peer cannot make it write entries at will: at most one per job the
  two share, and a few saved up; other announcements are compared with what
  was witnessed, and not written);
- the head does not go back on what it witnessed from that peer before: a
  lower sequence number, or the same number with another hash, is refused
  and logged as a contradiction, and from then on the node runs no job with
  that peer; the same head again is not written twice. Nodes announce their
  head when they start, so a node restarted on a cut or rewritten chain is
  caught at once.

A contradicted peer is trusted again only when it **proves** that its chain
extends the head witnessed here: a later head alone proves nothing (a
chain cut and grown again reaches any sequence number). The witness asks
for the proof (a ``!prove`` notice naming the witnessed sequence number),
and the peer announces its head with its entries from that number on
(at most :data:`MAX_PROOF_ENTRIES`); the witness recomputes each entry's
hash and the links, from the witnessed hash to the announced head. It asks
only after an announcement without proof, so a bad proof is not asked for
again. This catches a lost, restored or cut ledger; a node that kept the
entries it cut can still prove, and only the requesters' receipts catch
that (see :func:`invisible.metering.verify.verify_against_receipts`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise

from invisible.errors import ConfigError, InvisibleError, PolicyError, ProtocolError
from invisible.metering.entries import LedgerEntry
from invisible.metering.meter import Meter
from invisible.net.client import NodeClient
from invisible.node.allowance import Allowance

log = logging.getLogger(__name__)
#: The events with which a node records that a peer's chain went back on a head it
#: countersigned, and that the peer proved its chain extends that head again.
CONTRADICTED, PROVED = "peer-contradicted", "peer-proved"
HEAD_STEP = "!head"
PROVE_STEP = "!prove"
HEAD_JOB = "meter-heads"
#: The longest chain segment a node sends to prove that its chain extends a witnessed head.
MAX_PROOF_ENTRIES = 1000
#: A witness asks a peer for a proof, and a node sends a peer a proof, at most this often.
PROOF_INTERVAL_S = 10.0
COALESCE_S = 0.02
_HASH = re.compile(r"^[0-9a-f]{64}$")


def encode_head(seq: int, digest: str, proof: Sequence[LedgerEntry] = ()) -> bytes:
    """A head notice; `proof`: the chain's entries from a witnessed head up to this one."""
    head: dict[str, object] = {"seq": seq, "hash": digest}
    if proof:
        head["proof"] = [entry.to_json() for entry in proof]
    return json.dumps(head).encode()


def decode_head(sender: str, payload: bytes) -> tuple[int, str, list[LedgerEntry]]:
    try:
        head = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"party '{sender}' sent a malformed chain head") from None
    if not (isinstance(head, dict) and isinstance(head.get("seq"), int) and head["seq"] > 0
            and isinstance(head.get("hash"), str) and _HASH.match(head["hash"])
            and isinstance(head.get("proof", []), list)
            and len(head.get("proof", [])) <= MAX_PROOF_ENTRIES):
        raise ProtocolError(f"party '{sender}' sent a malformed chain head")
    try:
        proof = [LedgerEntry.from_json(item) for item in head.get("proof", [])]
    except ConfigError:
        raise ProtocolError(f"party '{sender}' sent a malformed chain proof") from None
    return head["seq"], head["hash"], proof


def encode_prove(seq: int) -> bytes:
    return json.dumps({"from": seq}).encode()


def decode_prove(sender: str, payload: bytes) -> int:
    try:
        asked = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        asked = None
    if not (isinstance(asked, dict) and isinstance(asked.get("from"), int) and asked["from"] > 0):
        raise ProtocolError(f"party '{sender}' sent a malformed request for a chain proof")
    return int(asked["from"])


def proves_extension(sender: str, proof: Sequence[LedgerEntry], witnessed: tuple[int, str],
                     head: tuple[int, str]) -> bool:
    """Whether `proof` is `sender`'s chain from the witnessed head to the announced one:
    consecutive entries, each hashing to its hash, each linked to the one before."""
    if not proof or (proof[0].seq, proof[0].hash) != witnessed \
            or (proof[-1].seq, proof[-1].hash) != head:
        return False
    for before, entry in pairwise(proof):
        if entry.seq != before.seq + 1 or entry.prev_hash != before.hash:
            return False
    return all(e.node == sender and e.compute_hash() == e.hash for e in proof)


class HeadAnnouncer:
    """Sends this node's chain head to peers after jobs, coalesced, from one thread."""

    def __init__(self, head: Callable[[], tuple[int, str]],
                 clients: Mapping[str, NodeClient], timeout_s: float,
                 entries_from: Callable[[int], list[LedgerEntry]] = lambda seq: []) -> None:
        self._head = head
        self._clients = clients
        self._timeout_s = timeout_s
        #: This node's chain from a sequence number on (for a proof).
        self._entries_from = entries_from
        self._due: set[str] = set()
        #: Peers that asked for a proof, and from which of this node's heads.
        self._proofs: dict[str, int] = {}
        #: One proof per peer per PROOF_INTERVAL_S at most.
        self._proofs_allowed = Allowance(1, 1 / PROOF_INTERVAL_S)
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="head-announcer", daemon=True)
        self._thread.start()

    def announce(self, peers: Sequence[str]) -> None:
        with self._wake:
            self._due.update(peers)
            self._wake.notify()

    def prove(self, peer: str, from_seq: int) -> bool:
        """Announce to `peer` with the proof that the chain extends head `from_seq`; False
        if a proof went to it less than PROOF_INTERVAL_S ago (asking is free, proving is not:
        up to MAX_PROOF_ENTRIES entries)."""
        if not self._proofs_allowed.take(peer):
            return False
        with self._wake:
            self._proofs[peer] = from_seq
            self._due.add(peer)
            self._wake.notify()
        return True

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=self._timeout_s + 1)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._due and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
            time.sleep(COALESCE_S)  # let the job's result leave first; gather more peers
            with self._wake:
                if self._stopped:
                    return
                peers, self._due = sorted(self._due), set()
                proofs, self._proofs = self._proofs, {}
            seq, digest = self._head()
            if seq <= 0:
                continue
            for peer in peers:
                proof = [e for e in self._entries_from(proofs[peer]) if e.seq <= seq] \
                    if peer in proofs else []
                try:
                    # A stopping node gives up at once instead of retrying to the deadline,
                    # so that stop() returns before the node closes its clients.
                    self._clients[peer].deliver(
                        HEAD_JOB, HEAD_STEP, encode_head(seq, digest, proof),
                        timeout_s=self._timeout_s,
                        interrupted=lambda: "the node stopping" if self._stopped else None)
                except InvisibleError as exc:
                    log.warning("chain head not announced to '%s': %s", peer, exc)


#: How many announcements a peer may have saved up from jobs shared with this node.
MAX_SAVED_ANNOUNCEMENTS = 8


class HeadWitness:
    """Which peer heads this node countersigns (see the module docstring)."""

    def __init__(self, meter: Meter,
                 ask_proof: Callable[[str, int], None] = lambda peer, seq: None) -> None:
        self._meter = meter
        #: Asks a contradicted peer to prove that its chain extends the head witnessed here.
        self._ask_proof = ask_proof
        #: A peer is asked once per PROOF_INTERVAL_S at most.
        self._asks_allowed = Allowance(1, 1 / PROOF_INTERVAL_S)
        self._allowed: dict[str, int] = {}
        #: What this node countersigned before, from its own ledger: it survives restarts.
        self._witnessed: dict[str, tuple[int, str]] = meter.store.witnessed_heads()
        #: Peers whose announced head went back on one countersigned here (-> that head),
        #: from this node's own ledger: a restart does not clear them.
        self._contradicted: dict[str, int] = meter.store.contradicted_peers()
        self._lock = threading.Lock()

    def check_peers(self, peers: Sequence[str]) -> None:
        """Refuse a job with a peer whose chain went back on a head countersigned here."""
        with self._lock:
            bad = {p: self._contradicted[p] for p in peers if p in self._contradicted}
        for peer, seq in bad.items():
            raise PolicyError(f"party '{peer}' announced a chain head that goes back on head "
                              f"{seq} countersigned here (a cut or rewritten ledger); this node "
                              "runs no job with it until its chain extends that head again")

    def expect(self, peers: Sequence[str]) -> None:
        """A job with `peers` was prepared here: each may announce its head once more."""
        with self._lock:
            for peer in peers:
                self._allowed[peer] = min(self._allowed.get(peer, 0) + 1,
                                          MAX_SAVED_ANNOUNCEMENTS)

    def record(self, sender: str, payload: bytes) -> None:
        """Countersign a peer's announced head in this node's ledger, or refuse it.

        A head that goes back on one countersigned here is noted whether or not the
        peer was entitled to announce: this node then runs no job with it until it
        proves that its chain extends that head again.
        """
        seq, digest, proof = decode_head(sender, payload)
        with self._lock:
            before = self._witnessed.get(sender)
            if before is not None and (seq < before[0] or (seq == before[0]
                                                           and digest != before[1])):
                if sender not in self._contradicted:  # recorded once: it survives a restart
                    self._meter.note_peer(CONTRADICTED, sender, witnessed=list(before),
                                          announced=[seq, digest])
                self._contradicted[sender] = before[0]
                log.warning("party '%s' announced head %d, which goes back on head %d "
                            "countersigned here; jobs with it are refused", sender, seq,
                            before[0])
                raise ProtocolError(f"party '{sender}' announced a chain head that goes back "
                                    "on one it announced before; refused")
            if sender in self._contradicted:
                assert before is not None
                if not proves_extension(sender, proof, before, (seq, digest)):
                    self._refuse_unproven(sender, before[0], asked=bool(proof))
                self._meter.note_peer(PROVED, sender, witnessed=list(before),
                                      head=[seq, digest])
                del self._contradicted[sender]  # it proved its chain extends the head again
                log.info("party '%s' proved that its chain extends head %d again", sender,
                         before[0])
            if self._allowed.get(sender, 0) <= 0:
                return  # compared, not countersigned: no job prepared here entitles it
            self._allowed[sender] -= 1
            if before == (seq, digest):
                return  # nothing new to countersign
            self._witnessed[sender] = (seq, digest)
        self._meter.witness_heads({sender: (seq, digest)})

    def _refuse_unproven(self, sender: str, witnessed: int, asked: bool) -> None:
        """A contradicted peer's head without a valid proof: ask for one (after a head
        announced without one, never after a bad proof, at most once per PROOF_INTERVAL_S),
        and refuse it."""
        if not asked and self._asks_allowed.take(sender):
            self._ask_proof(sender, witnessed)
        raise ProtocolError(f"party '{sender}' must prove that its chain extends head "
                            f"{witnessed} countersigned here" + (
                                ": the proof it sent does not" if asked else ""))
