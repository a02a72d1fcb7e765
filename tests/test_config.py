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
        registry = DatasetRegistry.load(config.datasets)
        assert registry.get("customers").rows > 100
    coordinator = load_coordinator_config(ROOT / "parties" / "coordinator.toml")
    assert set(coordinator.parties) == set(SAMPLE_COLUMNS)


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
    with pytest.raises(ConfigError, match="columns.age must be one of float, int, str"):
        load_party_config(write(tmp_path / "f.toml", base + (
            '[datasets.d]\npath = "x.csv"\ncolumns = { age = "decimal" }\n')))


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
