"""Configuration and datasets: every mistake is named, and the node does not start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from invisible.coordinator.config import load_coordinator_config
from invisible.errors import ConfigError
from invisible.node.config import DatasetConfig, load_party_config
from invisible.node.datasets import DatasetRegistry, load_dataset
from invisible.samples import SAMPLE_COLUMNS, sample_path

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_example_configs_in_parties_load():
    for party in SAMPLE_COLUMNS:
        config = load_party_config(ROOT / "parties" / party / "party.toml")
        assert config.party_id == party
        assert set(config.peers) == set(SAMPLE_COLUMNS) - {party}
        assert set(config.dealers) == {"dealer"}
        registry = DatasetRegistry.load(config.datasets)
        assert registry.get("customers").rows > 100
        assert config.datasets["customers"].path.is_relative_to(ROOT / "parties")
    dealer = load_party_config(ROOT / "parties" / "dealer" / "dealer.toml")
    assert set(dealer.peers) == set(SAMPLE_COLUMNS) and not dealer.datasets
    for requester in ("coordinator", "marketing"):
        coordinator = load_coordinator_config(ROOT / "parties" / f"{requester}.toml")
        assert set(coordinator.parties) == set(SAMPLE_COLUMNS)
        assert set(coordinator.dealers) == {"dealer"}


def test_sample_columns_are_typed():
    dataset = load_dataset(DatasetConfig("c", sample_path("bank"), SAMPLE_COLUMNS["bank"]))
    assert dataset.column("district").dtype == np.int64
    assert dataset.column("monthly_spend").dtype == np.float64


def test_a_missing_config_file_or_bad_toml_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        load_party_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_party_config(write(tmp_path / "bad.toml", "[party\n"))


def test_missing_and_wrong_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="party is missing"):
        load_party_config(write(tmp_path / "a.toml", "[tls]\n"))
    with pytest.raises(ConfigError, match="party.listen must be a non-empty string"):
        load_party_config(write(tmp_path / "b.toml", '[party]\nid = "bank"\n'))
    with pytest.raises(ConfigError, match="invalid party id 'Bank!'"):
        load_party_config(write(tmp_path / "c.toml", '[party]\nid = "Bank!"\n'))
    base = '[party]\nid = "bank"\nlisten = "127.0.0.1:1"\n[tls]\nca="a"\ncert="b"\nkey="c"\n'
    with pytest.raises(ConfigError, match="limits.rpc_timeout_s must be a positive number"):
        load_party_config(write(tmp_path / "d.toml", base + "[limits]\nrpc_timeout_s = -1\n"))
    with pytest.raises(ConfigError, match="peers names the party itself"):
        load_party_config(write(tmp_path / "e.toml", base + '[peers]\nbank = "127.0.0.1:2"\n'))
    with pytest.raises(ConfigError, match="columns.age must be one of float, int, str, string, bool, date"):
        load_party_config(write(tmp_path / "f.toml", base + (
            '[datasets.d]\npath = "x.csv"\ncolumns = { age = "decimal" }\n')))


BASE = '[party]\nid = "bank"\nlisten = "127.0.0.1:1"\n[tls]\nca="a"\ncert="b"\nkey="c"\n'


@pytest.mark.parametrize(("extra", "named"), [
    ('[metric]\nlisten = "127.0.0.1:9101"\n', "metric is not a table of this file"),
    ("[metrics]\nlisen = 1\n", "metrics.lisen is not a key of this table (known: cert, "
     "client_ca, key, listen)"),
    ("[limits]\nrpc_timeout = 5\n", "limits.rpc_timeout is not a key of this table"),
    ('[ledger]\nstorage = "none"\n', "ledger.storage is not a key of this table"),
    ('[datasets.d]\npath = "x.csv"\ncolumns = { a = "int" }\nmising = "drop"\n',
     "datasets.d.mising is not a key of this table (known: columns, connection_env, "
     "connection_file, delimiter, format, missing, path, policy, query, table)"),
])
def test_an_unknown_table_or_key_anywhere_is_named_not_ignored(tmp_path, extra, named):
    """A misspelt table was silently ignored: `[metric]` served no metrics."""
    with pytest.raises(ConfigError) as refused:
        load_party_config(write(tmp_path / "bank.toml", BASE + extra))
    assert f"bank.toml: {named}" in str(refused.value)
    for key, table in (("lsten", "party"), ("certificate", "tls")):
        text = BASE.replace(f"[{table}]\n", f"[{table}]\n{key} = 1\n")
        with pytest.raises(ConfigError, match=f"{table}.{key} is not a key of this table"):
            load_party_config(write(tmp_path / "b.toml", text))
    coordinator = '[coordinator]\nid = "c"\nreceipt_dir = "r"\n[parties]\nbank = "127.0.0.1:1"\n'
    with pytest.raises(ConfigError, match="coordinator.receipt_dir is not a key of this table"):
        load_coordinator_config(write(tmp_path / "c.toml", coordinator))


def test_a_dataset_file_or_column_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(ConfigError, match="dataset 'loans': file not found: .*loans.csv"):
        load_dataset(DatasetConfig("loans", tmp_path / "loans.csv", {"amount": "float"}))
    csv = write(tmp_path / "loans.csv", "id,amount\n1,2.5\n2,3.5\n")
    with pytest.raises(ConfigError, match="has no column 'balance'"):
        load_dataset(DatasetConfig("loans", csv, {"balance": "float"}))
    dataset = load_dataset(DatasetConfig("loans", csv, {"amount": "float"}))
    with pytest.raises(ConfigError, match="dataset 'loans' has no column 'rate'"):
        dataset.column("rate")
    with pytest.raises(ConfigError, match="no dataset 'deposits' is registered"):
        DatasetRegistry({"loans": dataset}).get("deposits")


def test_a_value_of_the_wrong_type_is_named_without_showing_it(tmp_path):
    csv = write(tmp_path / "d.csv", "id,amount\n1,2.5\n2,secret-value\n")
    with pytest.raises(ConfigError, match="column 'amount'.*not float") as caught:
        load_dataset(DatasetConfig("d", csv, {"amount": "float"}))
    assert "secret-value" not in str(caught.value)
    ragged = write(tmp_path / "r.csv", "id,amount\n1,2.5,9\n")
    with pytest.raises(ConfigError, match="line 2 has 3 fields"):
        load_dataset(DatasetConfig("r", ragged, {"amount": "float"}))


BOOK = """
[parties]
bank = "127.0.0.1:50051"
hospital = "127.0.0.1:50052"
telco = "127.0.0.1:50053"

