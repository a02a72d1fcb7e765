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

Each entry is checked with the key in force at it: a node that rotated its
key (:mod:`invisible.metering.rotation`) checks its chain against its
published keys history (``<id>-ledger.keys``, or its key alone without one),
and refuses to start unless the key it loads is the one its chain says is in
force. While its ledger is open a node holds ``<ledger>.lock`` shared; a key
rotation holds it alone, so the two never run at once.

The marker guards against accidents and against anyone who lacks the ledger
key; whoever holds the key can rewrite the marker too. Against that the
evidence lies outside the node: the requesters' receipts and the heads its
peers countersigned (:func:`invisible.metering.verify.verify_against_receipts`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from invisible.errors import ConfigError
from invisible.metering.entries import PendingEntry, canonical_json
from invisible.metering.files import replace_file
from invisible.metering.keys import KeyHistory, history_path, read_key_history
from invisible.metering.ledger import Ledger
from invisible.metering.signing import load_signing_key, public_raw, signature_valid
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


#: How late a job's end may be marked (the marks of a burst of jobs coalesce into one).
MARK_DELAY_S = 0.2


def marker_path(signing_key: Path) -> Path:
    return signing_key.with_suffix(".head")


class HeadMarker:
    """The latest head a ledger key is known to have signed, kept in a small signed file.

    Writing it costs about 0.4-0.5 ms of one thread on ext4 (signing 30 µs,
    creating the scratch file about 0.2 ms, syncing its content about
    0.15 ms), and 1-1.5 ms of CPU per node when jobs end back to back (the
    journal's share): written after every job end, on the job's path, it
    made a small secure sum about 10% slower. So job ends are marked
    :meth:`soon`: at most :data:`MARK_DELAY_S` later, coalesced, from a
    short-lived timer thread; the first entry and the ledger's close are
    marked at once. A crash loses at most the last :data:`MARK_DELAY_S` of
    marks. The content is synced (fdatasync) before it replaces the old, so
    a crash never leaves a torn marker (which would refuse the next start);
    the folder is not: a rename lost in a crash leaves the previous marker,
    still genuine, only lagging, which weakens the next check and never
    fails it.
    """

    def __init__(self, path: Path, node_id: str, key: Ed25519PrivateKey) -> None:
        self.path = path
        self.node_id = node_id
        self._key = key
        self._lock = threading.Lock()
        self._written = 0
        #: The latest head to mark soon, and the timer that will (None: none due).
        self._due: tuple[int, str] | None = None
        self._timer: threading.Timer | None = None

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
            try:
                replace_file(self.path, json.dumps(data).encode())
            except OSError as exc:
                log.warning("head marker %s not written (%s)", self.path, exc.strerror)
                return
            self._written = seq

    def soon(self, seq: int, digest: str) -> None:
        """Mark this head within MARK_DELAY_S, with any later one that comes meanwhile."""
        with self._lock:
            if seq <= self._written or (self._due is not None and seq <= self._due[0]):
                return
            self._due = (seq, digest)
            if self._timer is None:
                self._timer = threading.Timer(MARK_DELAY_S, self._mark_due)
                self._timer.daemon = True
                self._timer.start()

    def _mark_due(self) -> None:
        with self._lock:
            due, self._due, self._timer = self._due, None, None
        if due is not None:
            self.record(*due)

    def recorded(self, keys: Iterable[Ed25519PublicKey] = ()) -> tuple[int, str] | None:
        """The head recorded (None if there is no marker); ConfigError if it is not genuine:
        signed by this node's key, or by another of the chain's `keys` (a rotation may end
        before the marker is signed again; a retired key could only make it lag, as
        deleting it could)."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            seq, digest = int(data["seq"]), str(data["hash"])
            signature, message = bytes.fromhex(data["signature"]), self._message(seq, digest)
            genuine = data["node"] == self.node_id and any(
                signature_valid(key, signature, message)
                for key in (self._key.public_key(), *keys))
        except (OSError, ValueError, KeyError, TypeError):
            genuine = False
        if not genuine:
            raise ConfigError(f"its head marker {self.path} is not signed by this node's ledger "
                              "key (edited or replaced)")
        return seq, digest

    def damage(self, rows: list[Row], keys: Iterable[Ed25519PublicKey] = ()) -> Damage | None:
        """Whether the chain still reaches the recorded head."""
        try:
            recorded = self.recorded(keys)
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


def _damage(rows: list[Row], path: Path, signing_key: Path, key: Ed25519PrivateKey,
            marker: HeadMarker) -> tuple[Damage | None, KeyHistory]:
    """The chain's first damage (its own, or not reaching the head marker), and its keys."""
    damage, chain = chain_damage(rows, published_keys(path, signing_key, key))
    return damage or marker.damage(rows, [chain.key_at(seq) for seq, _ in chain.segments]), chain


def ledger_damage(path: Path, node_id: str, signing_key: Path) -> Damage | None:
    """The check a node makes at start, read-only (what `meter export` signs must pass it)."""
    key = load_signing_key(signing_key)
    ledger = Ledger(path, node_id, None)
    try:
        rows = ledger.raw_rows()
    finally:
        ledger.close()
    return _damage(rows, path, signing_key, key, HeadMarker(marker_path(signing_key), node_id,
                                                              key))[0]


def chain_damage(rows: list[Row], keys: KeyHistory) -> tuple[Damage | None, KeyHistory]:
    """The first damage not covered by an operator's recorded acceptance, or None; and the
    keys that signed the chain."""
    report = verify_rows(rows, keys)
    chain = report.keys or keys
    while not report.ok:
        accepted = next((index for index, row in enumerate(rows)
                         if row[1] > (report.seq or 0) and row[4] == ACCEPTED_BROKEN
                         and json.loads(row[9]).get("broken_at") == report.seq), None)
        if accepted is None:
            return Damage(report.seq, report.problem), chain
        rows = rows[accepted:]  # the acceptance covers what lies before it; check what follows
        report = verify_rows(rows, chain, start=(rows[0][1], rows[0][10]))
    return None, chain


def published_keys(ledger: Path, signing_key: Path, key: Ed25519PrivateKey) -> KeyHistory:
    """The keys a node checks its own chain against: its keys history beside its signing
    key (``<id>-ledger.keys``, written when it first rotated), or else its key alone."""
    path = history_path(signing_key)
    if not path.exists():
        return KeyHistory.single(key.public_key())
    try:
        return read_key_history(path)
    except ConfigError as exc:
        raise ConfigError(f"ledger {ledger} cannot be checked: {exc}") from None


def lock_ledger(path: Path, exclusive: bool) -> IO[bytes]:
    """Hold ``<ledger>.lock``: shared while a node has the ledger open, alone while its key
    is rotated; ConfigError at once (no waiting) if the other holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.with_name(path.name + ".lock").open("ab")
    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"ledger {path} is open in a running node: stop the node first" if exclusive else
            f"ledger {path} is being changed by a key rotation: start the node when it has "
            "ended") from None
    return handle


def open_node_ledger(path: Path, node_id: str, signing_key: Path, *,
                     accept_broken: bool = False, exclusive: bool = False,
                     key: Ed25519PrivateKey | None = None) -> Ledger:
    """Open a node's ledger for writing after checking it (module docstring); ConfigError if
    it is damaged and `accept_broken` is False, or if the key is not the one in force.

    `exclusive`: hold the ledger's lock alone (a key rotation). `key`: sign with this key
    instead of the one in `signing_key` (a rotation finishing with its new key); the head
    marker and the keys history are still those beside `signing_key`.
    """
    key = key or load_signing_key(signing_key)
    marker = HeadMarker(marker_path(signing_key), node_id, key)
    lock = lock_ledger(path, exclusive)
    try:
        ledger = Ledger(path, node_id, key)
    except BaseException:
        lock.close()
        raise
    ledger.hold(lock)
    try:
        damage, chain = _damage(ledger.raw_rows(), path, signing_key, key, marker)
        if damage is None:
            _check_key_in_force(path, signing_key, key, chain)
        elif not accept_broken:
            raise ConfigError(f"ledger {path} {damage}; a node does not append to a chain it "
                              f"cannot vouch for: restore the ledger, or start with {ACCEPT_FLAG} "
                              "to accept it (that choice is signed into the ledger)")
        else:
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
    ledger.record_heads(marker.record, marker.soon)
    return ledger


def _check_key_in_force(path: Path, signing_key: Path, key: Ed25519PrivateKey,
                        chain: KeyHistory) -> None:
    """A node signs only with the key its chain says is in force (never a retired one)."""
    if chain.current != public_raw(key.public_key()):
        rotated = chain.segments[-1][0] - 1
        raise ConfigError(f"ledger {path} was handed on to another key at entry {rotated} "
                          f"(a key rotation); {signing_key} is not that key: restore the key "
                          "in force, or run `invisible meter rotate-key` again to finish a "
                          "rotation that was cut short")
