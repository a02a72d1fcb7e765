"""Checking a ledger: its chain on its own, a receipt, and the chain against receipts.

- :func:`verify_chain` walks the entries in order and names the first one
  that was altered (hash or signature), removed (a gap in the sequence) or
  reordered or replaced (its previous-hash link does not match). Each entry
  is checked with the key in force at it: the chain changes keys only at a
  valid key-rotated entry (:mod:`invisible.metering.keys`), and only to keys
  that agree with what the verifier trusts.
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

from invisible.metering.entries import GENESIS_HASH, LedgerEntry, canonical_json
from invisible.metering.keys import (
    KEY_ROTATED,
    KeyHistory,
    Keys,
    as_history,
    follow_rotations,
    rotation_problem,
)
from invisible.metering.signing import public_key_from_raw, signature_valid

_PARALLEL_FROM = 20_000
_BATCH = 5_000


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    problem: str = ""
    seq: int | None = None
    #: The keys that signed the chain, as its key-rotated entries say (no entries: those given).
    keys: KeyHistory | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"ledger intact: {self.entries} entries verified"
        return f"ledger broken at entry {self.seq}: {self.problem}"


#: One ledger row as stored: node, seq, ts, job_id, event, requester, kind, dataset, rows,
#: body (canonical JSON text), prev_hash, hash, signature, key_signature.
Row = tuple[str, int, str, str, str, str, str, str, int, str, str, str, str, str]
_FIELDS = ("node", "seq", "ts", "job_id", "event", "requester", "kind", "dataset", "rows")


def entry_row(entry: LedgerEntry) -> Row:
    return (entry.node, entry.seq, entry.ts, entry.job_id, entry.event, entry.requester,
            entry.kind, entry.dataset, entry.rows, canonical_json(entry.body).decode(),
            entry.prev_hash, entry.hash, entry.signature, entry.key_signature)


def row_entry(row: Row) -> LedgerEntry:
    node, seq, ts, job_id, event, requester, kind, dataset, rows, body, *sealed = row
    prev_hash, digest, signature, key_signature = sealed
    return LedgerEntry(node, seq, ts, job_id, event, requester, kind, dataset, rows,
                       json.loads(body), prev_hash, digest, signature, key_signature)


def _row_problems(segments: tuple[tuple[int, bytes], ...], rows: list[Row],
                  ) -> list[tuple[int, str]]:
    """Each row's own checks (hash, signature with the key in force at it); run in worker
    processes for long ledgers."""
    history = KeyHistory(segments)
    keys = {raw: public_key_from_raw(raw) for _, raw in segments}
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
        if not signature_valid(keys[history.raw_at(row[1])], signature, bytes.fromhex(digest)):
            since = history.since(row[1])
            problems.append((row[1], "its signature does not verify with the node's public key"
                             + (f" in force since the key rotation at entry {since - 1}"
                                if since > segments[0][0] else "")))
    return problems


def _own_problems(keys: KeyHistory, rows: list[Row]) -> list[tuple[int, str]]:
    if len(rows) < _PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return _row_problems(keys.segments, rows)
    batches = [rows[i:i + _BATCH] for i in range(0, len(rows), _BATCH)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        results = pool.map(_row_problems, [keys.segments] * len(batches), batches)
        return sorted(problem for found in results for problem in found)


def chain_keys(rows: list[Row], trusted: KeyHistory) -> tuple[KeyHistory, list[tuple[int, str]]]:
    """The keys that signed `rows`, as their key-rotated entries say, and what is wrong with
    them: a rotation that does not hand the key on; no key among those `trusted` (so
    nothing vouches for the chain); or, where `trusted` is a history of rotations, up to
    its last one, another key in force than it says."""
    if not rows:
        return trusted, []
    first, last = rows[0][1], rows[-1][1]
    rotations = [row_entry(row) for row in rows if row[4] == KEY_ROTATED]
    keys, broken = follow_rotations(rotations, first, trusted.raw_at(first))
    problems = [broken] if broken else []
    if not broken and not keys.raw_keys() & trusted.raw_keys():  # a broken rotation says why
        problems.append((first, "none of the keys its key-rotated entries name is a key the "
                                "node published"))
    known = min(last, trusted.last_rotation() + 1) if trusted.last_rotation() else 0
    for seq in sorted({first} | {start for start, _ in keys.segments + trusted.segments}):
        if first <= seq <= known and keys.raw_at(seq) != trusted.raw_at(seq):
            problems.append((seq, "it is signed by another key than the node's published keys "
                                  "history says was in force"))
            break
    return keys, problems


def verify_rows(rows: Iterable[Row], keys: Keys,
                start: tuple[int, str] = (1, GENESIS_HASH)) -> VerifyReport:
    """Links (sequence, previous hash) here; each row's hash and signature in parallel.

    `keys` are the node's keys the verifier trusts (see :func:`chain_keys`). `start`
    is the sequence number and previous hash the first row must have: the genesis for
    a whole chain, or a row's own for a chain checked from there.
    """
    rows = list(rows)
    chain, key_problems = chain_keys(rows, as_history(keys))
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
    problems = _own_problems(chain, checked) + key_problems
    if link_problem is not None:
        problems.append(link_problem)
    if not problems:
        return VerifyReport(True, count, keys=chain)
    seq, problem = min(problems, key=lambda p: (p[0], "link" in p[1]))
    return VerifyReport(False, count, problem, seq, chain)


def verify_chain(entries: Iterable[LedgerEntry], keys: Keys) -> VerifyReport:
    return verify_rows((entry_row(e) for e in entries), keys)


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


def verify_receipt(receipt: LedgerEntry, keys: Keys) -> str | None:
    """None if the receipt is intact and signed by its node's key in force at it; else why
    not (a key rotation must also carry the new key's signature)."""
    history = as_history(keys)
    problem = receipt.problem(history.key_at(receipt.seq))
    if problem is None and receipt.event == KEY_ROTATED:
        problem = rotation_problem(receipt, history.raw_at(receipt.seq))
    return problem


def verify_against_receipts(node: str, hashes: Mapping[int, str],
                            evidence: Iterable[LedgerEntry]) -> list[str]:
    """What the node's ledger no longer contains or contradicts, among receipts and witnesses.

    `hashes` maps the ledger's sequence numbers to entry hashes. `evidence`
    holds receipts (entries signed by `node`: any of its entries, its own
    `witnessed` ones included) and `witnessed` entries of its peers, which
    record `node`'s chain head as they saw it. Each should already have been
    checked with its signer's key.
    """
    last = max(hashes, default=0)
    problems = []
    for item in evidence:
        if item.node == node:
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
