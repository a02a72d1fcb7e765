"""Datasets read from a real PostgreSQL server: a table or a read-only query.

The server is PostgreSQL itself, started by the tests in a temporary folder (the `pgserver`
package carries its binaries, so `make test` needs nothing installed on the machine) and
removed after. Outside CI a server that cannot start skips these tests naming why; in CI
(`CI=true`) it fails them.

Guards invisible.node.sources' PostgreSQL path: typed columns equal to what was stored,
missing values refused naming the column or dropped, a query that would write refused by
the read-only session (and nothing written), one statement only, a missing table or
column named, and the connection string (with its password) in no error message, only the
variable or file it came from; and a node serving a PostgreSQL dataset in a secure sum over
gRPC with mTLS, with the same total as from the CSV file it was loaded from.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile

import numpy as np
import pytest

from invisible.errors import ConfigError
from invisible.node.config import DatasetConfig, PostgresSource, load_party_config
from invisible.node.datasets import load_dataset

PASSWORD = "pw-7f3a9c-never-shown"
pytestmark = pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL server of the tests' own, and its connection URI."""
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
        import pgserver
        folder = tempfile.mkdtemp(prefix="invisible-pg-")
        os.chmod(folder, 0o755)  # pgserver runs the server as its own user when we are root
        handle = pgserver.get_server(folder, cleanup_mode="delete")
    except Exception as exc:  # whatever stops the server, say what it was
        if os.environ.get("CI") == "true":
            pytest.fail(f"no PostgreSQL server for the tests ({type(exc).__name__}: {exc})")
        pytest.skip(f"no PostgreSQL server for the tests ({type(exc).__name__}: {exc})")
    try:
        yield handle.get_uri()
    finally:
        handle.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def sql(uri: str, *statements: str) -> list:
    import adbc_driver_postgresql.dbapi as adbc
    with adbc.connect(uri, autocommit=True) as connection, connection.cursor() as cursor:
        rows = []
        for statement in statements:
            cursor.execute(statement)
            if cursor.description:
                rows = cursor.fetchall()
        return rows


@pytest.fixture(scope="module")
def accounts(server):
    sql(server,
        "CREATE TABLE accounts (id text, balance numeric(12,2), score float8, age int4, "
        "visits int8, active boolean, opened date, seen timestamp, note text)",
        "INSERT INTO accounts VALUES "
        "('a', 10.50, 0.25, 30, 7, true, '2020-01-31', '2021-05-06 07:08:09', 'x'), "
        "('b', -2.25, 1e300, 41, 0, false, '1999-12-31', '1970-01-01 00:00:00', 'y'), "
        "('c', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        "CREATE SEQUENCE counter",
        "CREATE SCHEMA bank",
        "CREATE TABLE bank.big AS SELECT g AS id, g * 0.5 AS half FROM "
        "generate_series(1, 250000) AS g")
    return server


def config(source: PostgresSource, columns: dict[str, str], **options) -> DatasetConfig:
    return DatasetConfig("accounts", None, columns, format="postgres", database=source,
                         **options)


@pytest.fixture
def via_env(accounts, monkeypatch) -> PostgresSource:
    monkeypatch.setenv("TEST_PG", accounts)
    return PostgresSource(table="accounts", connection_env="TEST_PG")


def test_a_table_s_columns_arrive_typed_and_equal_to_what_was_stored(via_env):
    columns = {"id": "str", "balance": "float", "score": "float", "age": "int",
               "visits": "int", "active": "bool", "opened": "date", "seen": "date"}
    dataset = load_dataset(config(via_env, columns, missing="drop"))
    assert dataset.rows == 2 and dataset.origin == "PostgreSQL table accounts"
    assert dataset.column("id").tolist() == ["a", "b"]
    assert dataset.column("balance").tolist() == [10.5, -2.25]  # numeric, exactly
    assert dataset.column("score").tolist() == [0.25, 1e300]
    assert dataset.column("age").dtype == np.int64 and dataset.column("age").tolist() == [30, 41]
    assert dataset.column("visits").tolist() == [7, 0]
    assert dataset.column("active").tolist() == [True, False]
    assert dataset.column("opened").tolist() == [datetime.date(2020, 1, 31),
                                                 datetime.date(1999, 12, 31)]
    assert dataset.column("seen").tolist() == [datetime.date(2021, 5, 6),
                                               datetime.date(1970, 1, 1)]


