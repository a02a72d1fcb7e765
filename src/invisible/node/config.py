"""Party configuration, one TOML file per party (the coordinator's: invisible.coordinator.config).

Relative paths are taken from the folder of the file that names them. Every
mistake is reported as a :class:`ConfigError` naming the file and the key.

A party's file::

    [party]
    id = "bank"
    listen = "127.0.0.1:50051"
    results_dir = "results"      # optional (default <id>-results); outputs addressed to it

    [tls]
    ca = "../pki/ca.pem"
    cert = "../pki/bank.pem"
    key = "../pki/bank.key"
    crl = "../pki/ca.crl"        # optional: the CA's revocation list, reloaded on change

    [peers]                      # party id -> address
    hospital = "127.0.0.1:50052"

    [dealers]                    # optional: dealer nodes (dealer certificates)
    dealer = "127.0.0.1:50054"

    [limits]                     # optional
    max_message_bytes = 1073741824
    rpc_timeout_s = 30.0
    output_retention_s = 600.0   # released arrays are dropped this long after their job
    refused_burst = 60           # refused requests a requester may make before it is told
    refused_per_s = 1.0          #   to wait (no ledger entry), refilled at this rate

    [datasets.customers]
    path = "customers.csv"       # or .csv.gz, or .parquet (see invisible.node.sources)
    columns = { balance = "float", age = "int", segment = "str", active = "bool",
                opened = "date" }
    missing = "refuse"           # or "drop": rows with an empty or non-finite value
    # format = "csv"             # default: from the file's name; "parquet"
    # delimiter = ";"            # a CSV's delimiter (default ",")

    [datasets.accounts]          # a PostgreSQL table, or a read-only query
    table = "public.accounts"    # or: query = "SELECT id, balance FROM accounts WHERE ..."
    connection_env = "BANK_PG"   # the variable holding a libpq connection string or URI;
    # connection_file = "pg.dsn" #   or a file holding it (no access for group or others)
    columns = { id = "str", balance = "float" }

    [datasets.customers.policy]  # see invisible.metering.policy; without it, all is refused
    min_rows = 10
    [[datasets.customers.policy.allow]]
    requesters = ["analyst"]
    kinds = ["secure_sum"]
    columns = ["balance"]
    jobs_per_day = 100

    [ledger]                     # optional
    path = "ledger.sqlite"       # default: <id>-ledger.sqlite beside this file
    signing_key = "../pki/bank-ledger.key"   # default: <id>-ledger.key beside the TLS key

    [policy]                     # jobs that use none of this node's data (diagnostics, a
    requesters = ["analyst"]     # dealer's service); without it they are refused
    kinds = ["*"]
    jobs_per_day = 100
    max_bytes = 268435456

    [metrics]                    # optional: Prometheus endpoint
    listen = "9101"              # a port alone: 127.0.0.1 (this machine only); or host:port
    # cert = "metrics.pem"       # serve it over HTTPS (needed off loopback, or a warning)
    # key = "metrics.key"
    # client_ca = "scrapers.pem" # and require a scraper certificate from this CA

Instead of ``[peers]`` and ``[dealers]``, a party (or dealer) may name the
federation's address book, one file shared by every node and coordinator::

    [party]
    id = "bank"
    federation = "../federation.toml"   # relative to this file
    # listen = "0.0.0.0:50051"          # optional: default, its own address in the book

    # federation.toml
    [parties]                    # party id -> address
    bank = "127.0.0.1:50051"
    hospital = "127.0.0.1:50052"
    [dealers]                    # optional
    dealer = "127.0.0.1:50054"

Its peers are then the book's parties, its dealers the book's dealers, each
but itself (so a dealer's peers are all the parties); its id must be in the
book. A file gives either ``federation`` or ``[peers]``/``[dealers]``, not both.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invisible.errors import ConfigError
from invisible.metering.metrics import MetricsTls
from invisible.metering.policy import DatasetPolicy, NodePolicy, parse_node_policy, parse_policy
from invisible.net.mailbox import DEFAULT_MAX_MESSAGE_BYTES
from invisible.net.pki import check_party_id
from invisible.net.tls import TlsFiles

COLUMN_TYPES = ("float", "int", "str", "string", "bool", "date")
#: How a dataset is read (invisible.node.sources): a file, or a PostgreSQL table or query.
FORMATS = ("csv", "parquet", "postgres")
#: Keys that would put a database credential in the config itself, which is refused.
CREDENTIAL_KEYS = ("connection", "dsn", "uri", "url", "password")


def format_of(path: Path) -> str:
    """The format a file's name says: Parquet for `.parquet` or `.pq`, else CSV."""
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
MISSING_CHOICES = ("refuse", "drop")


