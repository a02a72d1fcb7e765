"""Reading a dataset where its institution keeps it: CSV and Parquet files with pyarrow, a
PostgreSQL table or query with ADBC.

CSV: gzip (by the `.gz` suffix), any one-character delimiter, a UTF-8 byte-order mark,
quoted fields; Parquet: its own types, cast to the declared ones. PostgreSQL: the ADBC
driver (the Arrow project's, libpq inside) streams the rows as Arrow batches (COPY in
binary, parsed in C); the session is read-only, so a query that would write fails, and the
query is one statement. Only the declared columns are read, each converted in pyarrow's
C++ (no Python loop over rows) to its declared type:

    int -> int64, float -> float64, str (or string) -> text, bool -> bool, date -> day

A value missing (empty, or a null marker such as `NA`) or, for a float, not finite is
missing; text is never missing (an empty string is a value). What happens to rows with a
missing value is the dataset's `missing` rule, applied by the caller.

Errors name the dataset, the file or table, the column and what is wrong, never a value:
pyarrow's and PostgreSQL's own messages may quote the offending field, so they are replaced,
not passed on (a PostgreSQL error is told by its SQLSTATE). The connection string, and the
password in it, appear nowhere: an error names the variable or file it came from.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from invisible.errors import ConfigError
from invisible.node.config import PostgresSource

ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(),
               "string": pa.string(), "bool": pa.bool_(), "date": pa.date32()}
NUMPY_TYPES: dict[str, np.dtype] = {
    "int": np.dtype(np.int64), "float": np.dtype(np.float64), "str": np.dtype(np.str_),
    "string": np.dtype(np.str_), "bool": np.dtype(np.bool_), "date": np.dtype("datetime64[D]")}
@dataclass(frozen=True)
class Source:
    """Where and how a dataset is read (from its `[datasets.<id>]` table)."""

    dataset_id: str
    path: Path | None
    columns: dict[str, str]
    format: str = "csv"
    delimiter: str = ","
    database: PostgresSource | None = None

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(f"dataset '{self.dataset_id}': {problem}")

    @property
    def file(self) -> Path:
        if self.path is None:
            raise self.fail("has no file")
        return self.path


def read_columns(source: Source) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each declared column as (values, present): numpy arrays, in declared order."""
    if source.database is not None:
        batches, size = _postgres_batches(source, source.database), 0
    elif not source.file.exists():
        raise source.fail(f"file not found: {source.path}")
    elif source.format == "parquet":
        batches, size = _parquet_batches(source), source.file.stat().st_size
    else:
        batches, size = _csv_batches(source), source.file.stat().st_size
    columns = _Columns(source, size)
    for batch in batches:
        columns.add(batch)
    return columns.finish()


def _memory_pool() -> pa.MemoryPool:
    """pyarrow's mimalloc pool where it is built in, which hands freed blocks back as it
    goes. Peak resident memory loading a 2,000,000 x 10 CSV (153 MB of columns), above the
    imports: glibc malloc (pyarrow's system pool) 339-365 MB, jemalloc 318 MB, mimalloc
    271-286 MB (three runs, a busy machine; memory does not depend on the load)."""
    try:
        return pa.mimalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()


#: Bytes of CSV text pyarrow parses at a time: the peak holds the blocks in flight besides
#: the columns. Peak above the imports for 2M x 10 (153 MB of columns), three fresh
#: processes each: 4 MiB blocks 329-339 MB, 1 MiB 230-236 MB, 512 KiB 213-230 MB, at the
#: same speed (medians 1.19, 1.23, 1.21 s; the spread of one setting is wider than that).
BLOCK_BYTES = 1 << 19


