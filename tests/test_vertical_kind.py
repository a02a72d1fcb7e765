"""The `vertical_statistics` kind on party nodes: PSI aligns two institutions' customers,
then statistics across their columns match numpy on the joined tables.

The data are the vertical splits FATE publishes (tests/data/README.md). To
make the alignment do some work, each party keeps a different random 90% of
the rows, in its own shuffled order; the reference is pandas' inner join on
`id`.
"""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import (
    OPEN_POLICY,
    InProcessNodes,
    LocalDataset,
    NodeProcesses,
    write_local_federation,
)
from invisible.errors import ConfigError, PolicyError, ProtocolError
from invisible.kinds import alignments
from invisible.kinds.vertical_statistics import VerticalStatisticsParams

DATA = Path(__file__).parent / "data"
ALL = ("count", "mean", "variance", "std", "covariance", "correlation")


def split(tmp: Path, name: str, seed: int, keep: float = 0.9) -> dict[str, tuple[Path, list]]:
    """Each side's CSV with a random `keep` share of its rows, shuffled; and its features."""
    out = {}
    for side, offset in (("guest", 0), ("host", 1)):
        lines = gzip.decompress((DATA / f"{name}_hetero_{side}.csv.gz").read_bytes()
                                ).decode().strip().split("\n")
        rng = np.random.default_rng(seed + offset)
        body = np.array(lines[1:], dtype=object)
        kept = body[rng.random(body.size) < keep]
        rng.shuffle(kept)
        path = tmp / f"{name}_{side}.csv"
        path.write_text("\n".join([lines[0], *kept]) + "\n")
        out[side] = (path, [c for c in lines[0].split(",") if c.startswith("x")])
    return out


def federation(tmp: Path, name: str, policy: dict | None = None, seed: int = 0,
               coordinators=("coordinator",)):
    tables = split(tmp, name, seed)
    datasets = {}
    for side, (path, features) in tables.items():
        columns = {"id": "int", **({"y": "int"} if side == "guest" else {}),
                   **{f: "float" for f in features}}
        datasets[side] = {"credit": LocalDataset(path, columns, policy or dict(OPEN_POLICY))}
    layout = write_local_federation(tmp / "fed", ["guest", "host"], datasets, dealers=["dealer"],
                                    coordinators=coordinators, limits={"rpc_timeout_s": 60.0})
    return layout, tables


def joined(tables) -> pd.DataFrame:
    guest = pd.read_csv(tables["guest"][0])
    host = pd.read_csv(tables["host"][0])
    both = guest.merge(host, on="id", suffixes=(".guest", ".host"))
    return both


def labels(tables) -> list[str]:
    guest, host = tables["guest"][1], tables["host"][1]
    repeated = set(guest) & set(host)
    return ([f"guest.{c}" if c in repeated else c for c in guest]
            + [f"host.{c}" if c in repeated else c for c in host])


def joined_values(tables) -> np.ndarray:
    """The joined columns in the job's order ("guest.x0" is pandas' "x0.guest")."""
    frame = joined(tables)
    names = [".".join(reversed(n.split("."))) for n in labels(tables)]
    return frame[names].to_numpy()


def columns_of(tables):
    return {side: features for side, (_, features) in tables.items()}


def check_against_numpy(result, tables, ddof):
    names = labels(tables)
    values = joined_values(tables)
    assert result.count == len(values)
    assert list(result.correlation.columns) == names
    corr = np.corrcoef(values, rowvar=False)
    error = np.max(np.abs(result.correlation.to_numpy() - corr))
    assert error <= 1e-3
    cov = np.cov(values, rowvar=False, ddof=ddof)
    assert np.max(np.abs(result.covariance.to_numpy() - cov)) <= 1e-3
    summary = result.summary()
    assert np.max(np.abs(summary["mean"].to_numpy() - values.mean(axis=0))) <= 1e-6
    assert np.max(np.abs(summary["std"].to_numpy() - values.std(axis=0, ddof=ddof))) <= 1e-6
    assert list(summary["party"]) == ["guest"] * len(tables["guest"][1]) + \
        ["host"] * len(tables["host"][1])
    return error