@pytest.mark.parametrize("column", ["balance", "age", "active", "opened"])
def test_a_missing_value_is_refused_naming_the_column_or_dropped(via_env, column):
    kind = {"balance": "float", "age": "int", "active": "bool", "opened": "date"}[column]
    with pytest.raises(ConfigError, match=f"column '{column}' of PostgreSQL table accounts "
                                          "has missing"):
        load_dataset(config(via_env, {"id": "str", column: kind}))
    assert load_dataset(config(via_env, {"id": "str", column: kind}, missing="drop")).rows == 2
    # text is never missing: a NULL is an empty string, as an empty CSV field is
    assert load_dataset(config(via_env, {"note": "str"})).column("note").tolist() == \
        ["x", "y", ""]


def test_a_query_and_a_schema_qualified_table_read_their_rows_in_batches(accounts, monkeypatch):
    monkeypatch.setenv("TEST_PG", accounts)
    query = PostgresSource(query="SELECT id, half FROM bank.big WHERE id % 2 = 0;",
                           connection_env="TEST_PG")
    even = load_dataset(config(query, {"id": "int", "half": "float"}))
    assert even.rows == 125000
    np.testing.assert_array_equal(even.column("id"), np.arange(2, 250001, 2))
    np.testing.assert_array_equal(even.column("half"), np.arange(2, 250001, 2) * 0.5)
    table = PostgresSource(table="bank.big", connection_env="TEST_PG")
    assert load_dataset(config(table, {"half": "float"})).column("half").sum() == \
        np.arange(1, 250001).sum() * 0.5


@pytest.mark.parametrize("query, why", [
    ("WITH gone AS (DELETE FROM accounts RETURNING id) SELECT id FROM gone",
     "is not allowed as a subquery .a data-modifying WITH, for one. .SQLSTATE 0A000"),
    ("SELECT id || nextval('counter') AS id FROM accounts",
     "would write .datasets are read in a read-only session."),
    ("SELECT (1 / (length(id) - 1))::text AS id FROM accounts", "failed while its rows"),
    ("SELECT id FROM accounts; DELETE FROM accounts", "is not one valid SQL statement"),
    ("SELECT id FROM nowhere", "names a table that does not exist .SQLSTATE 42P01"),
    ("SELECT id::int AS id FROM accounts", "failed while its rows were read .PostgreSQL.s "
                                           "message is not shown: it may quote a value."),
])
def test_a_query_that_writes_or_fails_is_refused_and_nothing_is_written(accounts, monkeypatch,
                                                                      query, why):
    monkeypatch.setenv("TEST_PG", accounts)
    source = PostgresSource(query=query, connection_env="TEST_PG")
    with pytest.raises(ConfigError, match=f"dataset 'accounts': its PostgreSQL query ({why})"
                       ) as refused:
        load_dataset(config(source, {"id": "str"}))
    assert "'a'" not in str(refused.value) and '"a"' not in str(refused.value)  # no value
    assert sql(accounts, "SELECT count(*) FROM accounts") == [(3,)]
    assert sql(accounts, "SELECT last_value, is_called FROM counter") == [(1, False)]


def test_a_missing_table_or_column_and_a_wrong_type_are_named_without_values(via_env):
    with pytest.raises(ConfigError, match="PostgreSQL table accounts has no column 'limit', "
                                          "'owner'"):
        load_dataset(config(via_env, {"id": "str", "limit": "float", "owner": "str"}))
    with pytest.raises(ConfigError, match="PostgreSQL table nope names a table that does "
                                          "not exist"):
        load_dataset(config(PostgresSource(table="nope", connection_env="TEST_PG"),
                            {"id": "str"}))
    with pytest.raises(ConfigError, match="column 'id' of PostgreSQL table accounts holds a "
                                          "value that is not int") as refused:
        load_dataset(config(via_env, {"id": "int"}))
    assert "'a'" not in str(refused.value)