@dataclass(frozen=True)
class PostgresSource:
    """A dataset read from PostgreSQL: a table (``schema.name`` or ``name``) or one
    read-only query, over a connection string found in an environment variable or a file
    (never in the config)."""

    table: str | None = None
    query: str | None = None
    connection_env: str | None = None
    connection_file: Path | None = None

    def describe(self) -> str:
        return (f"PostgreSQL table {self.table}" if self.table is not None
                else "its PostgreSQL query")


@dataclass(frozen=True)
class DatasetConfig:
    dataset_id: str
    #: The file (None for a PostgreSQL dataset).
    path: Path | None
    columns: dict[str, str]
    #: None: no policy table, so every job on the dataset is refused.
    policy: DatasetPolicy | None = None
    #: Rows with a missing or non-finite number: "refuse" the dataset at load (naming the
    #: column), or "drop" them (the count goes to the node's log).
    missing: str = "refuse"
    #: "csv", "parquet" (default: from the file's name, see invisible.node.sources) or
    #: "postgres".
    format: str = "csv"
    #: A CSV's field delimiter.
    delimiter: str = ","
    #: Where a "postgres" dataset is read from.
    database: PostgresSource | None = None

    def describe(self) -> str:
        """Where the dataset is read from, for messages: the file, or the table."""
        return self.database.describe() if self.database is not None else str(self.path)


@dataclass(frozen=True)
class LedgerConfig:
    path: Path
    signing_key: Path
    #: "sqlite" (the default), or "none" to record nothing — for benchmarks only.
    store: str = "sqlite"


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    rpc_timeout_s: float = 30.0
    job_timeout_s: float = 600.0
    output_retention_s: float = 600.0
    #: Refused requests a requester may make in a burst, and how fast that refills: past
    #: it the node answers busy without writing to its ledger.
    refused_burst: int = 60
    refused_per_s: float = 1.0


@dataclass(frozen=True)
class PartyConfig:
    source: Path
    party_id: str
    listen: str
    tls: TlsFiles
    peers: dict[str, str]
    limits: Limits = field(default_factory=Limits)
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    #: Dealer nodes this node talks to (id -> address); they hold dealer certificates.
    dealers: dict[str, str] = field(default_factory=dict)
    #: Outputs addressed to this party itself (e.g. a secure sum it receives).
    results_dir: Path = Path("results")
    ledger: LedgerConfig = LedgerConfig(Path("ledger.sqlite"), Path("ledger.key"))
    #: host:port for the Prometheus endpoint, or None for none.
    metrics_listen: str | None = None
    metrics_tls: MetricsTls | None = None
    #: The node's rule for jobs that use none of its data; None: they are refused.
    node_policy: NodePolicy | None = None

    @property
    def alignments_dir(self) -> Path:
        """Where psi jobs keep this node's alignments (see invisible.kinds.alignments)."""
        return self.results_dir / "alignments"


def load_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{what} unreadable: {path} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


