"""Ledger entries: what one job state change at one node looks like, hashed and signed.

An entry's hash is SHA-256 over the canonical JSON of every field but the
hash and the signatures, including the sequence number and the previous
entry's hash, so changing, removing or reordering any entry breaks the
chain from there on. The node signs the 32-byte hash with Ed25519; an entry
that hands the ledger on to a new key (:mod:`invisible.metering.keys`) also
carries the new key's signature over the same hash (`key_signature`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from invisible.errors import ConfigError
from invisible.metering.signing import signature_valid

GENESIS_HASH = "0" * 64
#: Job state changes, in the order they may happen: requested, accepted or refused,
#: then finished, failed, cancelled, refused (a charged data check) or interrupted;
#: `clipped` notes how many values a job clipped to its bound (this node's record only);
#: witnessed entries countersign peers.
TERMINAL_EVENTS = frozenset({"refused", "finished", "failed", "cancelled", "interrupted"})
#: A call made with a revoked certificate was refused (the first since the revocation list
#: in force was loaded; later ones are counted in the metrics only).
REVOKED_REFUSED = "revoked-refused"
#: The event of a job's rows kept out of its receipt (an alignment whose size its requester
#: was not told): in the node's own ledger only.
PRIVATE_ROWS = "rows"


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class PendingEntry:
    """An entry before the ledger gives it a place in the chain."""

    job_id: str
    event: str
    requester: str = ""
    kind: str = ""
    dataset: str = ""
    rows: int = 0
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerEntry:
    node: str
    seq: int
    ts: str
    job_id: str
    event: str
    requester: str
    kind: str
    dataset: str
    rows: int
    body: dict[str, Any]
    prev_hash: str
    hash: str = ""
    signature: str = ""
    #: A new key's signature over the hash (`key-rotated` entries only; empty otherwise).
    key_signature: str = ""

    def signed_fields(self) -> dict[str, Any]:
        """Every field but the hash and the signatures (the body is shared, not copied)."""
        return {"node": self.node, "seq": self.seq, "ts": self.ts, "job_id": self.job_id,
                "event": self.event, "requester": self.requester, "kind": self.kind,
                "dataset": self.dataset, "rows": self.rows, "body": self.body,
                "prev_hash": self.prev_hash}

    def compute_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.signed_fields())).hexdigest()

    def sealed(self, key: Ed25519PrivateKey) -> LedgerEntry:
        digest = self.compute_hash()
        signature = key.sign(bytes.fromhex(digest)).hex()
        return LedgerEntry(**{**self.signed_fields(), "hash": digest, "signature": signature})

    def cosigned(self, new_key: Ed25519PrivateKey) -> LedgerEntry:
        """This sealed entry with `new_key`'s signature over its hash as well."""
        return dataclasses.replace(self, key_signature=new_key.sign(bytes.fromhex(self.hash)).hex())

    def problem(self, key: Ed25519PublicKey) -> str | None:
        """Why this entry is not intact on its own (hash or signature), or None."""
        if self.compute_hash() != self.hash:
            return "its content does not match its hash (altered)"
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return "its signature is not hex"
        if not signature_valid(key, signature, bytes.fromhex(self.hash)):
            return "its signature does not verify with the node's public key"
        return None

    def to_json(self) -> dict[str, Any]:
        """As JSON; `key_signature` only where there is one (so every other receipt reads as
        it always did)."""
        data = {**self.signed_fields(), "hash": self.hash, "signature": self.signature}
        if self.key_signature:
            data["key_signature"] = self.key_signature
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LedgerEntry:
        """An entry from JSON that came from outside; ConfigError if its fields or their
        types are not an entry's (so nothing later trips over a list where a text was)."""
        try:
            entry = cls(**data)
        except TypeError:
            raise ConfigError("not a ledger entry (fields differ)") from None
        wrong = [name for name, kind in _FIELD_TYPES.items() if not isinstance(
            getattr(entry, name), kind) or (kind is int and isinstance(getattr(entry, name), bool))]
        if wrong:
            raise ConfigError(f"not a ledger entry ({', '.join(wrong)} of the wrong type)")
        return entry


_FIELD_TYPES: dict[str, type] = {
    "node": str, "seq": int, "ts": str, "job_id": str, "event": str, "requester": str,
    "kind": str, "dataset": str, "rows": int, "body": dict, "prev_hash": str, "hash": str,
    "signature": str, "key_signature": str,
}