class _Columns:
    """Numpy columns filled batch by batch: numbers, bools and dates straight into arrays
    that grow by half when full (sized from the first batch and the file's size, if there
    is a file), text
    collected and joined at the end. The peak stays near the columns' own size, not twice
    it as when a whole Arrow table is converted at once."""

    def __init__(self, source: Source, file_bytes: int) -> None:
        self.source, self.file_bytes, self.rows = source, file_bytes, 0
        self.values: dict[str, np.ndarray] = {}
        self.present: dict[str, np.ndarray] = {}
        self.texts: dict[str, list[np.ndarray]] = {}

    def _reserve(self, rows: int, batch_bytes: int) -> None:
        capacity = next(iter(self.present.values())).size if self.present else 0
        if self.rows + rows <= capacity:
            return
        if not self.present:  # first batch: rows per byte of it, times the file's bytes
            # (a table's batches: just grow)
            guess = int(rows * self.file_bytes / max(1, batch_bytes) * 1.05) + 1
            capacity = max(rows, guess)
        else:
            capacity = max(self.rows + rows, capacity + capacity // 2)
        for name, kind in self.source.columns.items():
            if kind in ("str", "string"):
                self.texts.setdefault(name, [])
            elif name in self.values:
                self.values[name].resize(capacity, refcheck=False)
            else:
                self.values[name] = np.empty(capacity, dtype=NUMPY_TYPES[kind])
        for name in self.source.columns:
            if name in self.present:
                self.present[name].resize(capacity, refcheck=False)
            else:
                self.present[name] = np.empty(capacity, dtype=bool)

    def add(self, batch: pa.RecordBatch) -> None:
        rows = batch.num_rows
        if rows == 0:
            return
        self._reserve(rows, batch.nbytes)
        at = slice(self.rows, self.rows + rows)
        for name, kind in self.source.columns.items():
            values, present = _column(kind, batch.column(name))
            self.present[name][at] = present
            if kind in ("str", "string"):
                self.texts[name].append(values)
            else:
                self.values[name][at] = values
        self.rows += rows

    def finish(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for name, kind in self.source.columns.items():
            present = self.present.pop(name, np.empty(0, dtype=bool))
            present.resize(self.rows, refcheck=False)
            if kind in ("str", "string"):
                parts = self.texts.pop(name, [])
                values = np.concatenate(parts) if parts else np.empty(0, dtype=np.str_)
            else:
                values = self.values.pop(name, np.empty(0, dtype=NUMPY_TYPES[kind]))
                values.resize(self.rows, refcheck=False)
            out[name] = (values, present)
        return out


def _csv_batches(source: Source) -> Iterator[pa.RecordBatch]:
    header = _header(source)
    missing = [c for c in source.columns if c not in header]
    if missing:
        raise source.fail(f"{source.path} has no column {', '.join(repr(c) for c in missing)}")
    bad_rows: list[int] = []

    def refuse(row: pcsv.InvalidRow) -> str:
        bad_rows.append(row.actual_columns)
        return "error"

    try:
        reader = pcsv.open_csv(
            source.file, read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
            parse_options=pcsv.ParseOptions(delimiter=source.delimiter,
                                            invalid_row_handler=refuse),
            convert_options=pcsv.ConvertOptions(
                include_columns=list(source.columns),
                column_types={c: ARROW_TYPES[t] for c, t in source.columns.items()}),
            memory_pool=_memory_pool())
        yield from reader
    except pa.ArrowInvalid as exc:
        raise _csv_problem(source, header, str(exc), bad_rows) from None
    except OSError as exc:
        raise source.fail(f"file unreadable: {source.path} ({exc})") from None


def _header(source: Source) -> list[str]:
    """The CSV's column names, from its first block alone."""
    try:
        reader = pcsv.open_csv(
            source.file, read_options=pcsv.ReadOptions(block_size=1 << 16),
            parse_options=pcsv.ParseOptions(delimiter=source.delimiter,
                                            invalid_row_handler=lambda row: "skip"))
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise source.fail(f"{source.path} is empty") from None
        raise source.fail(f"{source.path} is not a CSV file pyarrow can read") from None
    except OSError as exc:
        raise source.fail(f"file unreadable: {source.path} ({exc})") from None
    names = [str(name) for name in reader.schema.names]
    reader.close()
    return names


def _csv_problem(source: Source, header: list[str], message: str,
                 bad_rows: list[int]) -> ConfigError:
    """pyarrow's error, told without the values it quotes."""
    if bad_rows:
        line, fields = _first_ragged_line(source, len(header))
        return source.fail(f"{source.path} line {line} has {fields} fields, the header has "
                           f"{len(header)}")
    found = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+)",
                      message)
    if found:
        index = int(found.group(1))
        name = header[index] if index < len(header) else f"#{index}"
        kind = source.columns.get(name, found.group(2))
        return source.fail(f"column '{name}' of {source.path} holds a value that is not {kind}")
    return source.fail(f"{source.path} is not a CSV file pyarrow can read")


