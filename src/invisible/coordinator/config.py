"""The coordinator's configuration: its identity, the CA, and the nodes it can reach.

A coordinator's file::

    [coordinator]
    id = "coordinator"
    receipts_dir = "receipts"    # optional: where every party's signed receipts are kept
    ledger_keys = "pki"          # optional: folder of <id>-ledger.pub, to check receipts
                                 # (default: the folder of the CA file, where pki init puts them)

    [tls]
    ca = "pki/ca.pem"
    cert = "pki/coordinator.pem"
    key = "pki/coordinator.key"

    [parties]                    # party id -> address
    bank = "127.0.0.1:50051"

    [dealers]                    # optional: dealer nodes
    dealer = "127.0.0.1:50054"

    [limits]                     # optional; see invisible.node.config
    job_timeout_s = 600.0

Instead of ``[parties]`` and ``[dealers]``, the coordinator may name the
federation's address book (see invisible.node.config), the file every node
names too::

    [coordinator]
    id = "coordinator"
    federation = "federation.toml"   # its [parties] and [dealers]

A file gives either ``federation`` or ``[parties]``/``[dealers]``, not both.

Relative paths are taken from the folder of the file; every mistake is a
:class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from invisible.errors import ConfigError
from invisible.net.pki import check_party_id
from invisible.net.tls import TlsFiles
from invisible.node.config import (
    Limits,
    TomlReader,
    load_toml,
    read_address_book,
    read_limits,
    read_tls,
)


@dataclass(frozen=True)
class CoordinatorConfig:
    source: Path
    coordinator_id: str
    tls: TlsFiles
    parties: dict[str, str]
    limits: Limits = field(default_factory=Limits)
    #: Where the parties' signed receipts of every job are kept.
    receipts_dir: Path = Path("receipts")
    dealers: dict[str, str] = field(default_factory=dict)
    #: Where the nodes' ledger public keys (``<id>-ledger.pub``) are, to check their receipts.
    ledger_keys: Path = Path("pki")


def load_coordinator_config(path: Path | str, section: str = "coordinator") -> CoordinatorConfig:
    """A coordinator's file; with `section="approver"`, an approver's, which has the same
    shape with ``[approver]`` for ``[coordinator]`` (see invisible.coordinator.approver)."""
    source = Path(path).resolve()
    root = TomlReader(source, load_toml(source), "").only(
        section, "tls", "parties", "dealers", "limits")
    coordinator = root.table_at(section).only("id", "federation", "receipts_dir",
                                              "ledger_keys")
    book = read_address_book(root, coordinator, ("parties", "dealers"))
    if book is not None:
        parties, dealers = book.parties, book.dealers
    else:
        parties = root.table_at("parties").addresses()
        dealers = root.table_at("dealers", required=False).addresses()
    if not parties:
        raise ConfigError(f"{source}: parties must name at least one party")
    tls = read_tls(root, serves=False)
    return CoordinatorConfig(
        source=source, coordinator_id=check_party_id(coordinator.string("id")),
        tls=tls, parties=parties, limits=read_limits(root),
        receipts_dir=coordinator.path("receipts_dir") if "receipts_dir" in coordinator.table
        else source.parent / "receipts",
        dealers=dealers,
        ledger_keys=coordinator.path("ledger_keys") if "ledger_keys" in coordinator.table
        else tls.ca.parent,
    )
