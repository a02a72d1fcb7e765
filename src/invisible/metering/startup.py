"""A node opening its own ledger: it never appends to a chain it cannot vouch for.

When a node opens its ledger at start it

1. walks the whole chain — every entry's hash and signature, the sequence
   and the links (:func:`invisible.metering.verify.verify_rows`, in worker
   processes for long ledgers);
2. compares the chain with its **head marker**, ``<id>-ledger.head`` beside
   the ledger signing key: the latest head (sequence number and hash) the
   key is known to have signed, itself signed with that key, and rewritten
   when the ledger gets its first entry, after each job's terminal entry
   (finished, failed, cancelled, refused, interrupted) and when the ledger
   closes, so after a crash it lags by at most the entries of jobs still
   open. A ledger file deleted, swapped for another, or cut back while the
   node was stopped no longer reaches that head;
3. refuses to start on any damage, with one line naming the ledger and the
   first bad entry — unless the operator accepts it. Then the node appends a
   signed ``ledger-accepted-broken`` entry saying what was wrong, and that
   entry covers exactly that damage from then on: the chain after it must
   verify, and other damage before it is refused again.

The marker guards against accidents and against anyone who lacks the ledger
key; whoever holds the key can rewrite the marker too. Against that the
evidence lies outside the node: the requesters' receipts and the heads its
peers countersigned (:func:`invisible.metering.verify.verify_against_receipts`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from invisible.errors import ConfigError
from invisible.metering.entries import PendingEntry, canonical_json
from invisible.metering.ledger import Ledger
from invisible.metering.signing import load_signing_key, signature_valid
from invisible.metering.verify import Row, verify_rows

log = logging.getLogger(__name__)

#: The event of the entry that records an operator's choice to start on a broken chain.
ACCEPTED_BROKEN = "ledger-accepted-broken"
ACCEPT_FLAG = "--accept-broken-ledger"


@dataclass(frozen=True)
class Damage:
    """What is wrong with a ledger: the first bad entry (None: not one entry), and why."""

    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"is broken at entry {self.seq}" if self.seq is not None else "is not trusted"
        return f"{where}: {self.problem}"


def marker_path(signing_key: Path) -> Path:
    return signing_key.with_suffix(".head")


class HeadMarker:
    """The latest head a ledger key is known to have signed, kept in a small signed file.

    Writing it costs about 0.5 ms (signing 30 µs; the rest is the file, half of
    it one fsync). The new content is fsynced before it replaces the old, so a
    crash never leaves a torn marker (which would refuse the next start); the
    folder is not fsynced: a rename lost in a crash leaves the previous marker,
    still genuine, only lagging, which weakens the next check and never fails it.
    """

    def __init__(self, path: Path, node_id: str, key: Ed25519PrivateKey) -> None:
        self.path = path
        self.node_id = node_id
        self._key = key
        self._lock = threading.Lock()
        self._written = 0

    def _message(self, seq: int, digest: str) -> bytes:
        return canonical_json({"node": self.node_id, "seq": seq, "hash": digest})

    def record(self, seq: int, digest: str) -> None:
        """Write atomically, unless a later head was written already (calls may come out of
        order); a marker that cannot be written only weakens the next check."""
        with self._lock:
            if 0 < seq <= self._written:
                return
            data = {"node": self.node_id, "seq": seq, "hash": digest,
                    "signature": self._key.sign(self._message(seq, digest)).hex()}
            scratch = self.path.with_name(self.path.name + ".tmp")
            try:
                with scratch.open("w") as handle:
                    handle.write(json.dumps(data))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(scratch, self.path)
            except OSError as exc:
                log.warning("head marker %s not written (%s)", self.path, exc.strerror)
                return
            self._written = seq

    def recorded(self) -> tuple[int, str] | None:
        """The head recorded (None if there is no marker); ConfigError if it is not genuine."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            seq, digest = int(data["seq"]), str(data["hash"])
            genuine = data["node"] == self.node_id and signature_valid(
                self._key.public_key(), bytes.fromhex(data["signature"]),
                self._message(seq, digest))
        except (OSError, ValueError, KeyError, TypeError):
            genuine = False
        if not genuine:
            raise ConfigError(f"its head marker {self.path} is not signed by this node's ledger "
                              "key (edited or replaced)")
        return seq, digest

    def damage(self, rows: list[Row]) -> Damage | None:
        """Whether the chain still reaches the recorded head."""
        try:
            recorded = self.recorded()
        except ConfigError as exc:
            return Damage(None, str(exc))
        if recorded is None or recorded[0] == 0:
            return None
        seq, digest = recorded
        name = self.path.name
        if not rows:
            return Damage(1, f"it holds no entries, but this node's key signed its chain up to "
                             f"entry {seq} (head marker {name}): the ledger file was deleted "
                             "or replaced")
        last = rows[-1][1]
        if last < seq:
            return Damage(last + 1, f"it ends at entry {last}, but this node signed up to entry "
                                    f"{seq} before (head marker {name}): its tail was cut off")
        if not any(row[1] == seq and row[11] == digest for row in rows):
            return Damage(seq, f"entry {seq} is not the one this node signed (head marker "
                               f"{name}): the chain was replaced or re-signed")
        return None


def chain_damage(rows: list[Row], key: Ed25519PrivateKey) -> Damage | None:
    """The first damage not covered by an operator's recorded acceptance, or None."""
    public = key.public_key()
    report = verify_rows(rows, public)
    while not report.ok:
        accepted = next((index for index, row in enumerate(rows)
                         if row[1] > (report.seq or 0) and row[4] == ACCEPTED_BROKEN
                         and json.loads(row[9]).get("broken_at") == report.seq), None)
        if accepted is None:
            return Damage(report.seq, report.problem)
        rows = rows[accepted:]  # the acceptance covers what lies before it; check what follows
        report = verify_rows(rows, public, start=(rows[0][1], rows[0][10]))
    return None


def open_node_ledger(path: Path, node_id: str, signing_key: Path, *,
                     accept_broken: bool = False) -> Ledger:
    """Open a node's ledger for writing after checking it (module docstring); ConfigError if
    it is damaged and `accept_broken` is False."""
    key = load_signing_key(signing_key)
    marker = HeadMarker(marker_path(signing_key), node_id, key)
    ledger = Ledger(path, node_id, key)
    try:
        rows = ledger.raw_rows()
        damage = chain_damage(rows, key) or marker.damage(rows)
        if damage is not None and not accept_broken:
            raise ConfigError(f"ledger {path} {damage}; a node does not append to a chain it "
                              f"cannot vouch for: restore the ledger, or start with {ACCEPT_FLAG} "
                              "to accept it (that choice is signed into the ledger)")
        if damage is not None:
            seq, digest = ledger.head()
            [entry] = ledger.append(PendingEntry(
                "-", ACCEPTED_BROKEN, kind="ledger",
                body={"broken_at": damage.seq, "problem": damage.problem, "head": [seq, digest]}))
            log.warning("ledger %s %s; started anyway as the operator chose, recorded as entry %d",
                        path, damage, entry.seq)
    except BaseException:
        ledger.close()
        raise
    seq, digest = ledger.head()
    if seq:
        marker.record(seq, digest)
    ledger.record_heads(marker.record)
    return ledger
