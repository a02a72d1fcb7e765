"""Datasets read where institutions keep them: CSV (gzip, delimiters, a byte-order mark,
quoted fields) and Parquet, typed columns, missing values refused or dropped, and errors
that name the column and never a value. Known answers against pandas."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from invisible.errors import ConfigError
from invisible.node.config import DatasetConfig, load_party_config
from invisible.node.datasets import load_dataset

TYPED = {"id": "int", "amount": "float", "name": "str", "active": "bool", "opened": "date"}
TEXT = ('id;amount;name;active;opened\n'
        '1;2.5;"Smith; John";true;2024-01-31\n'
        '2;-1e3;"say ""hi""";false;2023-12-01\n')


def check_typed(dataset) -> None:
    assert dataset.column("id").tolist() == [1, 2] and dataset.column("id").dtype == np.int64
    assert dataset.column("amount").tolist() == [2.5, -1000.0]
    assert dataset.column("name").tolist() == ["Smith; John", 'say "hi"']
    assert dataset.column("active").tolist() == [True, False]
    assert dataset.column("opened").dtype == np.dtype("datetime64[D]")
    assert dataset.column("opened").astype(str).tolist() == ["2024-01-31", "2023-12-01"]


@pytest.mark.parametrize("packing", ["plain", "bom", "gzip", "gzip+bom"])
def test_a_csv_with_any_delimiter_quotes_a_bom_or_gzip_reads_typed(tmp_path, packing):
    data = ("\ufeff" if "bom" in packing else "") + TEXT
    path = tmp_path / ("t.csv.gz" if "gzip" in packing else "t.csv")
    raw = data.encode()
    path.write_bytes(gzip.compress(raw) if "gzip" in packing else raw)
    check_typed(load_dataset(DatasetConfig("t", path, TYPED, delimiter=";")))


def test_a_parquet_file_reads_its_declared_columns_cast_to_their_types(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({
        "id": pa.array([1, 2], pa.int32()), "amount": pa.array([2.5, -1000.0], pa.float32()),
        "name": ["Smith; John", 'say "hi"'], "active": [True, False],
        "opened": pa.array([19753, 19692], pa.date32()), "other": ["x", "y"]}), path)
    config = DatasetConfig("t", path, TYPED, format="parquet")
    check_typed(load_dataset(config))
    with pytest.raises(ConfigError, match="t.parquet has no column 'balance'"):
        load_dataset(DatasetConfig("t", path, {"balance": "float"}, format="parquet"))
    with pytest.raises(ConfigError, match="column 'name' of .*t.parquet holds a value that is "
                                          "not int") as refused:
        load_dataset(DatasetConfig("t", path, {"name": "int"}, format="parquet"))
    assert "Smith" not in str(refused.value)
    (tmp_path / "fake.parquet").write_text("id\n1\n")
    with pytest.raises(ConfigError, match="fake.parquet is not a Parquet file"):
        load_dataset(DatasetConfig("t", tmp_path / "fake.parquet", {"id": "int"},
                                   format="parquet"))


@pytest.mark.parametrize(("column", "kind", "secret"), [
    ("a", "int", "12x-secret"), ("a", "float", "1.2.3-secret"), ("a", "bool", "maybe-secret"),
    ("a", "date", "2024-13-45-secret"),
])
def test_a_value_of_another_type_is_named_by_column_and_never_shown(tmp_path, column, kind,
                                                                    secret):
    path = tmp_path / "t.csv"
    path.write_text(f"id,a\n1,\n2,{secret}\n")
    with pytest.raises(ConfigError) as refused:
        load_dataset(DatasetConfig("t", path, {"id": "int", column: kind}))
    assert str(refused.value) == (f"dataset 't': column 'a' of {path} holds a value that is "
                                  f"not {kind}")
    assert "secret" not in str(refused.value)


def test_a_ragged_row_is_named_by_its_line_without_its_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,a\n1,2\n2,3\n3,4,secret-9\n")
    with pytest.raises(ConfigError) as refused:
        load_dataset(DatasetConfig("t", path, {"a": "int"}))
    assert str(refused.value) == f"dataset 't': {path} line 4 has 3 fields, the header has 2"
    path.write_text("")
    with pytest.raises(ConfigError, match="t.csv is empty"):
        load_dataset(DatasetConfig("t", path, {"a": "int"}))


