"""Reading a dataset where its institution keeps it: CSV and Parquet files, with pyarrow.

CSV: gzip (by the `.gz` suffix), any one-character delimiter, a UTF-8 byte-order mark,
quoted fields; Parquet: its own types, cast to the declared ones. Only the declared
columns are read, each converted in pyarrow's C++ (no Python loop over rows) to its
declared type:

    int -> int64, float -> float64, str (or string) -> text, bool -> bool, date -> day

A value missing (empty, or a null marker such as `NA`) or, for a float, not finite is
missing; text is never missing (an empty string is a value). What happens to rows with a
missing value is the dataset's `missing` rule, applied by the caller.

Errors name the dataset, the file, the column and what is wrong, never a value: pyarrow's
own messages quote the offending field, so they are replaced, not passed on.
"""

from __future__ import annotations

import csv
import gzip
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

ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(),
               "string": pa.string(), "bool": pa.bool_(), "date": pa.date32()}
NUMPY_TYPES: dict[str, np.dtype] = {
    "int": np.dtype(np.int64), "float": np.dtype(np.float64), "str": np.dtype(np.str_),
    "string": np.dtype(np.str_), "bool": np.dtype(np.bool_), "date": np.dtype("datetime64[D]")}
@dataclass(frozen=True)
class Source:
    """Where and how a dataset is read (from its `[datasets.<id>]` table)."""

    dataset_id: str
    path: Path
    columns: dict[str, str]
    format: str = "csv"
    delimiter: str = ","

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(f"dataset '{self.dataset_id}': {problem}")


def read_columns(source: Source) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each declared column as (values, present): numpy arrays, in declared order."""
    if not source.path.exists():
        raise source.fail(f"file not found: {source.path}")
    if source.format == "parquet":
        batches, size = _parquet_batches(source), source.path.stat().st_size
    else:
        batches, size = _csv_batches(source), source.path.stat().st_size
    columns = _Columns(source, size)
    for batch in batches:
        columns.add(batch)
    return columns.finish()


#: Bytes of CSV text pyarrow parses at a time: the peak holds one such block in flight per
#: core besides the columns themselves.
BLOCK_BYTES = 1 << 22


class _Columns:
    """Numpy columns filled batch by batch: numbers, bools and dates straight into arrays
    that grow by half when full (sized from the first batch and the file's size), text
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
            source.path, read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
            parse_options=pcsv.ParseOptions(delimiter=source.delimiter,
                                            invalid_row_handler=refuse),
            convert_options=pcsv.ConvertOptions(
                include_columns=list(source.columns),
                column_types={c: ARROW_TYPES[t] for c, t in source.columns.items()}),
            memory_pool=pa.system_memory_pool())
        yield from reader
    except pa.ArrowInvalid as exc:
        raise _csv_problem(source, header, str(exc), bad_rows) from None
    except OSError as exc:
        raise source.fail(f"file unreadable: {source.path} ({exc})") from None


def _header(source: Source) -> list[str]:
    """The CSV's column names, from its first block alone."""
    try:
        reader = pcsv.open_csv(
            source.path, read_options=pcsv.ReadOptions(block_size=1 << 16),
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
    opener = gzip.open if source.path.suffix.lower() == ".gz" else open
    with opener(source.path, "rt", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=source.delimiter)
        for row in reader:
            if len(row) != width:
                return reader.line_num, len(row)
    return -1, -1


def _parquet_batches(source: Source) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowInvalid, OSError):
        raise source.fail(f"{source.path} is not a Parquet file") from None
    names = parquet.schema_arrow.names
    missing = [c for c in source.columns if c not in names]
    if missing:
        raise source.fail(f"{source.path} has no column {', '.join(repr(c) for c in missing)}")
    for batch in parquet.iter_batches(columns=list(source.columns)):
        cast = []
        for name, kind in source.columns.items():
            try:
                cast.append(batch.column(name).cast(ARROW_TYPES[kind]))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise source.fail(f"column '{name}' of {source.path} holds a value that is "
                                  f"not {kind}") from None
        yield pa.RecordBatch.from_arrays(cast, names=list(source.columns))


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