def _first_ragged_line(source: Source, width: int) -> tuple[int, int]:
    """The first line whose field count is not the header's, and its count (the error path
    only: pyarrow does not number the rows it reads in parallel)."""
    opener = gzip.open if source.file.suffix.lower() == ".gz" else open
    with opener(source.file, "rt", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=source.delimiter)
        for row in reader:
            if len(row) != width:
                return reader.line_num, len(row)
    return -1, -1


def _parquet_batches(source: Source) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(source.file)
    except (pa.ArrowInvalid, OSError):
        raise source.fail(f"{source.path} is not a Parquet file") from None
    names = parquet.schema_arrow.names
    missing = [c for c in source.columns if c not in names]
    if missing:
        raise source.fail(f"{source.path} has no column {', '.join(repr(c) for c in missing)}")
    for batch in parquet.iter_batches(columns=list(source.columns)):
        yield _cast(source, batch, str(source.path))


def _cast(source: Source, batch: pa.RecordBatch, where: str) -> pa.RecordBatch:
    """A batch with the declared columns, each cast to its declared type (PostgreSQL's
    numeric arrives as its text, which casts to a float)."""
    cast = []
    for name, kind in source.columns.items():
        column = batch.column(name)
        if isinstance(column.type, pa.ExtensionType):
            column = column.storage
        try:
            cast.append(column.cast(ARROW_TYPES[kind]))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise source.fail(f"column '{name}' of {where} holds a value that is not "
                              f"{kind}") from None
    return pa.RecordBatch.from_arrays(cast, names=list(source.columns))


#: PostgreSQL errors (by SQLSTATE) told in words; others by their SQLSTATE alone.
_SQLSTATES = {
    "42P01": "names a table that does not exist",
    "3F000": "names a schema that does not exist",
    "42501": "may not be read by the connection's role",
    "25006": "would write (datasets are read in a read-only session)",
    "0A000": "is not allowed as a subquery (a data-modifying WITH, for one)",
    "42601": "is not one valid SQL statement",
    "42883": "calls a function that does not exist",
    "57014": "was cancelled (statement timeout)",
}


