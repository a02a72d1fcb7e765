"""The `psi` job kind on party nodes: alignments kept at each node, metered, k-checked.

The sample tables number their rows 1..240 (bank), 1..180 (hospital) and
1..300 (telco), so the three id columns have 1..180 in common.
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import OPEN_POLICY, InProcessNodes, LocalDataset, write_local_federation
from invisible.errors import PolicyError
from invisible.kinds.alignments import utc_now
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets
from tests.test_refusals import column

PARTIES = tuple(SAMPLE_COLUMNS)
ID_COLUMNS = {"bank": "customer_id", "hospital": "patient_id", "telco": "subscriber_id"}


def ids() -> dict[str, tuple[str, str]]:
    return {p: (SAMPLE_DATASET, ID_COLUMNS[p]) for p in PARTIES}


def federation_with(tmp_path, policies=None):
    datasets = sample_datasets()
    for party, policy in (policies or {}).items():
        kept = datasets[party][SAMPLE_DATASET]
        datasets[party][SAMPLE_DATASET] = LocalDataset(kept.path, kept.columns, policy)
    return write_local_federation(tmp_path, list(PARTIES), datasets,
                                  limits={"rpc_timeout_s": 20.0})


def test_each_party_keeps_its_rows_of_the_intersection_and_the_requester_only_the_size(tmp_path):
    layout = federation_with(tmp_path)
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        hidden = fed.psi(ids(), alignment="common", job_id="psi-1")
        released = fed.psi(ids(), alignment="common-2", release_size=True)
        kept = {p: nodes.nodes[p].executor.alignments.get("common") for p in PARTIES}
        noted = {p: [e.body["size"] for e in nodes.nodes[p].ledger.entries()
                     if e.job_id == "psi-1" and e.event == "intersection"] for p in PARTIES}
    assert hidden.alignment == "common" and hidden.size is None
    assert released.size == 180
    common = set(range(1, 181))
    order = None
    for party, alignment in kept.items():
        values = column(party, ID_COLUMNS[party])[alignment.rows]
        assert set(values.tolist()) == common and alignment.size == 180
        assert order is None or values.tolist() == order  # one order at every party
        order = values.tolist()
        assert alignment.dataset == SAMPLE_DATASET and alignment.column == ID_COLUMNS[party]
    assert order != sorted(order)  # the agreed order says nothing about anyone's row order
    # Without a released size, no receipt says how many ids are in common.
    for party in PARTIES:
        receipt = hidden.receipts[party][-1]
        assert receipt["event"] == "finished"  # its rows are the party's own, read whole
        assert receipt["body"]["rows_used"] == len(column(party, ID_COLUMNS[party]))
        assert "intersection" not in json.dumps(receipt) and "size" not in receipt["body"]
        assert noted[party] == [180]  # the node's own ledger has it


@pytest.mark.parametrize("k", [181, 200])
def test_an_intersection_below_k_is_refused_at_every_party_without_its_size(tmp_path, k):
    layout = federation_with(tmp_path, {"telco": {**OPEN_POLICY, "min_rows": k}})
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(PolicyError) as refused:
            fed.psi(ids(), release_size=True, job_id="too-small")
        stored = {p: nodes.nodes[p].executor.alignments.exists("too-small") for p in PARTIES}
    message = str(refused.value)
    assert "refused on every party: rule 'k-threshold'" in message
    assert "180" not in message and str(k) not in message
    assert stored == {p: False for p in PARTIES}  # no party keeps the rows


def test_an_intersection_of_exactly_k_rows_is_kept(tmp_path):
    layout = federation_with(tmp_path, {"telco": {**OPEN_POLICY, "min_rows": 180}})
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        assert fed.psi(ids(), release_size=True).size == 180


def test_an_alignment_survives_a_restart_and_expires_by_policy(tmp_path):
    layout = federation_with(tmp_path, {p: {**OPEN_POLICY, "alignment_days": 2}
                                        for p in PARTIES})
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(ids(), alignment="kept")
    with InProcessNodes(layout) as nodes:  # restarted
        store = nodes.nodes["bank"].executor.alignments
        assert store.get("kept").size == 180
        assert [a.name for a in store.list()] == ["kept"]
        later = utc_now() + timedelta(days=2, seconds=1)
        assert store.list(now=later) == []  # expired: deleted
        assert not store.exists("kept")


def test_duplicate_ids_refuse_the_job_charged_and_say_no_count(tmp_path):
    layout = federation_with(tmp_path)
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(PolicyError) as refused:
            fed.psi({**ids(), "telco": (SAMPLE_DATASET, "district")}, job_id="dupes")
        events = [(e.event, e.body.get("charged")) for e in nodes.nodes["telco"].ledger.entries()
                  if e.job_id == "dupes"]
    assert "duplicate ids" in str(refused.value)
    assert not any(ch.isdigit() for ch in str(refused.value).split("duplicate")[1])
    assert events[-1] == ("refused", True)


def test_a_float_column_is_not_an_id_column(tmp_path):
    layout = federation_with(tmp_path)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        from invisible.errors import ConfigError
        with pytest.raises(ConfigError, match="neither an integer nor a string column"):
            fed.psi({**ids(), "bank": (SAMPLE_DATASET, "balance")})
    assert np.issubdtype(column("bank", "balance").dtype, np.floating)


def test_the_node_lists_its_alignments(tmp_path, capsys):
    from invisible.cli import main

    layout = federation_with(tmp_path)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(ids(), alignment="listed")
    assert main(["node", "alignments", "--config", str(layout.party_configs["telco"])]) == 0
    [header, row] = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["name", "rows"]
    assert row.split()[:4] == ["listed", "180", "customers.subscriber_id", "bank,hospital,telco"]
    from invisible.api import alignments
    frame = alignments(layout.party_configs["telco"])
    assert frame[["name", "rows", "dataset", "column"]].values.tolist() == [
        ["listed", 180, "customers", "subscriber_id"]]
    assert frame["parties"][0] == ["bank", "hospital", "telco"]


def test_a_later_job_names_an_alignment_and_is_governed_by_its_source_dataset(tmp_path):
    layout = federation_with(tmp_path)
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(ids(), alignment="common")
        spend = {p: ("@common", "monthly_spend") for p in PARTIES}
        result = fed.secure_sum(spend, 5000.0, max_rows=1000, job_id="sum-common")
        entries = {p: [e for e in nodes.nodes[p].ledger.entries() if e.job_id == "sum-common"]
                   for p in PARTIES}
        from invisible.errors import ConfigError
        with pytest.raises(ConfigError, match="no alignment named 'missing'") as unknown:
            fed.secure_sum({p: ("@missing", "monthly_spend") for p in PARTIES}, 5000.0)
    expected = 0.0
    for party in PARTIES:  # the common customers: ids 1..180, each party's first 180 rows
        keep = np.isin(column(party, ID_COLUMNS[party]), np.arange(1, 181))
        expected += float(column(party, "monthly_spend")[keep].sum())
    assert result.value == pytest.approx(expected, abs=540 * 2.0**-17)
    for found in entries.values():  # metered against the dataset it was made from
        accepted = [e for e in found if e.event == "accepted"]
        assert accepted[0].dataset == SAMPLE_DATASET and accepted[0].rows == 180
    assert unknown.value.receipts and unknown.value.receipts[0]["event"] == "refused"
