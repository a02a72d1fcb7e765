"""The append-only, hash-chained, signed ledger of one node (SQLite, WAL, synchronous=FULL).

Every state change of every job that touched (or asked to touch) the node's
data is one entry. Appends happen in `BEGIN IMMEDIATE` transactions, so a
quota check and the reservation it allows are one atomic step, across
threads and processes. Quotas are computed from the ledger itself, so they
survive restarts; a job that was running when the node stopped is marked
`interrupted` at the next start and still counts. A node opens its own
ledger through :func:`invisible.metering.startup.open_node_ledger`, which
checks the chain before anything is appended to it. :meth:`Ledger.rotate_key`
hands the ledger on to a new signing key (:mod:`invisible.metering.keys`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from invisible.errors import ConfigError
from invisible.metering.entries import (
    GENESIS_HASH,
    TERMINAL_EVENTS,
    LedgerEntry,
    PendingEntry,
    canonical_json,
)
from invisible.metering.keys import KEY_ROTATED, rotation_body

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    ts TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    requester TEXT NOT NULL,
    kind TEXT NOT NULL,
    dataset TEXT NOT NULL,
    rows INTEGER NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_signature TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS entries_usage ON entries (dataset, event, ts);
CREATE INDEX IF NOT EXISTS entries_job ON entries (job_id);
"""

_OPEN_JOBS = (  # placeholders only; the events are passed as parameters
    "SELECT * FROM entries WHERE event = 'accepted' AND job_id NOT IN "  # noqa: S608
    "(SELECT job_id FROM entries WHERE event IN (" + ",".join("?" * len(TERMINAL_EVENTS)) + "))"
    " ORDER BY seq"
)


@dataclass(frozen=True)
class Usage:
    jobs: int
    rows: int


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row_to_entry(row: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        node=row["node"], seq=row["seq"], ts=row["ts"], job_id=row["job_id"], event=row["event"],
        requester=row["requester"], kind=row["kind"], dataset=row["dataset"], rows=row["rows"],
        body=json.loads(row["body"]), prev_hash=row["prev_hash"], hash=row["hash"],
        signature=row["signature"], key_signature=row["key_signature"],
    )


def _add_key_signatures(db: sqlite3.Connection) -> None:
    """A ledger written before keys could rotate gets the column for a new key's signature."""
    columns = {row["name"] for row in db.execute("PRAGMA table_info(entries)")}
    if "key_signature" not in columns:
        db.execute("ALTER TABLE entries ADD COLUMN key_signature TEXT NOT NULL DEFAULT ''")