@pytest.mark.parametrize("kind", ["int", "float", "bool", "date"])
def test_a_missing_value_refuses_the_dataset_or_drops_its_row(tmp_path, kind):
    value = {"int": "7", "float": "7.5", "bool": "true", "date": "2024-01-01"}[kind]
    path = tmp_path / "t.csv"
    path.write_text(f"id,a,s\n1,{value},x\n2,,\n3,NA,z\n4,{value},\n")
    columns = {"id": "int", "a": kind, "s": "str"}
    with pytest.raises(ConfigError, match="column 'a' of .* has missing or non-finite values"):
        load_dataset(DatasetConfig("t", path, columns))
    kept = load_dataset(DatasetConfig("t", path, columns, missing="drop"))
    assert kept.column("id").tolist() == [1, 4]
    assert kept.column("s").tolist() == ["x", ""]  # an empty text is a value, not missing


def test_a_random_csv_reads_as_pandas_reads_it(tmp_path):
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"i": rng.integers(-10**12, 10**12, 5000),
                          "f": rng.normal(size=5000) * 10.0 ** rng.integers(-8, 8, 5000),
                          "s": rng.choice(["a", "b,c", 'q"uote', "é"], 5000)})
    path = tmp_path / "r.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(DatasetConfig("r", path, {"i": "int", "f": "float", "s": "str"}))
    back = pd.read_csv(path, keep_default_na=False)
    assert np.array_equal(dataset.column("i"), back["i"].to_numpy())
    assert np.array_equal(dataset.column("f"), back["f"].to_numpy())
    assert dataset.column("s").tolist() == back["s"].tolist()


def test_format_and_delimiter_in_a_party_s_toml(tmp_path):
    base = ('[party]\nid = "bank"\nlisten = "127.0.0.1:1"\n[tls]\nca="a"\ncert="b"\nkey="c"\n'
            '[datasets.d]\ncolumns = { a = "int" }\n')
    (tmp_path / "ok.toml").write_text(base + 'path = "d.pq"\n')
    assert load_party_config(tmp_path / "ok.toml").datasets["d"].format == "parquet"
    (tmp_path / "semi.toml").write_text(base + 'path = "d.txt"\ndelimiter = ";"\n')
    loaded = load_party_config(tmp_path / "semi.toml").datasets["d"]
    assert (loaded.format, loaded.delimiter) == ("csv", ";")
    for extra, problem in (('path = "d.csv"\nformat = "xlsx"\n', "format must be one of csv, "
                            "parquet"),
                           ('path = "d.csv"\ndelimiter = ";;"\n', "delimiter must be one "
                            "character")):
        (tmp_path / "bad.toml").write_text(base + extra)
        with pytest.raises(ConfigError, match=problem):
            load_party_config(tmp_path / "bad.toml")


def test_columns_grow_and_shrink_across_many_batches_in_either_format(tmp_path, monkeypatch):
    """Small blocks and a file size that says little of the rows: the arrays must grow
    (Parquet compresses a run of zeros to almost nothing) and be cut to the rows read."""
    from invisible.node import sources

    monkeypatch.setattr(sources, "BLOCK_BYTES", 1 << 14)
    rows = 150_000
    frame = pd.DataFrame({"z": np.zeros(rows, dtype=np.int64), "i": np.arange(rows),
                          "f": np.arange(rows) / 7, "s": np.arange(rows).astype(str)})
    frame.to_csv(tmp_path / "g.csv", index=False)
    frame.to_parquet(tmp_path / "g.parquet", index=False)
    columns = {"z": "int", "i": "int", "f": "float", "s": "str"}
    for name in ("g.csv", "g.parquet"):
        dataset = load_dataset(DatasetConfig("g", tmp_path / name, columns,
                                             format="parquet" if "parquet" in name else "csv"))
        assert dataset.rows == rows
        assert np.array_equal(dataset.column("i"), frame["i"].to_numpy())
        assert np.allclose(dataset.column("f"), frame["f"].to_numpy(), rtol=1e-15)
        assert dataset.column("s").tolist() == frame["s"].tolist()