class TomlReader:
    """Typed access to a TOML table that names the file and key in every error."""

    def __init__(self, source: Path, table: dict[str, Any], where: str) -> None:
        self.source, self.table, self.where = source, table, where

    def fail(self, key: str, problem: str) -> ConfigError:
        prefix = f"{self.where}." if self.where else ""
        return ConfigError(f"{self.source}: {prefix}{key} {problem}")

    def only(self, *known: str) -> TomlReader:
        """This table, if it holds no other keys than `known` (a misspelt table or key would
        otherwise be ignored: `[metric]` for `[metrics]` served no metrics)."""
        unknown = sorted(set(self.table) - set(known))
        if unknown:
            raise self.fail(unknown[0], f"is not a key of this table (known: "
                            f"{', '.join(sorted(known))})" if self.where else
                            f"is not a table of this file (known: {', '.join(sorted(known))})")
        return self

    def table_at(self, key: str, required: bool = True) -> TomlReader:
        value = self.table.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is missing")
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return TomlReader(self.source, value, f"{self.where}.{key}" if self.where else key)

    def string(self, key: str) -> str:
        value = self.table.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def path(self, key: str) -> Path:
        return (self.source.parent / self.string(key)).resolve()

    def number(self, key: str, default: float, *, integer: bool = False) -> Any:
        value = self.table.get(key, default)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
            raise self.fail(key, f"must be a positive {'integer' if integer else 'number'}")
        return value

    def addresses(self) -> dict[str, str]:
        out = {}
        for party_id, address in self.table.items():
            check_party_id(party_id)
            if not isinstance(address, str) or ":" not in address:
                raise self.fail(party_id, "must be an address 'host:port'")
            out[party_id] = address
        return out


@dataclass(frozen=True)
class AddressBook:
    """A federation's addresses, in one file that every node and coordinator names."""

    source: Path
    parties: dict[str, str]
    dealers: dict[str, str]

    def address(self, node_id: str) -> str | None:
        return self.parties.get(node_id) or self.dealers.get(node_id)


def read_address_book(root: TomlReader, table: TomlReader,
                      replaced: tuple[str, ...]) -> AddressBook | None:
    """The book named by `federation` in `table` of `root`, or None if it names none.

    `replaced` are the tables of `root` the book stands for; giving both is refused.
    """
    if "federation" not in table.table:
        return None
    path = table.path("federation")
    both = [name for name in replaced if name in root.table]
    if both:
        raise table.fail("federation", f"and [{'], ['.join(both)}] both name the federation's "
                         "nodes; keep one of them")
    try:
        document = load_toml(path, "address book")
    except ConfigError as exc:
        raise table.fail("federation", f"names no usable address book ({exc})") from None
    book = TomlReader(path, document, "")
    unknown = sorted(set(document) - {"parties", "dealers"})
    if unknown:
        raise book.fail(unknown[0], "is not a table of an address book ([parties], [dealers])")
    parties = book.table_at("parties").addresses()
    dealers = book.table_at("dealers", required=False).addresses()
    if not parties:
        raise book.fail("parties", "must name at least one party")
    both_roles = sorted(set(parties) & set(dealers))
    if both_roles:
        raise book.fail("dealers", f"names '{both_roles[0]}', which is also a party")
    return AddressBook(path, parties, dealers)


#: The tables of a party's (or dealer's) TOML.
PARTY_TABLES = ("party", "tls", "peers", "dealers", "limits", "datasets", "ledger", "metrics",
                "policy")


def read_tls(reader: TomlReader, *, serves: bool = True) -> TlsFiles:
    """The [tls] table; a revocation list (`crl`) only for what serves calls (a node), since
    only a server can check the certificate of the other end."""
    tls = reader.table_at("tls").only("ca", "cert", "key", *(("crl",) if serves else ()))
    return TlsFiles(ca=tls.path("ca"), cert=tls.path("cert"), key=tls.path("key"),
                    crl=tls.path("crl") if "crl" in tls.table else None)


