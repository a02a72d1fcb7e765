"""Checking a ledger: its chain on its own, a receipt, and the chain against receipts.

- :func:`verify_chain` walks the entries in order and names the first one
  that was altered (hash or signature), removed (a gap in the sequence) or
  reordered or replaced (its previous-hash link does not match).
- :func:`verify_receipt` checks one receipt (a signed entry) against the
  node's public key; :func:`sequence_problems` finds entries missing from,
  or replaced in, what should be an unbroken run (an export).
- :func:`verify_against_receipts` finds what a node signing its own chain
  could still hide — a cut-off tail, or a chain re-signed whole — using
  receipts that requesters hold and chain heads that peers countersigned
  (`witnessed` entries in the peers' ledgers).

Signatures are checked in parallel worker processes for long ledgers
(Ed25519 verification is the cost: about 90 µs an entry here).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from invisible.metering.entries import GENESIS_HASH, LedgerEntry, canonical_json
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


#: One ledger row as stored: node, seq, ts, job_id, event, requester, kind, dataset, rows,
#: body (canonical JSON text), prev_hash, hash, signature.
Row = tuple[str, int, str, str, str, str, str, str, int, str, str, str, str]
_FIELDS = ("node", "seq", "ts", "job_id", "event", "requester", "kind", "dataset", "rows")


def entry_row(entry: LedgerEntry) -> Row:
    return (entry.node, entry.seq, entry.ts, entry.job_id, entry.event, entry.requester,
            entry.kind, entry.dataset, entry.rows, canonical_json(entry.body).decode(),
            entry.prev_hash, entry.hash, entry.signature)


def _row_problems(public: bytes, rows: list[Row]) -> list[tuple[int, str]]:
    """Each row's own checks (hash, signature); run in worker processes for long ledgers."""
    key = public_key_from_raw(public)
    problems = []
    for row in rows:
        fields = dict(zip(_FIELDS, row[:9], strict=True))
        fields["body"] = json.loads(row[9])
        fields["prev_hash"] = row[10]
        digest = hashlib.sha256(canonical_json(fields)).hexdigest()
        if digest != row[11]:
            problems.append((row[1], "its content does not match its hash (altered)"))
            continue
        try:
            signature = bytes.fromhex(row[12])
        except ValueError:
            signature = b""
        if not signature_valid(key, signature, bytes.fromhex(digest)):
            problems.append((row[1], "its signature does not verify with the node's public key"))
    return problems


def _own_problems(key: Ed25519PublicKey, rows: list[Row]) -> list[tuple[int, str]]:
    if len(rows) < _PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return _row_problems(public_raw(key), rows)
    batches = [rows[i:i + _BATCH] for i in range(0, len(rows), _BATCH)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = pool.map(_row_problems, [public_raw(key)] * len(batches), batches)
        return sorted(problem for found in results for problem in found)


def verify_rows(rows: Iterable[Row], key: Ed25519PublicKey,
                start: tuple[int, str] = (1, GENESIS_HASH)) -> VerifyReport:
    """Links (sequence, previous hash) here; each row's hash and signature in parallel.

    `start` is the sequence number and previous hash the first row must have:
    the genesis for a whole chain, or a row's own for a chain checked from there.
    """
    expected_seq, prev_hash = start
    checked: list[Row] = []
    link_problem: tuple[int, str] | None = None
    count = 0
    for row in rows:
        count += 1
        seq = row[1]
        if seq != expected_seq:
            link_problem = (expected_seq, f"entry {expected_seq} is missing (the sequence jumps "
                            f"to {seq})" if seq > expected_seq else
                            "the sequence goes backwards (reordered)")
            break
        checked.append(row)
        if row[10] != prev_hash:
            link_problem = (seq, "it does not link to the entry before it (reordered, replaced "
                            "or re-chained)")
            break
        expected_seq, prev_hash = seq + 1, row[11]
    problems = _own_problems(key, checked)
    if link_problem is not None:
        problems.append(link_problem)
    if not problems:
        return VerifyReport(True, count)
    seq, problem = min(problems, key=lambda p: (p[0], "link" in p[1]))
    return VerifyReport(False, count, problem, seq)


def verify_chain(entries: Iterable[LedgerEntry], key: Ed25519PublicKey) -> VerifyReport:
    return verify_rows((entry_row(e) for e in entries), key)


def sequence_problems(entries: Iterable[LedgerEntry], first_seq: int | None = None) -> list[str]:
    """Gaps, repeats and broken links in what should be one unbroken run of each node's entries.

    `first_seq` is where every run must start (1 for a whole ledger), or None
    if it may start anywhere. A run cut short at its end shows only against a
    head the node signed later (:func:`verify_against_receipts`).
    """
    runs: dict[str, list[LedgerEntry]] = {}
    for entry in entries:
        runs.setdefault(entry.node, []).append(entry)
    problems = []
    for node, run in runs.items():
        run.sort(key=lambda e: e.seq)
        expected = run[0].seq if first_seq is None else first_seq
        previous = GENESIS_HASH if expected == 1 else None
        for entry in run:
            if entry.seq < expected:
                problems.append(f"entry {entry.seq} of '{node}' appears more than once")
                continue
            if entry.seq > expected:
                problems.append(
                    f"entry {expected} of '{node}' is missing" if entry.seq == expected + 1 else
                    f"entries {expected} to {entry.seq - 1} of '{node}' are missing")
            elif previous is not None and entry.prev_hash != previous:
                problems.append(f"entry {entry.seq} of '{node}' does not link to the entry "
                                "before it (replaced or re-chained)")
            expected, previous = entry.seq + 1, entry.hash
    return problems


def verify_receipt(receipt: LedgerEntry, key: Ed25519PublicKey) -> str | None:
    """None if the receipt is intact and signed by the key's node; else why not."""
    return receipt.problem(key)


def verify_against_receipts(node: str, hashes: Mapping[int, str],
                            evidence: Iterable[LedgerEntry]) -> list[str]:
    """What the node's ledger no longer contains or contradicts, among receipts and witnesses.

    `hashes` maps the ledger's sequence numbers to entry hashes. `evidence`
    holds receipts (entries signed by `node`) and `witnessed` entries of its
    peers, which record `node`'s chain head as they saw it. Each should
    already have been checked with its signer's key.
    """
    last = max(hashes, default=0)
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
            if seq > last or seq not in hashes:
                problems.append(f"the ledger no longer contains entry {seq} ({what}); "
                                f"it ends at entry {last}")
            elif hashes[seq] != digest:
                problems.append(f"entry {seq} contradicts the {what}")
    return problems
