"""The `vertical_statistics` kind on party nodes: PSI aligns two institutions' customers,
then statistics across their columns match numpy on the joined tables.

The data are the vertical splits FATE publishes (tests/data/README.md). To
make the alignment do some work, each party keeps a different random 90% of
the rows, in its own shuffled order; the reference is pandas' inner join on
`id`.
"""

from __future__ import annotations

import gzip
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
from invisible.errors import ConfigError, ProtocolError
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


def federation(tmp: Path, name: str, policy: dict | None = None, seed: int = 0):
    tables = split(tmp, name, seed)
    datasets = {}
    for side, (path, features) in tables.items():
        columns = {"id": "int", **({"y": "int"} if side == "guest" else {}),
                   **{f: "float" for f in features}}
        datasets[side] = {"credit": LocalDataset(path, columns, policy or dict(OPEN_POLICY))}
    layout = write_local_federation(tmp / "fed", ["guest", "host"], datasets, dealers=["dealer"],
                                    limits={"rpc_timeout_s": 60.0})
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
