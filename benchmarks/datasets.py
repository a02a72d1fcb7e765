"""Benchmark `datasets`: loading a node's dataset, against pandas on the same file.

A table of 2,000,000 rows and 10 columns (--quick: 200,000): 5 int64 and 5
float64 columns of random values, written once as CSV and as Parquet, and loaded
into a PostgreSQL table of a server the benchmark starts (`pgserver`, a real
PostgreSQL from PyPI, over its Unix socket).

Rows:
- `seconds` (lower is better): `invisible.node.datasets.load_dataset` of the
  CSV (typed columns, the missing-value check), against `pandas` (its C
  parser, `read_csv` with the same dtypes), each the median of five runs after
  a warm-up, each run in a fresh process (so no run finds the file's pages
  parsed by another); and the same for the Parquet file (`pandas`:
  `read_parquet`); and the same for the PostgreSQL table (ours: ADBC's Arrow
  batches; `pandas`: `read_sql` of the same SELECT over an ADBC connection,
  what pandas' documentation recommends; without a server, no such row).
- `MB` (lower is better): the peak resident memory (VmHWM) of the process that
  loaded the file, minus that of a process that only imported the same
  modules; the note gives the loaded columns' own size (8 bytes a value).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from invisible.benchmarking import Row, Timing, timing_of

REPEATS = 5
COLUMNS = {**{f"i{k}": "int" for k in range(5)}, **{f"f{k}": "float" for k in range(5)}}

_LOAD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    which, path, fmt, load = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
    columns = json.loads(sys.argv[5])
    import numpy as np, pandas as pd
    from invisible.node.config import DatasetConfig, PostgresSource
    from invisible.node.datasets import load_dataset
    import pyarrow.csv, pyarrow.parquet
    if fmt == "postgres":
        import adbc_driver_postgresql.dbapi as adbc
    started = time.perf_counter()
    if load and which == "ours":
        source = PostgresSource(table="t", connection_env="BENCH_PG")
        dataset = load_dataset(
            DatasetConfig("d", None, columns, format=fmt, database=source)
            if fmt == "postgres" else DatasetConfig("d", path, columns, format=fmt))
        rows = dataset.rows
    elif load and fmt == "postgres":
        with adbc.connect(sys.argv[2]) as connection:  # the URI (not a path)
            frame = pd.read_sql("SELECT " + ", ".join(columns) + " FROM t", connection)
        rows = len(frame)
    elif load:
        dtypes = {c: np.int64 if t == "int" else np.float64 for c, t in columns.items()}
        frame = (pd.read_csv(path, dtype=dtypes, usecols=list(columns)) if fmt == "csv"
                 else pd.read_parquet(path, columns=list(columns)))
        rows = len(frame)
    else:
        rows = 0
    seconds = time.perf_counter() - started
    peak = next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "peak_kb": peak, "rows": rows}))
""")


def _run(which: str, path: Path | str, fmt: str, load: bool = True) -> dict:
    """One load in a fresh process; `path` is the server's URI for PostgreSQL (handed to
    ours in an environment variable, as a node's config asks)."""
    env = {**os.environ, "BENCH_PG": str(path)} if fmt == "postgres" else None
    done = subprocess.run([sys.executable, "-c", _LOAD, which, str(path), fmt,
                           "1" if load else "0", json.dumps(COLUMNS)],
                          capture_output=True, text=True, timeout=600, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(which: str, path: Path | str, fmt: str, rows: int) -> tuple[Timing, float]:
    """The load's timing (fresh processes, the first unmeasured) and its peak MB above a
    process that only imported the modules."""
    runs = [_run(which, path, fmt) for _ in range(REPEATS + 1)][1:]
    if any(r["rows"] != rows for r in runs):
        raise RuntimeError(f"{which} loaded another number of rows than {rows}")
    baseline = _run(which, path, fmt, load=False)["peak_kb"]
    peak = float(np.median([r["peak_kb"] for r in runs]))
    return timing_of([r["seconds"] for r in runs]), (peak - baseline) / 1024


def run(quick: bool) -> list[Row]:
    rows = 200_000 if quick else 2_000_000
    rng = np.random.default_rng(0)  # benchmark data, not secret
    frame = pd.DataFrame({c: rng.integers(-10**9, 10**9, rows) if t == "int"
                          else rng.normal(size=rows) * 1000 for c, t in COLUMNS.items()})
    size_mb = rows * len(COLUMNS) * 8 / 2**20
    out: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="invisible-bench-") as folder, \
            contextlib.ExitStack() as stack:
        files: dict[str, Path | str] = {"csv": Path(folder) / "t.csv",
                                        "parquet": Path(folder) / "t.parquet"}
        frame.to_csv(files["csv"], index=False)
        frame.to_parquet(files["parquet"], index=False)
        uri = stack.enter_context(_postgres(frame))
        if uri is not None:
            files["postgres"] = uri
        del frame
        for fmt, path in files.items():
            ours, ours_mb = _measure("ours", path, fmt, rows)
            theirs, their_mb = _measure("pandas", path, fmt, rows)
            stored = (f"{path.stat().st_size / 2**20:.0f} MB file" if isinstance(path, Path)
                      else "a table of a local server, over its Unix socket")
            case = (f"{rows:,} rows x {len(COLUMNS)} columns (5 int, 5 float), {fmt} "
                    f"({stored})")
            out.append(Row(case, "seconds", "lower", ours.median, "pandas", theirs.median,
                           f"ours {ours.describe()}; pandas {theirs.describe()}",
                           timing=ours, peer_timing=theirs))
            out.append(Row(case, "MB", "lower", ours_mb, "pandas", their_mb,
                           f"peak resident memory of the loading process above one that only "
                           f"imported; the loaded columns are {size_mb:.0f} MB"))
    return out


@contextlib.contextmanager
def _postgres(frame: pd.DataFrame) -> Iterator[str | None]:
    """A PostgreSQL server of the benchmark's own holding `frame` as table t, and its URI;
    None where no server can start here (the PostgreSQL rows are then left out)."""
    try:
        import adbc_driver_postgresql.dbapi as adbc
        import pgserver
    except ImportError:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="invisible-bench-pg-") as folder:
        os.chmod(folder, 0o755)  # as root, pgserver runs the server as a user of its own
        server = pgserver.get_server(folder, cleanup_mode="delete")
        try:
            uri = server.get_uri()
            with adbc.connect(uri, autocommit=True) as connection, \
                    connection.cursor() as cursor:
                cursor.adbc_ingest("t", pa.Table.from_pandas(frame, preserve_index=False))
                cursor.execute("VACUUM ANALYZE t")
            yield uri
        finally:
            server.cleanup()