def _postgres_batches(source: Source, database: PostgresSource) -> Iterator[pa.RecordBatch]:
    """The declared columns of a PostgreSQL table or query, as Arrow batches, read in a
    read-only session (`SELECT <columns> FROM <table>` or `... FROM (<query>) AS source`)."""
    try:
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        raise source.fail("a PostgreSQL dataset needs the adbc-driver-postgresql package: "
                          "pip install 'invisible[postgres]'") from None
    dsn, origin = _connection_string(source, database)
    where = database.describe()
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")  # libpq's default is to wait forever
    try:
        connection = adbc.connect(dsn, autocommit=True)
    except adbc_driver_manager.Error as exc:
        raise source.fail(f"cannot connect to PostgreSQL with the connection string of "
                          f"{origin}: {_connect_problem(str(exc))}") from None
    del dsn
    names = ", ".join(_identifier(c) for c in source.columns)
    relation = (".".join(_identifier(p) for p in database.table.split(".", 1))
                if database.table is not None
                else f"({(database.query or '').strip().rstrip(';')}) AS source")
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            try:
                # identifiers quoted; a query is the operator's own, run read-only
                cursor.execute(f"SELECT {names} FROM {relation}")  # noqa: S608
            except adbc_driver_manager.Error as exc:
                if getattr(exc, "sqlstate", None) == "42703":  # a declared column is not there
                    cursor.execute(f"SELECT * FROM {relation} LIMIT 0")  # noqa: S608
                    found = set(cursor.fetch_arrow_table().schema.names)
                    missing = [c for c in source.columns if c not in found]
                    raise source.fail(f"{where} has no column "
                                      f"{', '.join(repr(c) for c in missing)}") from None
                raise
            try:
                for batch in cursor.fetch_record_batch():
                    yield _cast(source, batch, where)
            except (pa.ArrowException, OSError) as exc:  # the server's error, met streaming
                told = ("would write (datasets are read in a read-only session)"
                        if "read-only transaction" in str(exc) else
                        "failed while its rows were read (PostgreSQL's message is not shown: "
                        "it may quote a value)")
                raise source.fail(f"{where} {told}") from None
    except adbc_driver_manager.Error as exc:
        state = getattr(exc, "sqlstate", None) or "unknown"
        told = _SQLSTATES.get(state) or (
            "hits a value that cannot be computed or converted" if state.startswith("22")
            else "was refused by PostgreSQL")
        raise source.fail(f"{where} {told} (SQLSTATE {state})") from None


def _connection_string(source: Source, database: PostgresSource) -> tuple[str, str]:
    """The connection string, and where it came from (for messages: never the string)."""
    if database.connection_env is not None:
        origin = f"environment variable {database.connection_env}"
        dsn = os.environ.get(database.connection_env, "").strip()
        if not dsn:
            raise source.fail(f"{origin} is not set (it holds the connection string)")
        return dsn, origin
    path = database.connection_file
    assert path is not None  # the config requires one of the two
    origin = f"file {path}"
    try:
        if path.stat().st_mode & 0o077:
            raise source.fail(f"{origin} may be read by group or others (it holds the "
                              "connection string): chmod 600 it")
        dsn = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise source.fail(f"{origin} cannot be read ({exc.strerror})") from None
    if not dsn:
        raise source.fail(f"{origin} is empty (it holds the connection string)")
    return dsn, origin


def _connect_problem(message: str) -> str:
    """What libpq said, in a few words: its message is not passed on whole."""
    lowered = message.lower()
    for clue, told in (("password", "authentication failed"),
                       ("authentication", "authentication failed"),
                       ("does not exist", "the database or role does not exist"),
                       ("timeout", "no answer before the connect timeout"),
                       ("connection refused", "connection refused"),
                       ("could not translate host name", "unknown host name"),
                       ("no such file", "no server at that socket"),
                       ("invalid", "the connection string is not valid"),
                       ("missing", "the connection string is not valid")):
        if clue in lowered:
            return told
    return "libpq could not connect"


def _identifier(name: str) -> str:
    """A quoted SQL identifier (a column or table name from the config)."""
    return '"' + name.replace('"', '""') + '"'


def _column(kind: str, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A batch's column as numpy values and which hold one (text: every row)."""
    if kind in ("str", "string"):
        text = values.fill_null("").to_numpy(zero_copy_only=False)
        return text.astype(np.str_), np.ones(len(text), dtype=bool)
    present = values.is_valid().to_numpy(zero_copy_only=False)
    filled = values.fill_null(_FILLERS[kind])
    if kind == "float":
        present &= pc.is_finite(filled).to_numpy(zero_copy_only=False)
    return filled.to_numpy(zero_copy_only=False), present


_FILLERS = {"int": 0, "float": 0.0, "bool": False,
            "date": pa.scalar(0, type=pa.date32())}