class Ledger:
    """One node's ledger; thread-safe (one connection, one lock), process-safe (SQLite locks)."""

    def __init__(self, path: Path, node_id: str, signing_key: Ed25519PrivateKey | None,
                 clock: Callable[[], str] = utc_now) -> None:
        """Open (creating if needed) a ledger; with no signing key it can only be read."""
        self.path = path
        self.node_id = node_id
        self._key = signing_key
        self._clock = clock
        self._lock = threading.Lock()
        self._record_head: Callable[[int, str], None] | None = None
        self._record_soon: Callable[[int, str], None] | None = None
        self._held: list[IO[bytes]] = []
        if signing_key is None and not path.exists():
            raise ConfigError(f"no ledger at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=30.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            _add_key_signatures(self._db)
            owners = self._db.execute("SELECT DISTINCT node FROM entries LIMIT 2").fetchall()
        except sqlite3.Error as exc:
            raise ConfigError(f"ledger {path} cannot be opened: {exc}") from None
        if signing_key is not None and any(row["node"] != node_id for row in owners):
            self._db.close()
            raise ConfigError(f"ledger {path} holds another node's entries; each node needs "
                              "its own ledger file")

    def close(self) -> None:
        with self._lock:
            record, self._record_head = self._record_head, None  # once, even if closed twice
            self._record_soon = None
            try:
                if record is not None and self._key is not None:
                    seq, digest = self._head()
                    if seq:
                        record(seq, digest)
            finally:
                self._db.close()
                for handle in self._held:
                    handle.close()
                self._held.clear()

    def hold(self, handle: IO[bytes]) -> None:
        """Keep `handle` (a lock) open until the ledger closes."""
        self._held.append(handle)

    def record_heads(self, record: Callable[[int, str], None],
                     soon: Callable[[int, str], None] | None = None) -> None:
        """Call `record(seq, hash)` with the head when the first entry is written and at
        close, and `soon(seq, hash)` (by default `record`) after each job's terminal entry
        (how a node keeps its head marker: :mod:`invisible.metering.startup`). They are
        called outside the write lock, so they may come late or out of order; the recorder
        keeps the latest."""
        self._record_head = record
        self._record_soon = soon or record

    def _head(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH) if row is None else (row["seq"], row["hash"])

    def head(self) -> tuple[int, str]:
        with self._lock:
            return self._head()

    def _insert(self, pending: Sequence[PendingEntry], new_key: Ed25519PrivateKey | None = None,
                ) -> list[LedgerEntry]:
        if self._key is None:
            raise ConfigError(f"ledger {self.path} was opened for reading only")
        seq, prev_hash = self._head()
        written = []
        for item in pending:
            seq += 1
            entry = LedgerEntry(
                node=self.node_id, seq=seq, ts=self._clock(), job_id=item.job_id,
                event=item.event, requester=item.requester, kind=item.kind,
                dataset=item.dataset, rows=item.rows, body=item.body, prev_hash=prev_hash,
            ).sealed(self._key)
            if new_key is not None:
                entry = entry.cosigned(new_key)
            self._db.execute(
                "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (entry.seq, entry.node, entry.ts, entry.job_id, entry.event, entry.requester,
                 entry.kind, entry.dataset, entry.rows, canonical_json(entry.body).decode(),
                 entry.prev_hash, entry.hash, entry.signature, entry.key_signature),
            )
            prev_hash = entry.hash
            written.append(entry)
        return written

    def append(self, *pending: PendingEntry) -> list[LedgerEntry]:
        """Append entries in one durable transaction."""
        return self.transaction(lambda _: list(pending))

    def transaction(self, decide: Callable[[Ledger], Sequence[PendingEntry]]) -> list[LedgerEntry]:
        """Under the write lock, let `decide` read usage and choose what to append; atomic."""
        return self._commit(decide)

    def rotate_key(self, new_key: Ed25519PrivateKey) -> LedgerEntry:
        """Append a `key-rotated` entry naming the current and the new public key, signed by
        the current key and, over the same hash, by `new_key`; sign every later entry with
        `new_key`. Files (the key, its public half, the keys history) are the caller's:
        :mod:`invisible.metering.rotation`."""
        if self._key is None:
            raise ConfigError(f"ledger {self.path} was opened for reading only")
        body = rotation_body(self._key.public_key(), new_key.public_key())
        [entry] = self._commit(lambda _: [PendingEntry("-", KEY_ROTATED, kind="ledger",
                                                       body=body)], new_key)
        return entry

    def _commit(self, decide: Callable[[Ledger], Sequence[PendingEntry]],
                new_key: Ed25519PrivateKey | None = None) -> list[LedgerEntry]:
        """One durable transaction; with `new_key`, its entries are cosigned by that key,
        which signs everything after them."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                written = self._insert(decide(self), new_key)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if new_key is not None:
                self._key = new_key
        self._mark_head(written)
        return written

    def _mark_head(self, written: Sequence[LedgerEntry]) -> None:
        """After a first entry or a job's end, tell the recorder the head (once durable)."""
        record, soon = self._record_head, self._record_soon
        if record is None or soon is None or not written:
            return
        if written[0].seq == 1:
            record(written[-1].seq, written[-1].hash)
        elif any(e.event in TERMINAL_EVENTS for e in written):
            soon(written[-1].seq, written[-1].hash)

    def usage(self, dataset: str, day: str, requester: str | None = None,
              kinds: frozenset[str] | None = None) -> Usage:
        """Jobs and rows reserved on `dataset` during the UTC day `day` (YYYY-MM-DD).

        Accepted jobs count; a job cancelled before it ran gives its reservation back.
        `kinds`: only jobs of these kinds (the kinds of an allow rule with its own limits).
        Call inside :meth:`transaction` for a consistent read.
        """
        query = ("SELECT event, COUNT(*) AS jobs, COALESCE(SUM(rows), 0) AS rows FROM entries "
                 "WHERE dataset = ? AND ts >= ? AND ts < ? AND (event = 'accepted' OR "
                 "(event = 'cancelled' AND body LIKE '%\"released\":true%'))")
        params: list[object] = [dataset, day, day + "~"]
        if requester is not None:
            query += " AND requester = ?"
            params.append(requester)
        if kinds is not None:  # placeholders only; the kinds are parameters
            query += " AND kind IN (" + ",".join("?" * len(kinds)) + ")"
            params.extend(sorted(kinds))
        jobs = rows = 0
        for row in self._db.execute(query + " GROUP BY event", params):
            sign = 1 if row["event"] == "accepted" else -1
            jobs += sign * row["jobs"]
            rows += sign * row["rows"]
        return Usage(jobs, rows)

    def privacy_spent(self, dataset: str, requester: str | None = None,
                      day: str | None = None) -> int:
        """The privacy cost (nano-rho) reserved on `dataset`, by `requester` if given, during
        the UTC day `day` if given, else in all: the `rho` of accepted jobs, as :meth:`usage`
        counts them (a job cancelled before it ran gives its cost back; an interrupted or
        refused one keeps it). Call inside :meth:`transaction` for a consistent read."""
        query = ("SELECT COALESCE(SUM(json_extract(body, '$.rho')), 0) FROM entries "
                 "WHERE dataset = ? AND event = 'accepted' AND body LIKE '%\"rho\":%' "
                 "AND job_id NOT IN (SELECT job_id FROM entries WHERE dataset = ? AND "
                 "event = 'cancelled' AND body LIKE '%\"released\":true%')")
        params: list[object] = [dataset, dataset]
        if requester is not None:
            query += " AND requester = ?"
            params.append(requester)
        if day is not None:
            query += " AND ts >= ? AND ts < ?"
            params.extend([day, day + "~"])
        return int(self._db.execute(query, params).fetchone()[0])

    def groups(self, dataset: str, kind: str) -> list[tuple[str, ...]]:
        """The groups of parties of the accepted jobs of `kind` on `dataset`, oldest first
        (recorded as `group` in their `accepted` entries). Call inside :meth:`transaction`,
        as :meth:`usage`."""
        rows = self._db.execute(
            "SELECT body FROM entries WHERE dataset = ? AND kind = ? AND event = 'accepted' "
            "AND body LIKE '%\"group\"%' ORDER BY seq", (dataset, kind)).fetchall()
        found = []
        for row in rows:
            group = json.loads(row["body"]).get("group")
            if isinstance(group, list):
                found.append(tuple(str(p) for p in group))
        return found

    def entries(self, since: str | None = None, after_seq: int = 0, event: str | None = None,
                ) -> Iterator[LedgerEntry]:
        with self._lock:
            query = "SELECT * FROM entries WHERE seq > ?"
            params: list[object] = [after_seq]
            if since:
                query += " AND ts >= ?"
                params.append(since)
            if event:
                query += " AND event = ?"
                params.append(event)
            rows = self._db.execute(query + " ORDER BY seq", params).fetchall()
        return (_row_to_entry(row) for row in rows)

    def raw_rows(self) -> list[tuple]:
        """Every entry as stored (see :data:`invisible.metering.verify.Row`), in order."""
        with self._lock:
            return [tuple(row) for row in self._db.execute(
                "SELECT node, seq, ts, job_id, event, requester, kind, dataset, rows, body, "
                "prev_hash, hash, signature, key_signature FROM entries ORDER BY seq")]

    def events(self) -> set[str]:
        """Every event that occurs in this ledger."""
        with self._lock:
            return {row["event"] for row in self._db.execute("SELECT DISTINCT event FROM entries")}

    def knows_job(self, job_id: str) -> bool:
        """Whether any entry names this job id (ids are unique for the life of a ledger)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM entries WHERE job_id = ? LIMIT 1",
                                    (job_id,)).fetchone() is not None

    def witnessed_heads(self) -> dict[str, tuple[int, str]]:
        """The latest head countersigned for each peer (from the `witnessed` entries)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM entries WHERE event = 'witnessed' ORDER BY seq").fetchall()
        latest: dict[str, tuple[int, str]] = {}
        for row in rows:
            for peer, (seq, digest) in json.loads(row["body"]).get("heads", {}).items():
                latest[peer] = (int(seq), str(digest))
        return latest

    def contradicted_peers(self) -> dict[str, int]:
        """Peers whose chain went back on a head countersigned here and have not proved it
        extends that head again (-> that head's sequence number), from the ledger."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event, body FROM entries WHERE event IN "
                "('peer-contradicted', 'peer-proved') ORDER BY seq").fetchall()
        state: dict[str, int] = {}
        for row in rows:
            body = json.loads(row["body"])
            if row["event"] == "peer-contradicted":
                state[str(body["peer"])] = int(body["witnessed"][0])
            else:
                state.pop(str(body["peer"]), None)
        return state

    def open_jobs(self) -> list[LedgerEntry]:
        """The `accepted` entries of jobs that never reached a terminal state."""
        with self._lock:
            rows = self._db.execute(_OPEN_JOBS, tuple(TERMINAL_EVENTS)).fetchall()
        return [_row_to_entry(row) for row in rows]

    def mark_interrupted(self) -> list[LedgerEntry]:
        """At start: every job left open by a stop or crash becomes `interrupted` (it still counts)."""
        open_entries = self.open_jobs()
        return self.append(*[
            PendingEntry(e.job_id, "interrupted", e.requester, e.kind, e.dataset, e.rows,
                         {"reason": "the node stopped while the job was open"})
            for e in open_entries
        ]) if open_entries else []
