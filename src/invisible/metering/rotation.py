"""Rotating a node's ledger key: a step of its own, recorded in the ledger, signed by both keys.

`invisible meter rotate-key --config party.toml`, with the node stopped:

1. take the ledger's lock alone — a running node holds it, so the rotation is
   refused, naming the ledger — and check the chain, the head marker and the
   key as a node does when it starts (:func:`~invisible.metering.startup.open_node_ledger`);
2. make a new Ed25519 key and keep it beside the old one
   (``<id>-ledger.key.new``, mode 0600, synced to disk);
3. append a `key-rotated` entry naming both public keys, signed by the old
   key and, over the same hash, by the new one (:mod:`invisible.metering.keys`);
   every later entry is signed by the new key;
4. publish: ``<id>-ledger.keys`` (every key-rotated entry, so old receipts
   still verify), ``<id>-ledger.pub`` (the new key); then the new key
   replaces ``<id>-ledger.key``, and the head marker is signed with it.

The old private key is not kept: retiring it is the point. A rotation cut
short after step 3 leaves a node that refuses to start with the old key (its
chain says another key is in force); running the command again finishes it.
One cut short before step 3 leaves only the ``.new`` file, which the next run
discards.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from invisible.metering.entries import LedgerEntry
from invisible.metering.files import replace_file, sync_folder
from invisible.metering.keys import KEY_ROTATED, history_path, read_rotations, rotation_keys, write_rotations
from invisible.metering.ledger import Ledger
from invisible.metering.signing import load_signing_key, public_pem, public_raw, write_signing_key
from invisible.metering.startup import HeadMarker, marker_path, open_node_ledger


def staged_key_path(signing_key: Path) -> Path:
    return signing_key.with_name(signing_key.name + ".new")


def rotate_ledger_key(ledger_path: Path, node_id: str, signing_key: Path) -> LedgerEntry:
    """Hand a stopped node's ledger on to a new key (module docstring); its key-rotated entry.
    ConfigError, with nothing changed, if the node runs or its ledger fails its check."""
    staged = staged_key_path(signing_key)
    if staged.exists():
        new_key = load_signing_key(staged)
        if _last_rotation_to(ledger_path, node_id, new_key) is not None:
            return _finish(ledger_path, node_id, signing_key, new_key)
        staged.unlink()  # left by a rotation stopped before its entry was written
    ledger = open_node_ledger(ledger_path, node_id, signing_key, exclusive=True)
    try:
        new_key = Ed25519PrivateKey.generate()
        write_signing_key(staged, new_key)
        entry = ledger.rotate_key(new_key)
        _publish(ledger, signing_key, new_key)
    finally:
        ledger.close()
    return entry


def _last_rotation_to(ledger_path: Path, node_id: str, new_key: Ed25519PrivateKey,
                      ) -> LedgerEntry | None:
    """The ledger's last key-rotated entry if it hands the ledger on to `new_key`."""
    ledger = Ledger(ledger_path, node_id, None)
    try:
        rotations = list(ledger.entries(event=KEY_ROTATED))
    finally:
        ledger.close()
    named = rotation_keys(rotations[-1].body) if rotations else None
    wanted = public_raw(new_key.public_key())
    return rotations[-1] if named is not None and named[1] == wanted else None


def _finish(ledger_path: Path, node_id: str, signing_key: Path,
            new_key: Ed25519PrivateKey) -> LedgerEntry:
    """Publish a rotation whose entry was written before the command was cut short."""
    ledger = open_node_ledger(ledger_path, node_id, signing_key, exclusive=True, key=new_key)
    try:
        _publish(ledger, signing_key, new_key)
        return list(ledger.entries(event=KEY_ROTATED))[-1]
    finally:
        ledger.close()


def _publish(ledger: Ledger, signing_key: Path, new_key: Ed25519PrivateKey) -> None:
    """Step 4, under the ledger's lock: the keys history, the public key, the private key;
    the head marker is signed with the new key when the ledger closes."""
    history = history_path(signing_key)
    known = read_rotations(history) if history.exists() else []
    recorded = {entry.hash for entry in known}  # it may hold those of a ledger since restarted
    write_rotations(history, ledger.node_id, [*known, *(
        entry for entry in ledger.entries(event=KEY_ROTATED) if entry.hash not in recorded)])
    replace_file(signing_key.with_suffix(".pub"), public_pem(new_key))
    os.replace(staged_key_path(signing_key), signing_key)
    sync_folder(signing_key.parent)  # rare and decisive: the new key's name must survive a crash
    ledger.record_heads(HeadMarker(marker_path(signing_key), ledger.node_id, new_key).record)