def read_limits(reader: TomlReader) -> Limits:
    limits = reader.table_at("limits", required=False).only(
        *(f.name for f in dataclasses.fields(Limits)))
    defaults = Limits()
    return Limits(
        max_message_bytes=limits.number(
            "max_message_bytes", defaults.max_message_bytes, integer=True),
        rpc_timeout_s=float(limits.number("rpc_timeout_s", defaults.rpc_timeout_s)),
        job_timeout_s=float(limits.number("job_timeout_s", defaults.job_timeout_s)),
        output_retention_s=float(limits.number("output_retention_s",
                                                defaults.output_retention_s)),
        refused_burst=limits.number("refused_burst", defaults.refused_burst, integer=True),
        refused_per_s=float(limits.number("refused_per_s", defaults.refused_per_s)),
    )


def _datasets(reader: TomlReader) -> dict[str, DatasetConfig]:
    tables = reader.table_at("datasets", required=False)
    out = {}
    for dataset_id in tables.table:
        entry = tables.table_at(dataset_id)
        for key in CREDENTIAL_KEYS:
            if key in entry.table:
                raise entry.fail(key, "would put a credential in the config: name an "
                                 "environment variable (connection_env) or a file "
                                 "(connection_file) that holds the connection string")
        entry.only("path", "columns", "policy", "missing", "format", "delimiter", "table",
                   "query", "connection_env", "connection_file")
        columns = entry.table_at("columns")
        if not columns.table:
            raise entry.fail("columns", "must name at least one column")
        for name, kind in columns.table.items():
            if kind not in COLUMN_TYPES:
                raise columns.fail(name, f"must be one of {', '.join(COLUMN_TYPES)}")
        policy = None
        if "policy" in entry.table:
            policy = parse_policy(entry.table["policy"], f"{reader.source}: datasets.{dataset_id}.policy")
        missing = entry.table.get("missing", "refuse")
        if missing not in MISSING_CHOICES:
            raise entry.fail("missing", f"must be one of {', '.join(MISSING_CHOICES)}")
        database = None
        if entry.table.get("format") == "postgres" or "table" in entry.table \
                or "query" in entry.table:
            database = _postgres(entry)
            path, file_format, delimiter = None, "postgres", ","
        else:
            for key in ("connection_env", "connection_file"):
                if key in entry.table:
                    raise entry.fail(key, "is for a PostgreSQL dataset (table or query)")
            path = entry.path("path")
            file_format = entry.table.get("format", format_of(path))
            if file_format not in FORMATS:
                raise entry.fail("format", f"must be one of {', '.join(FORMATS)}")
            delimiter = entry.table.get("delimiter", ",")
            if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
                raise entry.fail("delimiter", "must be one character (not a quote or line break)")
        out[dataset_id] = DatasetConfig(dataset_id, path, dict(columns.table), policy, missing,
                                        file_format, delimiter, database)
    return out


def _postgres(entry: TomlReader) -> PostgresSource:
    """A PostgreSQL dataset's table or query and where its connection string is."""
    for key in ("path", "delimiter"):
        if key in entry.table:
            raise entry.fail(key, "is for a file: a PostgreSQL dataset has a table or a query")
    if entry.table.get("format", "postgres") != "postgres":
        raise entry.fail("format", "must be \"postgres\" for a table or a query")
    if ("table" in entry.table) == ("query" in entry.table):
        raise entry.fail("table", "a PostgreSQL dataset needs one of table and query")
    if ("connection_env" in entry.table) == ("connection_file" in entry.table):
        raise entry.fail("connection_env", "a PostgreSQL dataset needs one of connection_env "
                         "and connection_file")
    table = entry.string("table") if "table" in entry.table else None
    if table is not None and not all(part.strip() for part in table.split(".", 1)):
        raise entry.fail("table", "must be a table name, or schema.name")
    return PostgresSource(
        table=table,
        query=entry.string("query") if "query" in entry.table else None,
        connection_env=entry.string("connection_env") if "connection_env" in entry.table
        else None,
        connection_file=entry.path("connection_file") if "connection_file" in entry.table
        else None)


