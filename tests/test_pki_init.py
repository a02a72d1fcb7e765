"""`init_pki`: one certificate per identity in its role, a ledger key per node, and its refusals.

Parties and dealers are nodes (each gets a ledger key pair), coordinators are
not. A request naming no party, an id twice or an invalid id, or a folder
that already holds a CA (without overwrite) or an orphaned public ledger key,
is refused before anything is written or replaced.
"""

from __future__ import annotations

import re

import pytest

from invisible.errors import ConfigError
from invisible.net.pki import Identity, Role, identity_from_pem, init_pki


def written(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def test_each_identity_gets_a_certificate_in_its_role_and_each_node_a_ledger_key(tmp_path):
    made = init_pki(tmp_path, ["bank", "telco"], dealers=["dealer"])
    expected = [Identity("bank", Role.PARTY), Identity("telco", Role.PARTY),
                Identity("coordinator", Role.COORDINATOR), Identity("dealer", Role.DEALER)]
    assert made.identities == expected
    assert made.kept_ledger_keys == ()
    for identity in expected:
        assert identity_from_pem((tmp_path / f"{identity.party_id}.pem").read_bytes()) == identity
    ledger = sorted(p.name for p in tmp_path.glob("*-ledger.*"))
    assert ledger == [f"{n}-ledger.{e}" for n in ("bank", "dealer", "telco") for e in ("key", "pub")]


def test_coordinators_can_be_named_or_left_out(tmp_path):
    named = init_pki(tmp_path / "a", ["bank"], coordinators=["hub"])
    assert named.identities == [Identity("bank", Role.PARTY), Identity("hub", Role.COORDINATOR)]
    assert init_pki(tmp_path / "b", ["bank"], coordinators=[]).identities == [
        Identity("bank", Role.PARTY)]


@pytest.mark.parametrize(("parties", "coordinators", "dealers", "why"), [
    ([], None, None, "name at least one party"),
    (["bank", "bank"], None, None,
     "every identity needs its own id (a party, coordinator, dealer or approver twice)"),
    (["bank"], None, ["coordinator"], "every identity needs its own id"),
    (["Bank"], None, None, "invalid party id 'Bank'"),
    (["bank"], ["Hub"], None, "invalid party id 'Hub'"),
    (["bank"], None, ["dealer_1"], "invalid party id 'dealer_1'"),
])
def test_a_request_that_cannot_be_met_is_refused_before_anything_is_written(
        tmp_path, parties, coordinators, dealers, why):
    with pytest.raises(ConfigError, match=re.escape(why)):
        init_pki(tmp_path / "pki", parties, coordinators, dealers)
    assert written(tmp_path / "pki") == {}


def test_a_folder_holding_a_ca_is_kept_unless_overwrite_is_asked(tmp_path):
    init_pki(tmp_path, ["bank"])
    before = written(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(
            f"{tmp_path} already holds a CA; pass --force to replace it")):
        init_pki(tmp_path, ["bank"])
    assert written(tmp_path) == before
    init_pki(tmp_path, ["bank"], overwrite=True)
    assert written(tmp_path)["ca.pem"] != before["ca.pem"]


def test_an_orphaned_public_ledger_key_stops_everything_before_any_change(tmp_path):
    init_pki(tmp_path, ["bank", "telco"], dealers=["dealer"])
    (tmp_path / "dealer-ledger.key").unlink()
    before = written(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(
            f"{tmp_path / 'dealer-ledger.pub'} exists without its private key dealer-ledger.key")):
        init_pki(tmp_path, ["bank", "telco"], dealers=["dealer"], overwrite=True)
    assert written(tmp_path) == before  # the CA and every certificate are the old ones
