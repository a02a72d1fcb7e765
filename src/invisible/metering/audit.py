"""What `invisible meter verify`, `verify-receipt` and `export` do, for the CLI and scripts.

Evidence files are JSON: a coordinator's receipts file (``{party: [entry,
...]}``, one per job, kept by `Federation`), an export of a node's entries
under a header the node signed (:mod:`invisible.metering.exports`; older
exports had an unsigned header, or none), or one entry. Every piece of
evidence is checked against its signer's key in force at it (``<id>-ledger.pub``,
and ``<id>-ledger.keys`` beside it if the signer rotated its key) before it is
used; evidence that does not verify is reported, not trusted.
A signed export's header binds what it holds, so an entry deleted from it is
found whatever the header says; an export with no signed header is never
vouched complete.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invisible.errors import ConfigError
from invisible.metering.approvals import decision_problems
from invisible.metering.entries import LedgerEntry
from invisible.metering.exports import EXPORT_KEY, ExportHeader, export_problems, export_summary
from invisible.metering.keys import KeyHistory, Keys, as_history, load_key_history
from invisible.metering.ledger import Ledger
from invisible.metering.startup import ACCEPTED_BROKEN
from invisible.metering.verify import (
    VerifyReport,
    row_entry,
    verify_against_receipts,
    verify_receipt,
    verify_rows,
)
from invisible.text import printable

_NODE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class EvidenceFile:
    entries: list[LedgerEntry]
    #: A signed export's header (None: not an export, or one without a signed header).
    header: ExportHeader | None = None
    #: An export without a signed header (written before headers were signed, or stripped).
    unsigned_export: bool = False


def read_evidence(path: Path) -> EvidenceFile:
    """One JSON evidence file, whatever its shape."""
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not text at all
        raise ConfigError(f"{printable(str(path))} is not a readable JSON file ({exc})") from None
    if isinstance(data, dict) and EXPORT_KEY in data:
        if "signature" not in data:  # written before export headers were signed
            return EvidenceFile(_entries(path, data.get("entries")), unsigned_export=True)
        try:
            header = ExportHeader.read(data)
        except ConfigError as exc:
            raise ConfigError(f"{printable(str(path))} holds {exc}") from None
        return EvidenceFile(_entries(path, data.get("entries")), header)
    if isinstance(data, list):  # an export written before exports said what they hold
        return EvidenceFile(_entries(path, data), unsigned_export=True)
    if isinstance(data, dict) and "seq" in data:
        return EvidenceFile(_entries(path, [data]))
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        return EvidenceFile(_entries(path, [e for entries in data.values() for e in entries]))
    raise ConfigError(f"{printable(str(path))} holds no ledger entries")


def _entries(path: Path, items: Any) -> list[LedgerEntry]:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"{printable(str(path))} holds something that is not a ledger entry")
    try:
        return [LedgerEntry.from_json(item) for item in items]
    except ConfigError as exc:
        raise ConfigError(f"{printable(str(path))} holds {exc}") from None


def keys_for(keys_dir: Path, node: str) -> KeyHistory:
    """``<node>-ledger.pub`` in `keys_dir`, with ``<node>-ledger.keys`` if the node rotated its
    key; the node id comes from evidence, so it must be a plain id (no path)."""
    if not _NODE_ID.match(node):
        raise ConfigError(f"{printable(repr(node))} is not a node id")
    return load_key_history(keys_dir / f"{node}-ledger.pub")


def ledger_keys_in(folder: Path, nodes: Iterable[str]) -> dict[str, KeyHistory]:
    """The ledger keys of those `nodes` that have ``<id>-ledger.pub`` in `folder`."""
    return {node: keys_for(folder, node) for node in nodes
            if (folder / f"{node}-ledger.pub").exists()}


class PublicKeys:
    """Ledger public keys by node: a key file named ``<id>-ledger.pub`` is `id`'s key, and
    a node with none given is looked up as ``<id>-ledger.pub`` beside the keys given.

    With one key and a `party`, that key is the party's whatever its file name.
    Other keys, named for no node, are tried on receipts no key is named for.
    """

    def __init__(self, paths: Sequence[Path], party: str | None = None) -> None:
        self._named: dict[str, KeyHistory] = {}
        self.unnamed: list[KeyHistory] = []
        self._folders = list(dict.fromkeys(path.parent for path in paths))
        for path in paths:
            key = load_key_history(path)
            if party is not None and len(paths) == 1:
                self._named[party] = key
            elif path.name.endswith("-ledger.pub"):
                self._named[path.name.removesuffix("-ledger.pub")] = key
            else:
                self.unnamed.append(key)

    def named(self, node: str) -> KeyHistory | None:
        if node not in self._named:
            for folder in self._folders:
                if _NODE_ID.match(node) and (folder / f"{node}-ledger.pub").exists():
                    self._named[node] = keys_for(folder, node)
                    break
        return self._named.get(node)

    def of(self, node: str, sole_node: bool) -> KeyHistory | None:
        """The key named for `node`; if `sole_node` (the evidence is of this node only),
        a single key named for no node is taken to be its key."""
        key = self.named(node)
        if key is None and len(self.unnamed) == 1 and sole_node:
            key = self.unnamed[0]
        return key


def receipt_problem(entry: LedgerEntry, keys: PublicKeys, sole_node: bool) -> str | None:
    """Why a receipt is not genuine, or None; a missing key is said as such, never as a bad
    signature. `sole_node`: the file holds receipts of this node only, so a single key named
    for no node is taken to be its key."""
    if entry.compute_hash() != entry.hash:
        return "its content does not match its hash (altered)"
    key = keys.of(entry.node, sole_node)
    if key is not None:
        return verify_receipt(entry, key)
    if any(verify_receipt(entry, candidate) is None for candidate in keys.unnamed):
        return None
    return _no_key(entry.node)


def _no_key(node: str) -> str:
    return (f"cannot be checked: no public key for '{printable(node)}' (give --public-key "
            f"{printable(node)}-ledger.pub, or put it beside the keys given)")


def receipt_defect(party: str, item: Any, key: Keys | None, job_id: str | None = None,
                   ) -> str | None:
    """Why what `party` sent as one of its receipts cannot serve as evidence, or None.

    Checked: it is a ledger entry (its fields and their types), of `party`'s own
    ledger, of job `job_id` if given (or a refusal recorded under '-', the job id
    of a request refused for its id), its content matches its hash, and — given
    the party's ledger public `key` — its signature verifies with it. Not checked
    without the key: the signature (the auditor's `meter verify` checks it with
    the key it holds). Never checked here: that the entry is still in the node's
    chain.
    """
    if not isinstance(item, dict):
        return "it is not a JSON object"
    try:
        entry = LedgerEntry.from_json(item)
    except ConfigError as exc:
        return str(exc)
    if entry.node != party:
        return f"it is an entry of '{printable(entry.node, 64)}', not of '{party}'"
    if job_id is not None and entry.job_id != job_id and not (
            entry.job_id == "-" and entry.event in ("requested", "refused")):
        return f"it is an entry of job '{printable(entry.job_id, 80)}', not of this job"
    if entry.compute_hash() != entry.hash:
        return "its content does not match its hash (altered)"
    return None if key is None else verify_receipt(entry, key)


def audit_file(path: Path, key_paths: Sequence[Path], party: str | None = None,
               ) -> tuple[list[str], bool]:
    """`meter verify-receipt`: each receipt against its own node's key, and an export's
    signed header against what it holds; returns the lines to print and whether all is
    well."""
    evidence = read_evidence(path)
    entries = [e for e in evidence.entries if party is None or e.node == party]
    if not entries:
        raise ConfigError(f"{path} holds no receipt" + (f" of party '{party}'" if party else ""))
    keys = PublicKeys(key_paths, party)
    sole_node = len({entry.node for entry in entries}) == 1
    lines, bad = [], []
    for entry in entries:
        problem = receipt_problem(entry, keys, sole_node)
        name = f"receipt {printable(entry.node)}#{entry.seq}"
        if problem is None:
            lines.append(f"{name} ({printable(entry.event)}, job '{printable(entry.job_id)}'): valid")
        else:
            bad.append(f"{name} (job '{printable(entry.job_id)}'): {problem}")
    if evidence.header is not None:
        key = keys.of(evidence.header.node, sole_node)
        problems = ([_no_key(evidence.header.node)] if key is None else export_problems(
            evidence.header, evidence.entries, key.key_at(evidence.header.head[0] + 1)))
        bad += [f"the export: {problem}" for problem in problems]
        lines += [] if problems else [export_summary(evidence.header, evidence.entries)]
    elif evidence.unsigned_export:
        bad.append("the export has no signed header (written before exports were signed, or "
                   "its signature was stripped): entries deleted from it cannot be detected; "
                   "export it again with `invisible meter export`")
    return lines + bad, not bad


def check_receipts(entries: list[LedgerEntry], key: Keys, node: str | None,
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


def verify_ledger(ledger_path: Path, node: str, key: Keys,
                  evidence_dir: Path | None = None, keys_dir: Path | None = None,
                  ca_pem: bytes | None = None) -> tuple[VerifyReport, list[str]]:
    """The chain's own check, the approvers' decisions it records (see
    :func:`~invisible.metering.approvals.decision_problems`; certificates checked against
    the CA `ca_pem` when given), and (with evidence) what it no longer contains or
    contradicts."""
    ledger = Ledger(ledger_path, node, None)
    try:
        rows = ledger.raw_rows()
    finally:
        ledger.close()
    report = verify_rows(rows, key)
    problems: list[str] = []
    if not report.ok:
        problems += [f"the node's operator started on this broken chain anyway, recorded at "
                     f"entry {row[1]} ({row[2]})" for row in rows
                     if row[4] == ACCEPTED_BROKEN and json.loads(row[9]).get("broken_at")
                     == report.seq]
    problems += decision_problems((row_entry(row) for row in rows), node, ca_pem)
    if evidence_dir is None:
        return report, problems
    trusted: list[LedgerEntry] = []
    keys = {node: report.keys or as_history(key)}  # the node's own: as its chain says
    for path, item in _evidence_about(node, evidence_dir, problems):
        if item.node not in keys:
            if keys_dir is None:
                continue
            try:
                keys[item.node] = keys_for(keys_dir, item.node)
            except ConfigError:
                problems.append(f"{path.name}: no public key for '{printable(item.node)}'; "
                                "not used")
                continue
        why = verify_receipt(item, keys[item.node])
        if why:
            problems.append(f"{path.name}: entry {printable(item.node)}#{item.seq} is not "
                            f"genuine: {why}")
        else:
            trusted.append(item)
    problems += verify_against_receipts(node, {row[1]: row[11] for row in rows}, trusted)
    return report, problems


def _evidence_about(node: str, evidence_dir: Path, problems: list[str],
                    ) -> Iterator[tuple[Path, LedgerEntry]]:
    """Every entry in the folder's JSON files that speaks about `node`'s ledger: its own
    entries, and peers' countersignatures of its head. A file that is not evidence (junk,
    another shape, a malformed entry) adds one line to `problems` naming it, and the
    other files are still read."""
    for path in sorted(evidence_dir.rglob("*.json")):
        try:
            entries = read_evidence(path).entries
        except ConfigError as exc:
            problems.append(f"{exc}; this file was skipped")
            continue
        for item in entries:
            heads = item.body.get("heads")
            if item.node == node or (item.event == "witnessed" and isinstance(heads, dict)
                                     and node in heads):
                yield path, item


def backup_ledger(ledger_path: Path, node: str, key: Keys, out: Path) -> VerifyReport:
    """Copy a node's ledger to `out` with SQLite's online backup (a consistent snapshot while
    the node writes), then verify the copy's whole chain; ConfigError if `out` exists."""
    if out.exists():
        raise ConfigError(f"{out} exists: give another --out (a backup never replaces a file)")
    if not ledger_path.exists():
        raise ConfigError(f"no ledger at {ledger_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(out)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    return verify_ledger(out, node, key)[0]