@pytest.mark.timeout(300)
def test_default_credit_psi_then_statistics_across_institutions_as_node_processes(tmp_path):
    layout, tables = federation(tmp_path, "default_credit")
    with NodeProcesses(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as fed:
        fed.health(timeout_s=60)
        nodes.check_alive()
        aligned = fed.psi({"guest": ("credit", "id"), "host": ("credit", "id")},
                          alignment="credit", release_size=True)
        result = fed.vertical_statistics(
            aligned, columns_of(tables), outputs=ALL, dealer="dealer", ddof=1,
            bounds={side: [100.0] * len(features) for side, features in columns_of(tables).items()})
    assert aligned.size == len(joined(tables)) and 20_000 < aligned.size < 26_000
    error = check_against_numpy(result, tables, ddof=1)
    assert error < 1e-4  # well inside the 1e-3 the issue asks: the bound is 2.4e-5 here
    # Every party's receipt: the alignment's rows, metered against the dataset it was made of.
    for side in ("guest", "host"):
        [done] = [r for r in result.receipts[side] if r["event"] == "finished"]
        assert done["dataset"] == "credit" and done["rows"] == aligned.size
        assert done["body"]["columns"] == tables[side][1]


def test_breast_with_a_recipient_and_the_correlation_alone_needs_no_bound(tmp_path):
    layout, tables = federation(tmp_path, "breast")
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi({"guest": ("credit", "id"), "host": ("credit", "id")}, alignment="breast")
        result = fed.vertical_statistics("breast", columns_of(tables), outputs=["correlation"],
                                         dealer="dealer", recipient="guest")
        full = fed.vertical_statistics(
            "@breast", columns_of(tables), outputs=ALL, dealer="dealer",
            bounds={side: {c: 20.0 for c in features}
                    for side, features in columns_of(tables).items()})
    values = joined_values(tables)
    assert np.max(np.abs(result.correlation.to_numpy() - np.corrcoef(values, rowvar=False))) \
        <= 1e-3
    assert result.count is None and "opened to party 'guest'" in repr(result)
    check_against_numpy(full, tables, ddof=0)
    assert "correlation:" in repr(full) and "<strong>covariance</strong>" in full._repr_html_()


def test_an_alignment_is_used_after_a_restart_and_refused_once_expired(tmp_path, monkeypatch):
    policy = {**OPEN_POLICY, "alignment_days": 3}
    layout, tables = federation(tmp_path, "breast", policy)
    features = columns_of(tables)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi({"guest": ("credit", "id"), "host": ("credit", "id")}, alignment="kept")
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        after_restart = fed.vertical_statistics("kept", features, outputs=["count"],
                                                dealer="dealer")
        assert after_restart.count == len(joined(tables))
        later = alignments.utc_now() + timedelta(days=3, seconds=1)
        monkeypatch.setattr(alignments, "utc_now", lambda: later)
        with pytest.raises(ConfigError, match="alignment 'kept' expired") as refused:
            fed.vertical_statistics("kept", features, outputs=["count"], dealer="dealer")
        with pytest.raises(ConfigError, match="no alignment named 'kept'"):  # deleted
            fed.vertical_statistics("kept", features, outputs=["count"], dealer="dealer")
    assert [r["event"] for r in refused.value.receipts] == ["refused"]  # recorded


def test_parties_that_name_alignments_of_different_intersections_are_stopped(tmp_path):
    layout, _ = federation(tmp_path, "breast")
    ids = {"guest": ("credit", "id"), "host": ("credit", "id")}
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(ids, alignment="first")
        fed.psi(ids, alignment="second")
        inputs = {"guest": {"dataset": "@first", "columns": ["x0"]},
                  "host": {"dataset": "@second", "columns": ["x0"]}}
        with pytest.raises(ProtocolError, match="not the rows of one intersection"):
            fed.run_raw("vertical_statistics", {"inputs": inputs, "outputs": ["correlation"],
                                                "dealer": "dealer"})


def test_the_parameters_name_alignments_columns_and_bounds_or_are_refused():
    base = {"outputs": ["mean"], "dealer": "dealer"}
    parties = ("guest", "host", "dealer")

    def parse(inputs, **extra):
        return VerticalStatisticsParams.parse({**base, **extra, "inputs": inputs}, parties)

    good = {"guest": {"dataset": "@a", "columns": ["x0", "x1"], "bounds": [1, 2.5]},
            "host": {"dataset": "@a", "columns": ["x0"], "bounds": [3]}}
    params = parse(good)
    assert params.inputs["guest"].bounds == (1.0, 2.5)
    assert VerticalStatisticsParams.parse(params.to_json(), parties) == params
    for inputs, message in [
        ({**good, "host": {"dataset": "a", "columns": ["x0"], "bounds": [3]}},
         "must name an alignment"),
        ({**good, "host": {"dataset": "@a", "columns": ["x0"]}}, "must give 'bounds'"),
        ({**good, "host": {"dataset": "@a", "columns": ["x0"], "bounds": [3, 4]}},
         "one positive finite number per column"),
        ({**good, "host": {"dataset": "@a", "columns": ["x0"], "bounds": [0]}},
         "one positive finite number per column"),
        ({**good, "host": {"dataset": "@a", "columns": ["x0"], "bounds": [2.0**36]}},
         "below 2\\^36"),
        ({**good, "host": {"dataset": "@a", "columns": ["x0", "x0"], "bounds": [1, 1]}},
         "different names"),
        ({**good, "host": {"dataset": "@a", "columns": []}}, "a list of 1 to 256"),
        ({**good, "host": {"dataset": "@a", "column": "x0"}}, "columns = \\[...\\]"),
        ({"guest": good["guest"]}, "two or more parties"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse(inputs)
    no_bounds = {p: {"dataset": "@a", "columns": ["x0"]} for p in ("guest", "host")}
    assert parse(no_bounds, outputs=["count", "correlation"]).inputs["host"].bounds is None


# --- what an attacker would try (each found by a review, each test failed before its fix) ---

BY_ID = {"guest": ("credit", "id"), "host": ("credit", "id")}


def test_a_value_beyond_its_bound_refuses_the_job_at_every_party_and_is_never_clipped(tmp_path):
    """Clipping to a bound the requester chose between the two smallest values of a column
    would single that person out: the mean gives their value, the correlation their value
    in the other institution's column. So a value beyond its bound refuses, whatever the
    policy (here the default, "clip")."""
    layout, tables = federation(tmp_path, "breast")
    values = joined_values(tables)
    guest_x0 = np.sort(np.abs(values[:, 0]))
    features = columns_of(tables)
    tight = {"guest": [float(guest_x0[1] + guest_x0[0]) / 2] + [20.0] * 9,
             "host": [20.0] * 20}
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="a")
        with pytest.raises(PolicyError, match="refused on parties 'guest', 'host' alike: rule "
                                              "'out-of-bound'") as refused:
            fed.vertical_statistics("a", features, bounds=tight, outputs=["mean", "correlation"],
                                    dealer="dealer", job_id="tight")
        ends = {p: [e.event for e in nodes.nodes[p].ledger.entries() if e.job_id == "tight"][-1]
                for p in ("guest", "host")}
        fine = fed.vertical_statistics("a", features, outputs=["mean"], dealer="dealer",
                                       bounds={p: [20.0] * len(c) for p, c in features.items()})
    assert "never clips" in str(refused.value) and "no result was released" in str(refused.value)
    assert ends == {"guest": "refused", "host": "refused"}
    np.testing.assert_allclose(fine.summary()["mean"], values.mean(axis=0), atol=1e-6)


def test_another_requesters_alignment_is_not_found(tmp_path):
    layout, tables = federation(tmp_path, "breast", coordinators=("coordinator", "other"))
    with InProcessNodes(layout):
        with Federation.from_config(layout.coordinator_configs["coordinator"]) as alice:
            alice.psi(BY_ID, alignment="alices")
            assert alice.vertical_statistics("alices", columns_of(tables), outputs=["count"],
                                             dealer="dealer").count == len(joined(tables))
        with Federation.from_config(layout.coordinator_configs["other"]) as bob, \
                pytest.raises(ConfigError, match="no alignment named 'alices' on this node"):
            bob.vertical_statistics("alices", columns_of(tables), outputs=["count"],
                                    dealer="dealer")


def test_the_rows_of_an_alignment_whose_size_was_not_released_stay_out_of_receipts(tmp_path):
    from invisible.metering.report import ledger_report

    layout, tables = federation(tmp_path, "breast")
    size = len(joined(tables))
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="hidden")
        fed.psi(BY_ID, alignment="told", release_size=True)
        hidden = fed.vertical_statistics("hidden", columns_of(tables), outputs=["correlation"],
                                         dealer="dealer", job_id="on-hidden")
        told = fed.vertical_statistics("told", columns_of(tables), outputs=["correlation"],
                                       dealer="dealer")
        own = [(e.event, e.rows) for e in nodes.nodes["guest"].ledger.entries()
               if e.job_id == "on-hidden"]
    for side in ("guest", "host"):
        assert [r["rows"] for r in hidden.receipts[side]] == [0]
        assert "rows_used" not in json.dumps(hidden.receipts[side]).replace('"rows_used": 0', "")
        assert hidden.records[side].rows_used == 0
        assert [r["rows"] for r in told.receipts[side]] == [size]
    assert ("rows", size) in own and ("finished", 0) in own  # the node's own ledger keeps it
    report = ledger_report(layout.party_configs["guest"].parent / "guest-ledger.sqlite")
    [row] = [r for r in report if r["kind"] == "vertical_statistics"]
    assert row["rows_touched"] == 2 * size and row["jobs"] == 2


def test_an_alignment_whose_dataset_changed_is_refused_without_a_count(tmp_path):
    layout, tables = federation(tmp_path, "breast")
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        fed.psi(BY_ID, alignment="before")
    path = tables["host"][0]
    header, *rows = path.read_text().strip().split("\n")
    for changed in (sorted(rows), rows[:-40]):  # re-sorted, then shorter
        path.write_text("\n".join([header, *changed]) + "\n")
        with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed, \
                pytest.raises(ConfigError, match="alignment 'before' no longer matches dataset "
                              "'credit' .*: run psi again") as refused:
            fed.vertical_statistics("before", columns_of(tables), outputs=["correlation"],
                                    dealer="dealer")
        assert not any(ch.isdigit() for ch in str(refused.value).split("refused start")[1]
                       .split(":", 1)[1])


def test_a_job_on_an_alignment_includes_every_party_that_made_it(tmp_path):
    """Statistics over bank-hospital rows of a 2-party and of a 3-party intersection would
    tell the values of the people the third party lacks."""
    _, tables = federation(tmp_path, "breast")
    third = write_local_federation(tmp_path / "three", ["guest", "host", "third"], {
        **{p: {"credit": LocalDataset(tables[p][0], {"id": "int", "x0": "float"})}
           for p in ("guest", "host")},
        "third": {"credit": LocalDataset(tables["host"][0], {"id": "int", "x0": "float"})}},
        dealers=["dealer"], limits={"rpc_timeout_s": 60.0})
    with InProcessNodes(third), Federation.from_config(third.coordinator_config) as fed:
        fed.psi({**BY_ID, "third": ("credit", "id")}, alignment="three")
        x0 = {"guest": ["x0"], "host": ["x0"]}
        with pytest.raises(ConfigError, match="a job on alignment 'three' must include every "
                                              "party that made it \\(guest, host, third\\)"):
            fed.vertical_statistics("three", x0, outputs=["correlation"], dealer="dealer")
        everyone = fed.vertical_statistics("three", {**x0, "third": ["x0"]},
                                           outputs=["count"], dealer="dealer")
    assert everyone.count == len(joined(tables))