def _ledger(root: TomlReader, party_id: str, tls: TlsFiles) -> LedgerConfig:
    table = root.table_at("ledger", required=False).only("path", "signing_key", "store")
    path = (table.path("path") if "path" in table.table
            else root.source.parent / f"{party_id}-ledger.sqlite")
    key = (table.path("signing_key") if "signing_key" in table.table
           else tls.key.parent / f"{party_id}-ledger.key")
    store = table.table.get("store", "sqlite")
    if store not in ("sqlite", "none"):
        raise table.fail("store", "must be 'sqlite' or 'none'")
    return LedgerConfig(path, key, store)


def _nodes(root: TomlReader, party: TomlReader,
           party_id: str) -> tuple[dict[str, str], dict[str, str], str]:
    """Peers, dealers and listen address: from the address book, or from the file itself."""
    book = read_address_book(root, party, ("peers", "dealers"))
    if book is None:
        peers = root.table_at("peers", required=False).addresses()
        dealers = root.table_at("dealers", required=False).addresses()
        if party_id in peers or party_id in dealers:
            raise ConfigError(f"{root.source}: peers names the party itself ('{party_id}')")
        if set(peers) & set(dealers):
            raise ConfigError(f"{root.source}: an id is both a peer and a dealer")
        return peers, dealers, party.string("listen")
    own = book.address(party_id)
    if own is None:
        raise party.fail("id", f"'{party_id}' is in neither [parties] nor [dealers] of the "
                         f"address book {book.source}")
    peers = {p: a for p, a in book.parties.items() if p != party_id}
    dealers = {d: a for d, a in book.dealers.items() if d != party_id}
    return peers, dealers, party.string("listen") if "listen" in party.table else own


def _metrics(table: TomlReader) -> tuple[str | None, MetricsTls | None]:
    """The metrics endpoint's address (a port alone means loopback) and its TLS files."""
    tls = None
    if ("cert" in table.table) != ("key" in table.table):
        raise table.fail("cert", "HTTPS needs both cert and key")
    if "cert" in table.table:
        tls = MetricsTls(table.path("cert"), table.path("key"),
                         table.path("client_ca") if "client_ca" in table.table else None)
    elif "client_ca" in table.table:
        raise table.fail("client_ca", "requires cert and key (client certificates need HTTPS)")
    if "listen" not in table.table:
        if table.table:
            raise table.fail("listen", "is missing")
        return None, None
    value = table.table["listen"]
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise table.fail("listen", "must be a port, or host:port")
    listen = f"127.0.0.1:{value}" if value.isdigit() else value
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise table.fail("listen", "must be a port, or host:port")
    return listen, tls


def load_party_config(path: Path | str) -> PartyConfig:
    source = Path(path).resolve()
    root = TomlReader(source, load_toml(source), "").only(*PARTY_TABLES)
    party = root.table_at("party").only("id", "listen", "federation", "results_dir")
    party_id = check_party_id(party.string("id"))
    peers, dealers, listen = _nodes(root, party, party_id)
    tls = read_tls(root)
    metrics = root.table_at("metrics", required=False).only("listen", "cert", "key",
                                                            "client_ca")
    metrics_listen, metrics_tls = _metrics(metrics)
    datasets, ledger = _datasets(root), _ledger(root, party_id, tls)
    budgeted = [d.dataset_id for d in datasets.values() if d.policy is not None and (
        d.policy.rho_per_day is not None or d.policy.rho_total is not None
        or any(r.rho_per_day is not None or r.rho_total is not None for r in d.policy.allow))]
    if budgeted and ledger.store == "none":
        raise ConfigError(f"{source}: [ledger] store = \"none\" records nothing, so it cannot "
                          f"keep the privacy budgets of dataset(s) {', '.join(budgeted)}")
    return PartyConfig(
        source=source, party_id=party_id, listen=listen, tls=tls,
        peers=peers, dealers=dealers, limits=read_limits(root), datasets=datasets,
        results_dir=party.path("results_dir") if "results_dir" in party.table
        else source.parent / f"{party_id}-results",
        ledger=ledger,
        metrics_listen=metrics_listen, metrics_tls=metrics_tls,
        node_policy=parse_node_policy(root.table["policy"], f"{source}: policy")
        if "policy" in root.table else None,
    )