[dealers]
dealer = "127.0.0.1:50054"
"""
TLS = '[tls]\nca = "ca.pem"\ncert = "n.pem"\nkey = "n.key"\n'


def party_file(folder: Path, party: str, extra: str = "") -> Path:
    """A node config in `folder` that names ../federation.toml."""
    folder.mkdir(exist_ok=True)
    return write(folder / "party.toml", f'[party]\nid = "{party}"\nfederation = '
                 f'"../federation.toml"\n{extra}\n{TLS}')


def test_a_party_and_a_dealer_take_their_peers_and_address_from_the_book(tmp_path):
    write(tmp_path / "federation.toml", BOOK)
    bank = load_party_config(party_file(tmp_path / "bank", "bank"))
    assert bank.peers == {"hospital": "127.0.0.1:50052", "telco": "127.0.0.1:50053"}
    assert bank.dealers == {"dealer": "127.0.0.1:50054"}
    assert bank.listen == "127.0.0.1:50051"
    dealer = load_party_config(party_file(tmp_path / "dealer", "dealer"))
    assert dealer.peers == {"bank": "127.0.0.1:50051", "hospital": "127.0.0.1:50052",
                            "telco": "127.0.0.1:50053"}
    assert dealer.dealers == {} and dealer.listen == "127.0.0.1:50054"


def test_an_explicit_listen_wins_over_the_book(tmp_path):
    write(tmp_path / "federation.toml", BOOK)
    config = load_party_config(party_file(tmp_path / "bank", "bank", 'listen = "0.0.0.0:50051"'))
    assert config.listen == "0.0.0.0:50051"
    assert set(config.peers) == {"hospital", "telco"}


def test_a_coordinator_takes_parties_and_dealers_from_the_book(tmp_path):
    write(tmp_path / "federation.toml", BOOK)
    config = load_coordinator_config(write(
        tmp_path / "coordinator.toml",
        f'[coordinator]\nid = "coordinator"\nfederation = "federation.toml"\n{TLS}'))
    assert config.parties == {"bank": "127.0.0.1:50051", "hospital": "127.0.0.1:50052",
                              "telco": "127.0.0.1:50053"}
    assert config.dealers == {"dealer": "127.0.0.1:50054"}


def test_a_node_missing_from_the_book_is_named(tmp_path):
    write(tmp_path / "federation.toml", BOOK)
    with pytest.raises(ConfigError, match=r"party.toml: party.id 'insurer' is in neither "
                       r"\[parties\] nor \[dealers\] of the address book .*federation.toml"):
        load_party_config(party_file(tmp_path / "insurer", "insurer"))


def test_a_book_and_an_explicit_table_together_are_refused(tmp_path):
    write(tmp_path / "federation.toml", BOOK)
    with pytest.raises(ConfigError, match=r"party.toml: party.federation and \[peers\] both"):
        load_party_config(party_file(tmp_path / "bank", "bank",
                                     '[peers]\nhospital = "127.0.0.1:50052"'))
    with pytest.raises(ConfigError, match=r"party.federation and \[dealers\] both"):
        load_party_config(party_file(tmp_path / "bank", "bank",
                                     '[dealers]\ndealer = "127.0.0.1:50054"'))
    coordinator = '[coordinator]\nid = "coordinator"\nfederation = "federation.toml"\n'
    with pytest.raises(ConfigError, match=r"c.toml: coordinator.federation and \[parties\], "
                       r"\[dealers\] both"):
        load_coordinator_config(write(tmp_path / "c.toml", coordinator + (
            '[parties]\nbank = "127.0.0.1:1"\n[dealers]\ndealer = "127.0.0.1:2"\n')))


def test_a_missing_or_invalid_book_is_named(tmp_path):
    bank = party_file(tmp_path / "bank", "bank")
    with pytest.raises(ConfigError, match=r"party.toml: party.federation names no usable "
                       r"address book \(address book not found: .*federation.toml\)"):
        load_party_config(bank)
    write(tmp_path / "federation.toml", "[parties\n")
    with pytest.raises(ConfigError, match=r"party.federation .*federation.toml is not valid TOML"):
        load_party_config(bank)
    write(tmp_path / "federation.toml", '[parties]\nbank = "no port"\n')
    with pytest.raises(ConfigError, match=r"federation.toml: parties.bank must be an address"):
        load_party_config(bank)
    write(tmp_path / "federation.toml", '[dealers]\ndealer = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match=r"federation.toml: parties is missing"):
        load_party_config(bank)
    write(tmp_path / "federation.toml", '[parties]\nbank = "127.0.0.1:1"\n[peers]\n')
    with pytest.raises(ConfigError, match=r"federation.toml: peers is not a table of an "
                       r"address book"):
        load_party_config(bank)
    write(tmp_path / "federation.toml", '[parties]\nbank = "127.0.0.1:1"\n'
          '[dealers]\nbank = "127.0.0.1:2"\n')
    with pytest.raises(ConfigError, match=r"federation.toml: dealers names 'bank', which is "
                       r"also a party"):
        load_party_config(bank)
    with pytest.raises(ConfigError, match=r"c.toml: coordinator.federation must be a non-empty"):
        load_coordinator_config(write(tmp_path / "c.toml",
                                      f'[coordinator]\nid = "c"\nfederation = 3\n{TLS}'))


def test_missing_or_non_finite_numbers_refuse_the_dataset_or_are_dropped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,amount,count\n1,2.5,3\n2,,4\n3,nan,5\n4,inf,\n5,1.0,6\n")
    columns = {"id": "int", "amount": "float", "count": "int"}
    with pytest.raises(ConfigError, match="column 'amount' of .* has missing or non-finite "
                                          "values; set missing = \"drop\""):
        load_dataset(DatasetConfig("t", path, columns))
    dropped = load_dataset(DatasetConfig("t", path, columns, missing="drop"))
    assert dropped.column("id").tolist() == [1, 5]
    assert dropped.column("amount").tolist() == [2.5, 1.0]
    assert dropped.column("count").dtype == np.int64
    path.write_text("id,amount,count\n1,2.5,x\n")
    with pytest.raises(ConfigError, match="column 'count' .* holds a value that is not int"):
        load_dataset(DatasetConfig("t", path, columns, missing="drop"))
