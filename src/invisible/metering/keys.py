"""A node's ledger keys over time: which key signed which entries, and how it was handed on.

A node signs its entries with one Ed25519 key until its operator rotates it
(`invisible meter rotate-key`, :mod:`invisible.metering.rotation`). The
rotation is an entry of its own, `key-rotated`, that names the old and the
new public key, is signed by the old key as every entry is, and carries a
second signature over the same hash by the new key, which proves the node
holds it. Every later entry is signed by the new key. So the keys of a chain
follow from its key-rotated entries, and any one of them that a verifier
trusts vouches for all: forwards, each old key signed the entry naming its
successor; backwards, each new key signed the entry naming its predecessor,
whose hash commits to every entry before it.

Receipts travel without the chain, so a node publishes its keys:
``<id>-ledger.pub`` is the key in force, and ``<id>-ledger.keys`` (written at
the first rotation) holds every key-rotated entry of its ledger, from which
every key it had follows with the entries it signed. That file is checked
when it is read, and must end with the key in ``<id>-ledger.pub``.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from invisible.errors import ConfigError
from invisible.metering.entries import LedgerEntry
from invisible.metering.files import replace_file
from invisible.metering.signing import (
    load_public_key,
    public_key_from_raw,
    public_raw,
    signature_valid,
)
from invisible.text import printable

#: The event of the entry that hands a ledger on to a new key.
KEY_ROTATED = "key-rotated"


@dataclass(frozen=True)
class KeyHistory:
    """Which key signs which entries: (first sequence number, raw public key), in order."""

    segments: tuple[tuple[int, bytes], ...]

    @classmethod
    def single(cls, key: Ed25519PublicKey) -> KeyHistory:
        """A node that never rotated its key (or a verifier that knows only one of them)."""
        return cls(((1, public_raw(key)),))

    def since(self, seq: int) -> int:
        """The first entry signed by the key in force at entry `seq`."""
        index = bisect_right([start for start, _ in self.segments], seq) - 1
        return self.segments[max(index, 0)][0]

    def raw_at(self, seq: int) -> bytes:
        index = bisect_right([start for start, _ in self.segments], seq) - 1
        return self.segments[max(index, 0)][1]

    def key_at(self, seq: int) -> Ed25519PublicKey:
        return public_key_from_raw(self.raw_at(seq))

    @property
    def current(self) -> bytes:
        """The key in force after the last entry it knows of."""
        return self.segments[-1][1]

    def raw_keys(self) -> set[bytes]:
        return {raw for _, raw in self.segments}

    def last_rotation(self) -> int:
        """The sequence number of the last key-rotated entry it knows of (0: none)."""
        return self.segments[-1][0] - 1 if len(self.segments) > 1 else 0


#: A verifier's keys of a node: one key, or its published history.
Keys = Ed25519PublicKey | KeyHistory


def as_history(keys: Keys) -> KeyHistory:
    return keys if isinstance(keys, KeyHistory) else KeyHistory.single(keys)


def rotation_body(old: Ed25519PublicKey, new: Ed25519PublicKey) -> dict[str, str]:
    return {"old_key": public_raw(old).hex(), "new_key": public_raw(new).hex()}


def rotation_keys(body: Any) -> tuple[bytes, bytes] | None:
    """The old and new raw public keys a key-rotated entry names (None: not two keys)."""
    try:
        old, new = bytes.fromhex(body["old_key"]), bytes.fromhex(body["new_key"])
    except (KeyError, TypeError, ValueError):
        return None
    return (old, new) if len(old) == len(new) == 32 else None


def _signed_by(raw: bytes, signature: str, digest: str) -> bool:
    try:
        return signature_valid(public_key_from_raw(raw), bytes.fromhex(signature),
                               bytes.fromhex(digest))
    except ValueError:
        return False


def rotation_problem(entry: LedgerEntry, key_in_force: bytes) -> str | None:
    """Why a key-rotated entry does not hand the ledger on from `key_in_force`, or None."""
    named = rotation_keys(entry.body)
    if named is None:
        return "it is a key-rotated entry that does not name an old and a new key"
    old, new = named
    if old != key_in_force:
        return "its key rotation names as the old key one that did not sign the entries before it"
    if not _signed_by(old, entry.signature, entry.hash):
        return "its key rotation is not signed by the old key"
    if not _signed_by(new, entry.key_signature, entry.hash):
        return ("its key rotation lacks a valid signature by the new key it names (no proof "
                "the node holds that key)")
    return None


def follow_rotations(rotations: Sequence[LedgerEntry], first_seq: int, first_key: bytes,
                     ) -> tuple[KeyHistory, tuple[int, str] | None]:
    """The keys that signed a run of entries from `first_seq`, given its key-rotated entries
    in order: the first of them names the key before it (without any, `first_key`). Stops at
    a rotation that does not hand the key on, and says where and why."""
    named = rotation_keys(rotations[0].body) if rotations else None
    segments = [(first_seq, named[0] if named else first_key)]
    for entry in rotations:
        problem, named = rotation_problem(entry, segments[-1][1]), rotation_keys(entry.body)
        if problem is not None or named is None:
            return KeyHistory(tuple(segments)), (entry.seq, problem or "")
        segments.append((entry.seq + 1, named[1]))
    return KeyHistory(tuple(segments)), None


# --- the published history: <id>-ledger.keys ----------------------------------------------------

def history_path(public_or_private_key: Path) -> Path:
    """``<id>-ledger.keys`` beside ``<id>-ledger.pub`` or ``<id>-ledger.key``."""
    return public_or_private_key.with_suffix(".keys")


def read_rotations(path: Path) -> list[LedgerEntry]:
    """The key-rotated entries a keys history holds, each checked: intact, a rotation of the
    node it names, handing on the key the one before handed on."""
    try:
        data = json.loads(path.read_text())
        node, items = data["node"], data["rotations"]
        rotations = [LedgerEntry.from_json(item) for item in items]
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        raise ConfigError(f"{printable(str(path))} is not a keys history (JSON with the node "
                          "and its key-rotated entries)") from None
    if not rotations:
        raise ConfigError(f"{printable(str(path))} holds no key rotation")
    for entry in rotations:
        if (entry.event, entry.node) != (KEY_ROTATED, node) or entry.compute_hash() != entry.hash:
            raise ConfigError(f"{printable(str(path))}: entry {entry.seq} is not an intact "
                              f"key rotation of '{printable(str(node))}'")
    _, broken = follow_rotations(rotations, 1, b"")
    if broken is not None or any(a.seq >= b.seq for a, b in pairwise(rotations)):
        where = f"entry {broken[0]}: {broken[1]}" if broken else "its entries are out of order"
        raise ConfigError(f"{printable(str(path))} does not hand the key on: {where}")
    return rotations


def read_key_history(path: Path) -> KeyHistory:
    """Every key a keys history says its node had, each from the first entry it signed."""
    return follow_rotations(read_rotations(path), 1, b"")[0]


def load_key_history(public_path: Path) -> KeyHistory:
    """The keys of the node whose key in force is `public_path` (``<id>-ledger.pub``): with
    its keys history beside it, every key it had; else that key alone."""
    current = load_public_key(public_path)
    path = history_path(public_path)
    if not path.exists():
        return KeyHistory.single(current)
    history = read_key_history(path)
    if history.current != public_raw(current):
        raise ConfigError(f"{printable(str(path))} does not end with the key in "
                          f"{public_path.name}: give the files one rotation wrote together")
    return history


def write_rotations(path: Path, node: str, rotations: Sequence[LedgerEntry]) -> None:
    """Write a keys history whole (a crash leaves the old file or the new one)."""
    replace_file(path, json.dumps({"node": node, "rotations": [e.to_json() for e in rotations]},
                                  indent=1, sort_keys=True).encode())
