"""What `invisible meter verify` and `verify-receipt` do, for the CLI and for scripts.

Evidence files are JSON: a coordinator's receipts file (``{party: [entry,
...]}``, one per job, kept by `Federation`), an export of a node's entries
(``[entry, ...]``), or one entry. Every piece of evidence is checked against
its signer's public key (``<id>-ledger.pub`` in the keys folder) before it is
used; evidence that does not verify is reported, not trusted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from invisible.errors import ConfigError
from invisible.metering.entries import LedgerEntry
from invisible.metering.ledger import Ledger
from invisible.metering.signing import load_public_key
from invisible.metering.verify import (
    VerifyReport,
    verify_against_receipts,
    verify_receipt,
    verify_rows,
)


def load_evidence(path: Path) -> Iterator[LedgerEntry]:
    """Entries in one JSON evidence file, whatever its shape."""
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable JSON file ({exc})") from None
    if isinstance(data, dict) and "seq" in data:
        data = [data]
    if isinstance(data, dict):
        data = [entry for entries in data.values() for entry in entries]
    if not isinstance(data, list):
        raise ConfigError(f"{path} holds no ledger entries")
    for item in data:
        if not isinstance(item, dict):
            raise ConfigError(f"{path} holds something that is not a ledger entry")
        yield LedgerEntry.from_json(item)


def public_key_for(keys_dir: Path, node: str) -> Ed25519PublicKey:
    return load_public_key(keys_dir / f"{node}-ledger.pub")


def check_receipts(entries: list[LedgerEntry], key: Ed25519PublicKey, node: str | None,
                   ) -> list[str]:
    """Problems with receipts (signature, hash) of `node` (None: every entry)."""
    problems = []
    for entry in entries:
        if node is not None and entry.node != node:
            continue
        problem = verify_receipt(entry, key)
        if problem:
            problems.append(f"receipt {entry.node}#{entry.seq} (job '{entry.job_id}'): {problem}")
    return problems


def verify_ledger(ledger_path: Path, node: str, key: Ed25519PublicKey,
                  evidence_dir: Path | None = None, keys_dir: Path | None = None,
                  ) -> tuple[VerifyReport, list[str]]:
    """The chain's own check, and (with evidence) what it no longer contains or contradicts."""
    ledger = Ledger(ledger_path, node, None)
    try:
        rows = ledger.raw_rows()
    finally:
        ledger.close()
    report = verify_rows(rows, key)
    if evidence_dir is None:
        return report, []
    problems: list[str] = []
    trusted: list[LedgerEntry] = []
    keys: dict[str, Ed25519PublicKey] = {node: key}
    for path in sorted(evidence_dir.rglob("*.json")):
        for item in load_evidence(path):
            relevant = item.node == node or (
                item.event == "witnessed" and node in item.body.get("heads", {}))
            if not relevant:
                continue  # evidence about other ledgers says nothing about this one
            if item.node not in keys:
                if keys_dir is None:
                    continue
                try:
                    keys[item.node] = public_key_for(keys_dir, item.node)
                except ConfigError:
                    problems.append(f"{path.name}: no public key for '{item.node}'; not used")
                    continue
            why = verify_receipt(item, keys[item.node])
            if why:
                problems.append(f"{path.name}: entry {item.node}#{item.seq} is not genuine: {why}")
            else:
                trusted.append(item)
    problems += verify_against_receipts(node, {row[1]: row[11] for row in rows}, trusted)
    return report, problems