def test_the_connection_string_comes_from_a_variable_or_a_private_file_and_is_never_told(
        accounts, tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_PG_UNSET", raising=False)
    unset = PostgresSource(table="accounts", connection_env="TEST_PG_UNSET")
    with pytest.raises(ConfigError, match="environment variable TEST_PG_UNSET is not set"):
        load_dataset(config(unset, {"id": "str"}))

    secret = tmp_path / "pg.dsn"
    secret.write_text(accounts + "\n")
    secret.chmod(0o644)
    from_file = PostgresSource(table="accounts", connection_file=secret)
    with pytest.raises(ConfigError, match="pg.dsn may be read by group or others"):
        load_dataset(config(from_file, {"id": "str"}))
    secret.chmod(0o600)
    assert load_dataset(config(from_file, {"id": "str"})).rows == 3

    # a wrong database, an unreachable server, a malformed string: the password stays out
    for dsn, why in [(accounts.replace("postgres:@", f"postgres:{PASSWORD}@")
                      .replace("/postgres?", "/nodb?"), "the database or role does not exist"),
                     (f"postgresql://bank:{PASSWORD}@127.0.0.1:1/db", "connection refused"),
                     (f"host=127.0.0.1 port=x{PASSWORD} password={PASSWORD}", "not valid")]:
        monkeypatch.setenv("TEST_PG", dsn)
        with pytest.raises(ConfigError, match="cannot connect to PostgreSQL with the "
                                              "connection string of environment variable "
                                              f"TEST_PG: .*{why}") as refused:
            load_dataset(config(PostgresSource(table="accounts", connection_env="TEST_PG"),
                                {"id": "str"}))
        assert PASSWORD not in str(refused.value) and "127.0.0.1" not in str(refused.value)


@pytest.mark.parametrize("entry, why", [
    ('table = "t"\nconnection = "postgresql://u:pw@h/db"', "connection.*would put a credential"),
    ('table = "t"\npassword = "pw"\nconnection_env = "X"', "password.*would put a credential"),
    ('table = "t"\nquery = "SELECT 1"\nconnection_env = "X"', "one of table and query"),
    ('table = "t"', "one of connection_env and connection_file"),
    ('table = "t"\nconnection_env = "X"\nconnection_file = "f"', "one of connection_env"),
    ('table = "t"\npath = "t.csv"\nconnection_env = "X"', "path.*is for a file"),
    ('table = "t"\nformat = "csv"\nconnection_env = "X"', "format.*must be \"postgres\""),
    ('format = "postgres"\nconnection_env = "X"', "one of table and query"),
    ('path = "t.csv"\nconnection_env = "X"', "connection_env.*is for a PostgreSQL dataset"),
    ('table = ".t"\nconnection_env = "X"', "table.*schema.name"),
])
def test_a_postgres_dataset_s_config_is_checked_and_holds_no_credential(tmp_path, entry, why):
    from invisible.coordinator.local import write_local_federation
    from invisible.samples import SAMPLE_COLUMNS, sample_datasets

    layout = write_local_federation(tmp_path, tuple(SAMPLE_COLUMNS), sample_datasets())
    path = layout.party_configs["bank"]
    path.write_text(path.read_text() + f'\n[datasets.accounts]\n{entry}\n'
                    'columns = { id = "str" }\n')
    with pytest.raises(ConfigError, match=why) as refused:
        load_party_config(path)
    assert "pw" not in str(refused.value).replace("password", "")


@pytest.mark.timeout(180)
def test_a_node_serves_a_postgres_table_in_a_secure_sum_over_grpc(accounts, tmp_path,
                                                                   monkeypatch):
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow.csv as pcsv

    from invisible.coordinator.federation import Federation
    from invisible.coordinator.local import NodeProcesses, write_local_federation
    from invisible.net.pki import Role
    from invisible.operator import check_node
    from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets, sample_path

    with adbc.connect(accounts, autocommit=True) as connection, \
            connection.cursor() as cursor:
        cursor.adbc_ingest("customers", pcsv.read_csv(sample_path("bank")), mode="replace")
    monkeypatch.setenv("BANK_PG", accounts)
    layout = write_local_federation(tmp_path, tuple(SAMPLE_COLUMNS), sample_datasets())
    inputs = {p: (SAMPLE_DATASET, "monthly_spend") for p in SAMPLE_COLUMNS}
    with NodeProcesses(layout), Federation.from_config(layout.coordinator_config) as fed:
        from_files = fed.secure_sum(inputs, 1e5).total
    bank = layout.party_configs["bank"]
    text = bank.read_text()
    csv_line = f'path = "{sample_path("bank")}"'
    assert csv_line in text
    bank.write_text(text.replace(csv_line, 'table = "customers"\nconnection_env = "BANK_PG"'))
    assert "customers: 240 rows" in "\n".join(check_node(bank, Role.PARTY))
    with NodeProcesses(layout), Federation.from_config(layout.coordinator_config) as fed:
        from_postgres = fed.secure_sum(inputs, 1e5).total
    assert from_postgres == pytest.approx(from_files, abs=1e-6)
