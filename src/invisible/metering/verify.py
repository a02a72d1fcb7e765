"""Checking a ledger: its chain on its own, a receipt, and the chain against receipts.

- :func:`verify_chain` walks the entries in order and names the first one
  that was altered (hash or signature), removed (a gap in the sequence) or
  reordered or replaced (its previous-hash link does not match).
- :func:`verify_receipt` checks one receipt (a signed entry) against the
  node's public key.
- :func:`verify_against_receipts` finds what a node signing its own chain
  could still hide — a cut-off tail, or a chain re-signed whole — using
  receipts that requesters hold and chain heads that peers countersigned
  (`witnessed` entries in the peers' ledgers).

Signatures are checked in parallel worker processes for long ledgers
(Ed25519 verification is the cost: about 90 µs an entry here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from invisible.metering.entries import GENESIS_HASH, LedgerEntry
from invisible.metering.signing import public_key_from_raw, public_raw, signature_valid

_PARALLEL_FROM = 20_000
_BATCH = 5_000


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    problem: str = ""
    seq: int | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"ledger intact: {self.entries} entries verified"
        return f"ledger broken at entry {self.seq}: {self.problem}"


def _bad_signatures(public: bytes, items: list[tuple[int, str, str]]) -> list[int]:
    key = public_key_from_raw(public)
    return [seq for seq, digest, signature in items
            if not signature_valid(key, bytes.fromhex(signature), bytes.fromhex(digest))]


def _signature_failures(key: Ed25519PublicKey, items: list[tuple[int, str, str]]) -> list[int]:
    if len(items) < _PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return _bad_signatures(public_raw(key), items)
    batches = [items[i:i + _BATCH] for i in range(0, len(items), _BATCH)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = pool.map(_bad_signatures, [public_raw(key)] * len(batches), batches)
        return sorted(seq for bad in results for seq in bad)


def verify_chain(entries: Iterable[LedgerEntry], key: Ed25519PublicKey) -> VerifyReport:
    expected_seq, prev_hash = 1, GENESIS_HASH
    to_sign: list[tuple[int, str, str]] = []
    count = 0
    first_problem: VerifyReport | None = None
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            problem = (f"entry {expected_seq} is missing (the sequence jumps to {entry.seq})"
                       if entry.seq > expected_seq else "the sequence goes backwards (reordered)")
            first_problem = VerifyReport(False, count, problem, expected_seq)
            break
        if entry.compute_hash() != entry.hash:
            first_problem = VerifyReport(False, count, "its content does not match its hash "
                                         "(altered)", entry.seq)
            break
        if entry.prev_hash != prev_hash:
            first_problem = VerifyReport(False, count, "it does not link to the entry before it "
                                         "(reordered, replaced or re-chained)", entry.seq)
            break
        to_sign.append((entry.seq, entry.hash, entry.signature))
        expected_seq, prev_hash = entry.seq + 1, entry.hash
    bad = _signature_failures(key, to_sign)
    if bad and (first_problem is None or bad[0] < (first_problem.seq or 0)):
        return VerifyReport(False, count, "its signature does not verify with the node's "
                            "public key", bad[0])
    return first_problem or VerifyReport(True, count)


def verify_receipt(receipt: LedgerEntry, key: Ed25519PublicKey) -> str | None:
    """None if the receipt is intact and signed by the key's node; else why not."""
    return receipt.problem(key)


def verify_against_receipts(node: str, entries: Sequence[LedgerEntry],
                            evidence: Iterable[LedgerEntry]) -> list[str]:
    """What the node's ledger no longer contains or contradicts, among receipts and witnesses.

    `evidence` holds receipts (entries signed by `node`) and `witnessed`
    entries of its peers, which record `node`'s chain head as they saw it.
    Each such entry should already have been checked with its signer's key.
    """
    by_seq = {e.seq: e for e in entries}
    last = max(by_seq, default=0)
    problems = []
    for item in evidence:
        if item.node == node and item.event != "witnessed":
            claims = [(item.seq, item.hash, f"receipt for job '{item.job_id}'")]
        elif item.event == "witnessed" and node in item.body.get("heads", {}):
            seq, digest = item.body["heads"][node]
            claims = [(int(seq), str(digest), f"head countersigned by '{item.node}'")]
        else:
            continue
        for seq, digest, what in claims:
            if seq > last or seq not in by_seq:
                problems.append(f"the ledger no longer contains entry {seq} ({what}); "
                                f"it ends at entry {last}")
            elif by_seq[seq].hash != digest:
                problems.append(f"entry {seq} contradicts the {what}")
    return problems
