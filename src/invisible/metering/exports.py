"""A node's export of its ledger entries, under a header the node signs.

`invisible meter export` writes the entries it chose and a header saying how
they were chosen (``since``, ``events``), where the ledger's chain ended when
they were read (``head``), and how many entries were chosen with a digest of
their sequence numbers and hashes. The node signs the header with its ledger
key, so neither relabelling an export ("only some events") nor deleting,
adding or replacing an entry goes unnoticed: the header no longer verifies,
or the entries no longer match its count and digest.

Exports written before headers were signed are still read: each entry in
them is a signed receipt and serves as one. They are never vouched complete,
since stripping a signature would otherwise pass for an old export.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from invisible.errors import ConfigError
from invisible.metering.entries import LedgerEntry, canonical_json
from invisible.metering.signing import signature_valid
from invisible.metering.verify import sequence_problems
from invisible.text import printable

#: The key that marks an export (never a party id: those have no underscore).
EXPORT_KEY = "export_of"
#: What a signed header says it is (part of what is signed).
FORMAT = "invisible-ledger-export/2"


def entries_digest(entries: Sequence[LedgerEntry]) -> str:
    """SHA-256 over the entries' sequence numbers and hashes, in their order."""
    return hashlib.sha256(canonical_json([[e.seq, e.hash] for e in entries])).hexdigest()


@dataclass(frozen=True)
class ExportHeader:
    """What an export says it holds; the node signs all of it."""

    node: str
    since: str | None
    events: tuple[str, ...]
    head: tuple[int, str]
    count: int
    digest: str
    signature: str = ""

    def _fields(self) -> dict[str, Any]:
        return {"format": FORMAT, EXPORT_KEY: self.node, "since": self.since,
                "events": list(self.events) or None, "head": list(self.head),
                "count": self.count, "digest": self.digest}

    def message(self) -> bytes:
        """What the node signs: every field of the header but the signature."""
        return canonical_json(self._fields())

    def signed(self, key: Ed25519PrivateKey) -> ExportHeader:
        return ExportHeader(self.node, self.since, self.events, self.head, self.count,
                            self.digest, key.sign(self.message()).hex())

    def to_json(self) -> dict[str, Any]:
        return {**self._fields(), "signature": self.signature}

    @classmethod
    def read(cls, data: dict[str, Any]) -> ExportHeader:
        """The header of a signed export; ConfigError if a field is missing or garbled."""
        events, head, since = data.get("events") or [], data.get("head"), data.get("since")
        well_formed = (
            data.get("format") == FORMAT
            and isinstance(events, list) and all(isinstance(e, str) for e in events)
            and isinstance(head, list) and len(head) == 2 and type(head[0]) is int
            and isinstance(head[1], str) and (since is None or isinstance(since, str))
            and type(data.get("count")) is int
            and all(isinstance(data.get(k), str) for k in (EXPORT_KEY, "digest", "signature")))
        if not well_formed:
            raise ConfigError("an export header with a field missing or garbled")
        return cls(data[EXPORT_KEY], since, tuple(events), tuple(data["head"]), data["count"],
                   data["digest"], data["signature"])

    def problem(self, key: Ed25519PublicKey) -> str | None:
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            signature = b""
        if not signature_valid(key, signature, self.message()):
            return (f"its header is not signed by the ledger key of '{printable(self.node)}' "
                    "(edited, or not this node's export): what it holds cannot be vouched for")
        return None


def export_document(node: str, entries: Sequence[LedgerEntry], since: str | None,
                    events: Sequence[str] | None, head: tuple[int, str],
                    key: Ed25519PrivateKey) -> dict[str, Any]:
    """What `meter export` writes: the signed header, and the entries."""
    header = ExportHeader(node, since, tuple(sorted(events or ())), head, len(entries),
                          entries_digest(entries)).signed(key)
    return {**header.to_json(), "entries": [entry.to_json() for entry in entries]}


def export_problems(header: ExportHeader, entries: Sequence[LedgerEntry],
                    key: Ed25519PublicKey) -> list[str]:
    """Why `entries` are not the export the node signed under `header`, or []."""
    forged = header.problem(key)
    if forged is not None:
        return [forged]
    node = printable(header.node)
    if any(entry.node != header.node for entry in entries):
        return [f"it holds entries of another node than '{node}', the node it says it exports"]
    problems = []
    if len(entries) != header.count or entries_digest(entries) != header.digest:
        problems.append(f"it holds {len(entries)} entries where '{node}' exported and signed "
                        f"{header.count}: entries were deleted, added, replaced or reordered")
    if not header.events:
        problems += [printable(gap) for gap in sequence_problems(
            entries, 1 if header.since is None else None)]
        last, head = max((e.seq for e in entries), default=0), header.head[0]
        if last < head and (entries or header.since is None):
            problems.append(f"entries {last + 1} to {head} of '{node}' are missing (its ledger "
                            f"ended at entry {head} when it exported)")
    return problems


def export_summary(header: ExportHeader, entries: Sequence[LedgerEntry]) -> str:
    """One line saying what a genuine export holds."""
    chosen = (f"only events {', '.join(header.events)}" if header.events else "every event")
    chosen += f" since {header.since}" if header.since else ""
    seqs = [e.seq for e in entries]
    held = f"entries {min(seqs)} to {max(seqs)}" if seqs else "no entries"
    return printable(f"export of '{header.node}' signed by its ledger key: {len(entries)} "
                     f"entries of {chosen} ({held}), none missing; its ledger ended at entry "
                     f"{header.head[0]} when exported")
